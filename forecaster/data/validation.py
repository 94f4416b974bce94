"""Every observation that enters is checked against its series, by one set of rules.

    SeriesRules(series_key, frequency, calendar=None, anchor=None, future_tolerance_s=86400)
    check_rows(rows, rules, now=None)        # pushed rows, named "row N" (1 = first row sent): all or none
    screen_frame(frame, rules, now=None)     # a source's tidy frame: the good rows, the bad ones named by ts
    check_frame(frame, rules, now=None)      # a frame as one batch: the first bad row is raised

Rules (a broken one is named, with the row):

* representable: ``|value| <= MAX_ABS_VALUE``; the timestamp is not before
  ``MIN_TS`` (pandas and both databases hold it);
* not in the future: ``ts <= now + future_tolerance_s`` (config
  ``observations.future_tolerance_s``);
* on the series' calendar: fixed steps (``5min``, ``1h``, ``1D``) fall on the
  grid through ``anchor`` (the series' first stored observation; with none
  stored, midnight UTC, so an hourly series is on the hour); other steps are at
  midnight UTC on the offset's days (``1B`` Monday-Friday, or the trading days
  of ``calendar`` such as XNYS; ``1W`` Sundays; ``1MS`` the first of the month);
* pushed rows only: a value is a finite number (a source's missing or
  non-finite values are dropped and counted as rejected by ``tidy_frame``).

A push is atomic (one bad row refuses the batch and nothing is stored: the
client can fix it and resend); an upstream answer is screened row by row (one
bad upstream row must not stop the series for good: the good rows are stored,
the bad ones counted as rejected and named).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecaster.errors import InvalidInput

UTC = dt.UTC
MIN_TS = dt.datetime(1700, 1, 1, tzinfo=UTC)
MAX_ABS_VALUE = 1e15  # float64 holds integers exactly up to ~9e15; training scales stay finite
DEFAULT_FUTURE_TOLERANCE_S = 86_400.0
_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


@dataclass(frozen=True)
class SeriesRules:
    """What an observation of one series must satisfy.

    Attributes:
        series_key: names the series in messages.
        frequency: the series' pandas offset alias (``1h``, ``1B``, ``1MS``).
        calendar: exchange calendar of a ``1B`` series (``XNYS``), or None for plain weekdays.
        anchor: a timestamp on the series' grid (its first stored observation), or None.
        future_tolerance_s: how far past now a timestamp may lie.
    """

    series_key: str
    frequency: str
    calendar: str | None = None
    anchor: dt.datetime | None = None
    future_tolerance_s: float = DEFAULT_FUTURE_TOLERANCE_S


def _fmt_ts(ts: dt.datetime | pd.Timestamp) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").isoformat().replace("+00:00", "Z") if isinstance(ts, pd.Timestamp) \
        else ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _refuse(rules: SeriesRules, where: str, rule: str) -> InvalidInput:
    return InvalidInput(f"{rules.series_key}: {where}: {rule}; nothing was stored")


def _value_problem(value: float) -> str | None:
    if math.isfinite(value) and abs(value) > MAX_ABS_VALUE:
        return f"value {value:g} is outside the representable range ±{MAX_ABS_VALUE:g}"
    return None


def _not_a_number(value: float | None) -> str:
    """Why a pushed row without a finite value is refused: dropping it would hide what the client sent."""
    return "the value is missing" if value is None else f"value {value} is not a finite number"


def _range_problem(ts: dt.datetime, latest: dt.datetime, rules: SeriesRules) -> str | None:
    if ts < MIN_TS:
        return f"ts {_fmt_ts(ts)} is before {MIN_TS.date()} (the earliest time stored)"
    if ts > latest:
        return (f"ts {_fmt_ts(ts)} is in the future (more than {rules.future_tolerance_s:g} s after now, "
                f"{_fmt_ts((latest - dt.timedelta(seconds=rules.future_tolerance_s)).replace(microsecond=0))}; "
                "setting: observations.future_tolerance_s)")
    return None


def _now(now: dt.datetime | None) -> dt.datetime:
    return (now or dt.datetime.now(UTC)).astimezone(UTC)


def check_rows(rows: Sequence[tuple[dt.datetime, float | None]], rules: SeriesRules,
               now: dt.datetime | None = None) -> None:
    """Check pushed rows in the order sent; the first broken rule is raised naming its row.

    Raises:
        InvalidInput: ``"<key>: row N (ts=..., value=...): <rule>; nothing was stored"``.
    """
    latest = _now(now) + dt.timedelta(seconds=rules.future_tolerance_s)
    for i, (ts, value) in enumerate(rows, start=1):
        try:
            utc = ts.astimezone(UTC)
        except OverflowError:  # 9999-12-31T23:00-05:00 is past year 9999 in UTC
            raise _refuse(rules, f"row {i} (ts={ts.isoformat()}, value={value})",
                          "ts is outside the representable range of times") from None
        if value is None or not math.isfinite(value):
            problem: str | None = _not_a_number(value)
        else:
            problem = _value_problem(float(value)) or _range_problem(utc, latest, rules)
        if problem:
            raise _refuse(rules, f"row {i} (ts={_fmt_ts(utc)}, value={value})", problem)
    if rows:
        stamps = pd.DatetimeIndex([t.astimezone(UTC).replace(tzinfo=None) for t, _ in rows]).tz_localize("UTC")
        bad = off_calendar(stamps, rules)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            ts, value = rows[i]
            raise _refuse(rules, f"row {i + 1} (ts={_fmt_ts(ts)}, value={value})", calendar_rule(rules))


@dataclass(frozen=True)
class ScreenedFrame:
    """A source's frame split by the rules: the rows that pass, and how many did not, with the first few named.

    Attributes:
        frame: the rows that meet every rule, in their order.
        rejected: how many rows broke a rule.
        named: ``"ts=...: <rule>"`` for the first ``MAX_NAMED`` rejected rows.
    """

    frame: pd.DataFrame
    rejected: int = 0
    named: tuple[str, ...] = ()


MAX_NAMED = 3  # rejected rows named in a run's note; the rest are counted


def screen_frame(frame: pd.DataFrame, rules: SeriesRules, now: dt.datetime | None = None,
                 what: str = "row") -> ScreenedFrame:
    """Check a source's tidy frame (``ts`` UTC, ``value``) row by row: one bad upstream row must not stop
    the series, so the rows that break a rule are set aside and named by their timestamp."""
    if frame.empty:
        return ScreenedFrame(frame)
    ts = pd.DatetimeIndex(frame["ts"])
    values = frame["value"].to_numpy(dtype="float64")
    latest = _now(now) + dt.timedelta(seconds=rules.future_tolerance_s)
    bad_value = np.isfinite(values) & (np.abs(np.where(np.isfinite(values), values, 0.0)) > MAX_ABS_VALUE)
    bad_range = bad_value | np.asarray((ts < pd.Timestamp(MIN_TS)) | (ts > pd.Timestamp(latest)))
    bad = bad_range.copy()
    bad[~bad_range] = off_calendar(ts[~bad_range], rules)  # times out of range may not fit the grid's arithmetic
    named = []
    for i in np.flatnonzero(bad)[:MAX_NAMED]:
        t = ts[i].to_pydatetime()
        if bad_value[i]:
            problem = _value_problem(float(values[i]))
        elif bad_range[i]:
            problem = _range_problem(t, latest, rules)
        else:
            problem = calendar_rule(rules)
        named.append(f"{what} ts={_fmt_ts(t)} (value={values[i]:g}): {problem or 'is out of range'}")
    return ScreenedFrame(frame[~bad].reset_index(drop=True), int(bad.sum()), tuple(named))


def check_frame(frame: pd.DataFrame, rules: SeriesRules, now: dt.datetime | None = None,
                what: str = "row") -> None:
    """Check a source's tidy frame as one batch; the first bad row is raised, named by its timestamp.

    Raises:
        InvalidInput: ``"<key>: row ts=...: <rule>; nothing was stored"``.
    """
    screened = screen_frame(frame, rules, now, what)
    if screened.named:
        raise InvalidInput(f"{rules.series_key}: {screened.named[0]}; nothing was stored")


def _offset(frequency: str) -> pd.DateOffset:
    return pd.tseries.frequencies.to_offset(frequency)


def _fixed_step(offset: pd.DateOffset) -> pd.Timedelta | None:
    """The step of a fixed-length frequency (5min, 1h, 1D), or None (1B, 1W, 1MS)."""
    if isinstance(offset, pd.offsets.Tick):
        return pd.Timedelta(offset)
    if offset.rule_code == "D":  # a calendar day in pandas 3; UTC has no DST, so 24 h here
        return pd.Timedelta(days=offset.n)
    return None


def calendar_rule(rules: SeriesRules) -> str:
    """The calendar rule of a series, in words (for messages)."""
    offset = _offset(rules.frequency)
    step = _fixed_step(offset)
    if step is not None:
        anchor = pd.Timestamp(rules.anchor) if rules.anchor is not None else _EPOCH
        if not _off_grid(pd.DatetimeIndex([anchor]), _EPOCH, step)[0]:
            grid = {pd.Timedelta(hours=1): "on the hour (UTC)", pd.Timedelta(days=1): "at midnight UTC"}.get(
                step, f"on the {rules.frequency} grid from midnight UTC")
        else:
            grid = f"on the {rules.frequency} grid through the series' first observation {_fmt_ts(anchor)}"
        return f"is off the series' calendar: a {rules.frequency} series takes timestamps {grid}"
    if offset.rule_code == "B" and rules.calendar:
        return (f"is off the series' calendar: {rules.frequency} follows the {rules.calendar} trading days "
                "(at midnight UTC); that day is not one")
    return (f"is off the series' calendar: {rules.frequency} takes midnight UTC on its days only "
            f"({_days_in_words(offset)})")


def _days_in_words(offset: pd.DateOffset) -> str:
    code = offset.rule_code
    if code == "B":
        return "Monday to Friday"
    if code.startswith("W"):
        return f"weekday {code.partition('-')[2] or 'SUN'}"
    if code == "MS":
        return "the first of the month"
    if code in ("ME", "M"):
        return "the last day of the month"
    return f"days on the {offset.freqstr} offset"


def _off_grid(ts: pd.DatetimeIndex, anchor: pd.Timestamp, step: pd.Timedelta) -> np.ndarray:
    """True where ``ts`` is not a whole number of ``step`` from ``anchor``.

    Each side's remainder modulo the step is taken from the Unix epoch: a difference
    of two timestamps over 292 years apart (1700 and 2024) would overflow int64 ns.
    """
    step_ns = step.value
    phase = anchor.as_unit("ns").value % step_ns
    return np.asarray(ts.as_unit("ns").asi8 % step_ns != phase)


def off_calendar(ts: pd.DatetimeIndex, rules: SeriesRules) -> np.ndarray:
    """True where ``ts`` (aware UTC) is not on the series' calendar."""
    offset = _offset(rules.frequency)
    fixed = _fixed_step(offset)
    if fixed is not None:
        anchor = pd.Timestamp(rules.anchor) if rules.anchor is not None else _EPOCH
        return _off_grid(ts, anchor, fixed)
    midnight = np.asarray(ts != ts.normalize())
    if offset.rule_code == "B" and rules.calendar:
        from forecaster.calendar.trading import is_session

        closed: np.ndarray = midnight | ~is_session(rules.calendar, ts)
        return closed
    on = np.fromiter((offset.is_on_offset(t) for t in ts.tz_localize(None)), dtype=bool, count=len(ts))
    off: np.ndarray = midnight | ~on
    return off
