"""The series chart as inline SVG, drawn in Python: observations, past forecasts, the served path.

    render_chart(ChartData(ts, values, step, past, next_forecast, unit, path)) -> Markup

Observations are one ``path.obs`` (one M/L command per point, a new M after a
gap); past forecasts are ``circle.past`` points over their interval band; the
next forecast sits past the last observation in the shaded future with its
interval drawn as a whisker; the rest of the served path follows it as a fan
(``path.fanband``: each step's interval; ``path.fanline``: the values). Every
text drawn is escaped; the result is safe to put in a template as is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from api.dashboard.format import num
from api.dashboard.ticks import format_time_tick, format_value_tick, time_ticks, value_ticks

W, H = 1120, 380  # viewBox; the SVG scales to its container's width
ML, MR, MT, MB = 64, 150, 30, 40  # margins: y labels left, the next forecast's label right, x labels below
PX, PY = ML, MT
PW, PH = W - ML - MR, H - MT - MB


@dataclass(frozen=True)
class PastPoint:
    """A stored forecast whose target lies in the chart (actual may still be missing)."""

    target_ts: dt.datetime
    value: float
    lower: float | None
    upper: float | None
    actual: float | None
    by: str  # "v3", "naive", "seasonal naive"


@dataclass(frozen=True)
class ChartData:
    ts: Sequence[dt.datetime]  # observations, oldest first
    values: Sequence[float]
    step: dt.timedelta | None  # the series' step, to break the line at gaps (None: never)
    past: Sequence[PastPoint]
    next_forecast: PastPoint | None
    unit: str | None = None
    path: Sequence[PastPoint] = ()  # the served path, steps 1..h (step 1 is next_forecast)


def _f(x: float) -> str:
    return f"{x:.1f}"


class _Scale:
    def __init__(self, data: ChartData) -> None:
        times = list(data.ts) + [p.target_ts for p in data.past]
        nums = list(data.values)
        for p in [*data.past, *([data.next_forecast] if data.next_forecast else []), *data.path]:
            nums += [v for v in (p.value, p.lower, p.upper, p.actual) if v is not None]
        if data.next_forecast is not None:
            times.append(data.next_forecast.target_ts)
        times += [p.target_ts for p in data.path]
        self.t0, t1 = min(times), max(times)
        span = max((t1 - self.t0).total_seconds(), 1.0)
        self.span = span * 1.015  # a little air after the last point
        self.yticks, self.y0, self.y1 = value_ticks(min(nums), max(nums))
        self.ystep = self.yticks[1] - self.yticks[0] if len(self.yticks) > 1 else 1.0

    def x(self, t: dt.datetime) -> float:
        return PX + PW * (t - self.t0).total_seconds() / self.span

    def y(self, v: float) -> float:
        return PY + PH * (1 - (v / 2 - self.y0 / 2) / (self.y1 / 2 - self.y0 / 2))  # halves: no overflow near 1e308


def _grid(s: _Scale, data: ChartData) -> list[str]:
    out = ['<g class="grid">']
    for v in s.yticks:
        y = _f(s.y(v))
        out.append(f'<line x1="{PX}" x2="{PX + PW}" y1="{y}" y2="{y}"/>')
        label = escape(format_value_tick(v, s.ystep))
        out.append(f'<text class="ylab" x="{PX - 8}" y="{y}" dy="0.32em">{label}</text>')
    try:
        end = s.t0 + dt.timedelta(seconds=s.span)
    except OverflowError:  # data up to year 9999: the air after the last point does not fit
        end = dt.datetime.max.replace(tzinfo=dt.UTC)
    ticks, unit = time_ticks(s.t0, end)
    for t in ticks:
        x = _f(s.x(t))
        out.append(f'<line class="v" x1="{x}" x2="{x}" y1="{PY}" y2="{PY + PH}"/>')
        out.append(f'<text class="xlab" x="{x}" y="{PY + PH + 22}">{escape(format_time_tick(t, unit))}</text>')
    out.append(f'<line class="axis" x1="{PX}" x2="{PX + PW}" y1="{PY + PH}" y2="{PY + PH}"/>')
    if data.unit:
        out.append(f'<text class="unit" x="{PX - 8}" y="{PY - 16}">{escape(data.unit)}</text>')
    out.append("</g>")
    return out


def _runs(points: Sequence[PastPoint], step: dt.timedelta | None) -> list[list[PastPoint]]:
    """Consecutive targets with intervals, split where a step is missing."""
    runs: list[list[PastPoint]] = []
    for p in sorted((p for p in points if p.lower is not None and p.upper is not None), key=lambda p: p.target_ts):
        if runs and step is not None and p.target_ts - runs[-1][-1].target_ts <= step * 1.5:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def _band(s: _Scale, data: ChartData) -> list[str]:
    out = ['<g class="band">']
    for run in _runs(data.past, data.step):
        if len(run) == 1:
            p = run[0]
            assert p.lower is not None and p.upper is not None
            x = _f(s.x(p.target_ts))
            out.append(f'<line x1="{x}" x2="{x}" y1="{_f(s.y(p.upper))}" y2="{_f(s.y(p.lower))}"/>')
            continue
        top = [f"{_f(s.x(p.target_ts))},{_f(s.y(p.upper))}" for p in run if p.upper is not None]
        bottom = [f"{_f(s.x(p.target_ts))},{_f(s.y(p.lower))}" for p in reversed(run) if p.lower is not None]
        out.append(f'<path d="M{" L".join(top + bottom)} Z"/>')
    out.append("</g>")
    return out


def _observations(s: _Scale, data: ChartData) -> str:
    cmds, prev = [], None
    for t, v in zip(data.ts, data.values, strict=True):
        gap = prev is None or (data.step is not None and t - prev > data.step * 1.5)
        cmds.append(f"{'M' if gap else 'L'}{_f(s.x(t))},{_f(s.y(v))}")
        prev = t
    return f'<path class="obs" data-points="{len(cmds)}" d="{" ".join(cmds)}"/>'


def _tip(p: PastPoint, fmt: Callable[[float | None], str]) -> str:
    interval = f" [{fmt(p.lower)} – {fmt(p.upper)}]" if p.lower is not None and p.upper is not None else ""
    actual = f", actual {fmt(p.actual)}" if p.actual is not None else ", actual not in yet"
    return str(escape(f"{p.target_ts:%Y-%m-%d %H:%M} UTC: {p.by} said {fmt(p.value)}{interval}{actual}"))


def _past(s: _Scale, data: ChartData) -> list[str]:
    out = ['<g class="past">']
    for p in sorted(data.past, key=lambda p: p.target_ts):
        cls = "past miss" if (p.actual is not None and p.lower is not None and p.upper is not None
                              and not p.lower <= p.actual <= p.upper) else "past"
        out.append(f'<circle class="{cls}" cx="{_f(s.x(p.target_ts))}" cy="{_f(s.y(p.value))}" r="3">'
                   f"<title>{_tip(p, num)}</title></circle>")
    out.append("</g>")
    return out


def _fan(s: _Scale, data: ChartData) -> list[str]:
    """The served path after the next step: its band (every step's interval) and its line."""
    steps = sorted(data.path, key=lambda p: p.target_ts)
    if len(steps) < 2:
        return []
    out = [f'<g class="fan" data-steps="{len(steps)}">']
    banded = [p for p in steps if p.lower is not None and p.upper is not None]
    if len(banded) >= 2:
        top = [f"{_f(s.x(p.target_ts))},{_f(s.y(p.upper))}" for p in banded if p.upper is not None]
        bottom = [f"{_f(s.x(p.target_ts))},{_f(s.y(p.lower))}" for p in reversed(banded) if p.lower is not None]
        out.append(f'<path class="fanband" d="M{" L".join(top + bottom)} Z"/>')
    line = " L".join(f"{_f(s.x(p.target_ts))},{_f(s.y(p.value))}" for p in steps)
    out.append(f'<path class="fanline" d="M{line}"/>')
    for k, p in enumerate(steps[1:], start=2):
        out.append(f'<circle class="fanpt" cx="{_f(s.x(p.target_ts))}" cy="{_f(s.y(p.value))}" r="2">'
                   f"<title>step {k}: {_tip(p, num)}</title></circle>")
    out.append("</g>")
    return out


def _next(s: _Scale, data: ChartData) -> list[str]:
    p = data.next_forecast
    if p is None:
        return []
    x, y = s.x(p.target_ts), s.y(p.value)
    out = ['<g class="next">']
    if len(data.ts):
        out.append(f'<line class="link" x1="{_f(s.x(data.ts[-1]))}" y1="{_f(s.y(data.values[-1]))}" '
                   f'x2="{_f(x)}" y2="{_f(y)}"/>')
    if p.lower is not None and p.upper is not None:
        yl, yu = _f(s.y(p.lower)), _f(s.y(p.upper))
        out.append(f'<line class="whisker" x1="{_f(x)}" x2="{_f(x)}" y1="{yu}" y2="{yl}"/>')
        for yy in (yl, yu):
            out.append(f'<line class="whisker" x1="{_f(x - 6)}" x2="{_f(x + 6)}" y1="{yy}" y2="{yy}"/>')
    out.append(f'<circle class="nextpt" cx="{_f(x)}" cy="{_f(y)}" r="5.5"><title>{_tip(p, num)}</title></circle>')
    label = escape(num(p.value))
    out.append(f'<text class="nextval" x="{_f(x + 14)}" y="{_f(y)}" dy="0.32em">{label}</text>')
    if p.lower is not None and p.upper is not None:
        out.append(f'<text class="nextiv" x="{_f(x + 14)}" y="{_f(y + 17)}" dy="0.32em">'
                   f"{escape(num(p.lower))} – {escape(num(p.upper))}</text>")
    out.append("</g>")
    return out


def render_chart(data: ChartData, *, title: str = "Recent observations and forecasts") -> Markup:
    """The chart as an ``<svg>`` element (``Markup``: already escaped)."""
    if not len(data.ts):
        return Markup("")
    s = _Scale(data)
    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}" '
             f'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>"]
    last_x = s.x(data.ts[-1])
    if data.next_forecast is not None:
        parts.append(f'<rect class="future" x="{_f(last_x)}" y="{PY}" width="{_f(PX + PW - last_x)}" height="{PH}"/>')
    parts += _grid(s, data)
    parts += _band(s, data)
    parts.append(_observations(s, data))
    parts += _past(s, data)
    parts += _fan(s, data)
    parts += _next(s, data)
    parts.append("</svg>")
    return Markup("\n".join(parts))
