"""Series frequencies: pandas offset aliases, checked, and the season each implies.

    check_frequency(freq) -> str        # ``freq`` if pandas knows it, else ValueError with examples
    season_length(freq) -> int | None   # steps per natural season (a day, a week, a year)
    default_horizon(freq) -> int        # steps a forecast path covers when a series does not say
"""

from __future__ import annotations

import warnings

import pandas as pd

FREQUENCY_EXAMPLES = "'5min', '30min', '1h', '1D', '1B', '1W', '1MS'"


def check_frequency(freq: str) -> str:
    """Return ``freq`` if pandas knows it as an offset alias, else raise ValueError."""
    try:
        with warnings.catch_warnings():  # a deprecated alias ('5 mins', 'H') is refused, as pandas 3 does
            warnings.simplefilter("error", FutureWarning)
            offset = pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError, FutureWarning):
        raise ValueError(f"is not a frequency (examples: {FREQUENCY_EXAMPLES})") from None
    if offset is None or getattr(offset, "n", 1) <= 0:
        raise ValueError(f"is not a frequency (examples: {FREQUENCY_EXAMPLES})")
    return freq


def season_length(freq: str) -> int | None:
    """Steps per natural season of a frequency: a day for sub-daily, a week for
    daily, a year for weekly and monthly. None when no season applies."""
    offset = pd.tseries.frequencies.to_offset(freq)
    name = offset.rule_code.upper()
    n = offset.n
    if name in ("B", "C"):
        return 5 if n == 1 else None
    if name == "D":
        return 7 if n == 1 else None
    if name.startswith("W"):
        return 52 if n == 1 else None
    if name in ("MS", "ME", "M"):
        return 12 if n == 1 else None
    try:
        step = pd.Timedelta(offset)
    except (ValueError, TypeError):
        return None
    day = pd.Timedelta(days=1)
    if step < day and (day / step).is_integer() and day / step > 1:
        return int(day / step)
    return None


MAX_HORIZON = 1000  # steps a series may ask for (``horizon`` in its config)


def default_horizon(freq: str) -> int:
    """Steps of a forecast path by default: one day of sub-daily steps (at most 288), 7 daily,
    5 business days, 13 weeks, 12 months, 8 quarters; 7 other fixed steps of a day or more, 3 other
    calendar steps (years)."""
    offset = pd.tseries.frequencies.to_offset(freq)
    name = offset.rule_code.upper()
    if name in ("B", "C"):
        return 5
    if name.startswith("W"):
        return 13
    if name in ("MS", "ME", "M", "SMS", "SME", "BMS", "BME"):
        return 12
    if name.startswith(("QS", "QE", "Q", "BQ")):
        return 8
    try:
        step = pd.Timedelta(offset)
    except (ValueError, TypeError):
        return 3
    day = pd.Timedelta(days=1)
    if step < day:
        return max(1, min(288, int(day // step)))
    return 7
