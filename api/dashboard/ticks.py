"""Axis ticks a person can read: round values, and times on calendar boundaries (UTC).

Pure functions of numbers and datetimes; no plotting, no database.
"""

from __future__ import annotations

import datetime as dt
import math

UTC = dt.UTC
_H = 3600
_D = 86400
# (seconds, label) candidates; months and years are calendar steps, the rest fixed.
_TIME_STEPS: tuple[tuple[str, int], ...] = (
    ("s", 60), ("s", 300), ("s", 900), ("s", 1800), ("s", _H), ("s", 2 * _H), ("s", 3 * _H), ("s", 6 * _H),
    ("s", 12 * _H), ("s", _D), ("s", 2 * _D), ("w", 7 * _D), ("w", 14 * _D), ("m", 1), ("m", 2), ("m", 3),
    ("m", 6), ("y", 1), ("y", 2), ("y", 5), ("y", 10), ("y", 25), ("y", 50), ("y", 100),
)
_MONDAY = dt.datetime(1970, 1, 5, tzinfo=UTC)  # weekly ticks fall on Mondays


def nice_step(span: float, target: int = 5) -> float:
    """A step of 1, 2, 2.5 or 5 times a power of ten giving about ``target`` intervals over ``span``."""
    if not span > 0 or not math.isfinite(span):
        return 1.0
    raw = span / target
    power = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= m * power:
            return m * power
    return 10.0 * power


def value_ticks(lo: float, hi: float, target: int = 5) -> tuple[list[float], float, float]:
    """Round tick values covering [lo, hi]; returns (ticks, axis_lo, axis_hi) with the axis widened to them."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi - lo < 1e-12:
        pad = abs(lo) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    step = nice_step(hi - lo, target)
    start, stop = math.floor(lo / step) * step, math.ceil(hi / step) * step
    if not math.isfinite(stop - start):  # e.g. -1e308 .. 1e308: the span is past the largest float
        return [lo, hi], lo, hi
    n = int(round((stop - start) / step))
    ticks = [round(start + i * step, 12) for i in range(n + 1)]
    return ticks, start, stop


def format_value_tick(v: float, step: float) -> str:
    """A tick label with as many decimals as the step needs (``2.5`` steps get one)."""
    usable = 0 < step < math.inf  # a span past the largest float has no decimal step
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if usable else 0
    if usable and not math.isclose(round(step, decimals), step, rel_tol=1e-9):
        decimals += 1
    text = f"{v:,.{decimals}f}"
    return text.lstrip("-") if text.strip("-0.,") == "" else text  # no "-0.0"


def _add_months(t: dt.datetime, months: int) -> dt.datetime:
    total = t.year * 12 + (t.month - 1) + months
    return t.replace(year=total // 12, month=total % 12 + 1, day=1)


def _first_tick(lo: dt.datetime, kind: str, n: int) -> dt.datetime:
    if kind == "s":
        epoch = int(lo.timestamp())
        return dt.datetime.fromtimestamp(-(-epoch // n) * n, UTC)  # ceil to a multiple of the step
    if kind == "w":
        weeks = math.ceil((lo - _MONDAY).total_seconds() / n)
        return _MONDAY + dt.timedelta(seconds=weeks * n)
    start = lo.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if kind == "m":
        start = start if start == lo else _add_months(start, 1)
        while (start.month - 1) % n:
            start = _add_months(start, 1)
        return start
    year = start.replace(month=1)
    year = year if year == lo else year.replace(year=year.year + 1)
    return year.replace(year=-(-year.year // n) * n)


def _advance(t: dt.datetime, kind: str, n: int) -> dt.datetime:
    if kind in ("s", "w"):
        return t + dt.timedelta(seconds=n)
    return _add_months(t, n) if kind == "m" else t.replace(year=t.year + n)


def time_ticks(lo: dt.datetime, hi: dt.datetime, max_ticks: int = 8) -> tuple[list[dt.datetime], str]:
    """Ticks on calendar boundaries between ``lo`` and ``hi`` (aware); returns (ticks, unit of the step).

    The unit (``minute``, ``hour``, ``day``, ``month``, ``year``) tells ``format_time_tick`` what to show.
    """
    lo, hi = lo.astimezone(UTC), hi.astimezone(UTC)
    span = max((hi - lo).total_seconds(), 1.0)
    for kind, n in _TIME_STEPS:
        approx = {"s": n, "w": n, "m": n * 30.44 * _D, "y": n * 365.25 * _D}[kind]
        if span / approx <= max_ticks:
            break
    ticks: list[dt.datetime] = []
    try:  # a tick past year 9999 cannot exist: the axis ends at the last one that can
        t = _first_tick(lo, kind, n)
        while t <= hi:
            ticks.append(t)
            t = _advance(t, kind, n)
    except (ValueError, OverflowError):
        pass
    if kind == "s":
        unit = "minute" if n < _H else "hour" if n < _D else "day"
    else:
        unit = "day" if kind == "w" else "month" if kind == "m" else "year"
    return ticks, unit


def format_time_tick(t: dt.datetime, unit: str) -> str:
    """``09:30`` / ``Mar 4`` (a midnight among hour ticks) / ``Mar 4`` / ``Mar 2024`` / ``2024``."""
    if unit in ("minute", "hour"):
        return f"{t:%b} {t.day}" if (t.hour, t.minute) == (0, 0) else f"{t:%H:%M}"
    if unit == "day":
        return f"{t:%b} {t.day}"
    if unit == "month":
        return f"{t:%b %Y}"
    return f"{t:%Y}"
