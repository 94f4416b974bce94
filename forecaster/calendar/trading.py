"""Exchange calendars for trading-day (``1B``) series, through ``exchange_calendars``.

    check_exchange(name) -> str               # a known ISO 10383 MIC such as 'XNYS', or ValueError
    default_calendar(source, frequency)       # 'XNYS' for 1B yfinance series, else None
    is_session(name, days) -> bool array      # trading days of the exchange
    next_session(name, day) -> pd.Timestamp   # the first trading day after ``day``

``exchange_calendars`` costs about a second to import and a little more to build
one calendar, so it is imported here lazily (never on the API's GET path) and
each calendar is built once per process. Days outside the calendar's range
(before 1970, or more than two years ahead) fall back to plain weekdays.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
import warnings
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_EXCHANGE = "XNYS"
FIRST_DAY = "1970-01-02"
_lock = threading.Lock()


def _xcals() -> Any:
    import exchange_calendars  # about a second: only where a trading-day series needs it

    return exchange_calendars


@functools.cache
def known_exchanges() -> tuple[str, ...]:
    """Every calendar name exchange_calendars knows (MICs and aliases such as 'NYSE')."""
    return tuple(sorted(_xcals().get_calendar_names(include_aliases=True)))


def check_exchange(name: str) -> str:
    """Return ``name`` (upper-cased) when it names an exchange calendar.

    Raises:
        ValueError: naming a few of the known calendars.
    """
    upper = name.strip().upper()
    if upper not in known_exchanges():
        common = ("XNYS", "XNAS", "XLON", "XFRA", "XETR", "XTKS", "XHKG")
        examples = ", ".join(n for n in common if n in known_exchanges())
        raise ValueError(f"is not an exchange calendar (examples: {examples}; "
                         "the full list is exchange_calendars.get_calendar_names())")
    return upper


def default_calendar(source: str, frequency: str) -> str | None:
    """The calendar a series follows when its config names none: XNYS for daily yfinance bars."""
    if source != "yfinance":
        return None
    offset = pd.tseries.frequencies.to_offset(frequency)
    return DEFAULT_EXCHANGE if offset.rule_code == "B" and offset.n == 1 else None


def _calendar(name: str) -> Any:
    with _lock:
        return _build(name, dt.date.today().year)


@functools.cache
def _build(name: str, year: int) -> Any:
    xcals = _xcals()
    with warnings.catch_warnings():
        # exchange_calendars trips pandas' deprecation warnings; they are its business, not a user's
        warnings.simplefilter("ignore")
        try:
            return xcals.get_calendar(name, start=FIRST_DAY, end=f"{year + 2}-12-31")
        except ValueError:  # a calendar that starts later than FIRST_DAY: its own range
            return xcals.get_calendar(name)


def is_session(name: str, days: pd.DatetimeIndex) -> np.ndarray:
    """True where ``days`` (midnight, naive or UTC) are trading days of ``name``.

    Days outside the calendar's range count as sessions when they are weekdays.
    """
    cal = _calendar(name)
    naive = days.tz_localize(None) if days.tz is not None else days
    naive = naive.normalize()
    sessions = cal.sessions
    inside = (naive >= sessions[0]) & (naive <= sessions[-1])
    out = naive.day_of_week < 5
    out = np.where(inside, naive.isin(sessions), out)
    return np.asarray(out, dtype=bool)


def next_session(name: str, day: pd.Timestamp) -> pd.Timestamp:
    """The first trading day of ``name`` after ``day`` (a date at midnight), as midnight UTC."""
    cal = _calendar(name)
    naive = (day.tz_convert("UTC").tz_localize(None) if day.tz is not None else day).normalize()
    sessions = cal.sessions
    if sessions[0] <= naive < sessions[-1]:
        after = sessions[sessions.searchsorted(naive, side="right")]
    else:
        after = naive + pd.offsets.BDay(1)
    return pd.Timestamp(after).tz_localize("UTC")
