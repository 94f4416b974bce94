"""The dashboard's HTML: Jinja2 templates (autoescaped: every key, unit and reason is escaped)
filled from ``api.dashboard.data``.

    index_html(rows, settings) / series_html(page) / not_found_html(detail)
"""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup, escape

from api.dashboard.chart import render_chart
from api.dashboard.data import SeriesPage, SeriesRow, TrainingNote, chart_points
from api.dashboard.format import FILTERS, mase, method_name
from forecaster import __version__
from forecaster.config.settings import Settings
from forecaster.usecases.models import start_label

TEMPLATES = Path(__file__).parent / "templates"


def _block_mase(metrics: dict[str, Any], name: str) -> str:
    block = metrics.get(name) or {}
    return mase(block.get("mase"))


def _interval_coverage(metrics: dict[str, Any], status: str) -> float | None:
    """The holdout coverage of the interval the version serves.

    None for a rejected version: its interval serves no one.
    """
    if status == "rejected":
        return None
    value = (metrics.get("served_interval") or metrics.get("interval") or {}).get("coverage")
    return None if value is None else float(value)


def _served(metrics: dict[str, Any]) -> str:
    """What a version serves: "recurrent model", "AutoETS", "mean of recurrent model + AutoARIMA"."""
    return str((metrics.get("served") or {}).get("label") or "recurrent model")


def _served_mase(metrics: dict[str, Any]) -> str:
    return mase((metrics.get("served") or metrics.get("model") or {}).get("mase"))


def _served_step1(metrics: dict[str, Any]) -> str:
    """The served holdout MASE at step 1 of the paths ('' for one-step versions: it is the mean)."""
    steps = (metrics.get("served") or metrics.get("model") or {}).get("mase_steps") or []
    return mase(steps[0]) if len(steps) > 1 else ""


COVERAGE_TOLERANCE = 0.05  # live coverage further than this from the stated level is flagged


def _coverage_flag(acc: Any, level: float | None) -> str:
    """"covers 71% (stated 90%)" when the serving forecaster's live interval coverage over at
    least ``min_actuals`` actuals is off its stated level by more than 5 points, else ""."""
    live = acc.serving
    if live is None or live.coverage is None or live.count < acc.min_actuals:
        return ""
    stated = level or 0.9
    if abs(live.coverage - stated) <= COVERAGE_TOLERANCE:
        return ""
    return f"interval covers {100 * live.coverage:.0f}% (stated {100 * stated:.0f}%)"


def _beats_baselines(metrics: dict[str, Any]) -> bool:
    model = (metrics.get("model") or {}).get("mase")
    rivals = [(metrics.get(n) or {}).get("mase") for n in ("naive", "seasonal_naive")]
    return model is not None and all(model < r for r in rivals if r is not None)


def _breakable(key: str) -> Markup:
    """The escaped key with line-break opportunities after ``:`` and ``,`` (never inside a word)."""
    return Markup(str(escape(key)).replace(":", ":<wbr>").replace(",", ",<wbr>"))


@functools.cache
def environment() -> jinja2.Environment:
    """The template environment (built on first use; nothing at import time)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(FILTERS)
    env.filters.update(
        urlkey=lambda key: quote(key, safe=""),
        thousands=lambda n: f"{n:,}",
        breakable=_breakable,
        forecaster=method_name,
        block_mase=_block_mase,
        interval_coverage=_interval_coverage,
        served=_served,
        served_mase=_served_mase,
        served_step1=_served_step1,
        start=start_label,
        coverage_flag=_coverage_flag,
    )
    env.globals.update(version=__version__, subtitle="dashboard")
    return env


def _render(name: str, **context: Any) -> str:
    return environment().get_template(name).render(now=dt.datetime.now(dt.UTC), **context)


def index_html(rows: list[SeriesRow], settings: Settings, training: list[TrainingNote] | None = None) -> str:
    """The series table with its summary tiles (and the series training now, if any)."""
    m = settings.monitoring
    return _render(
        "index.html", rows=rows, window=m.accuracy_window, min_actuals=m.drift_min_actuals, training=training or [],
        with_data=sum(r.observation_count > 0 for r in rows),
        by_model=sum(r.champion_version is not None for r in rows),
        beating=sum(r.beats_baselines for r in rows),
        by_baseline=sum(r.champion_version is None and bool(r.serving) for r in rows),
        drifting=sum(r.accuracy.drifting for r in rows),
        miscalibrated=sum(bool(_coverage_flag(r.accuracy, None)) for r in rows),
    )


def span_label(frequency: str, ts: list[dt.datetime]) -> str:
    """``Last 7 days`` / ``Last 120 points`` / ``All 40 points``, as the chart title."""
    wanted = chart_points(frequency)
    if len(ts) < wanted:
        return f"All {len(ts)} observations"
    days = (ts[-1] - ts[0]).total_seconds() / 86400
    return f"Last {round(days)} days" if wanted != 120 and days >= 2 else f"Last {len(ts)} observations"


def series_html(page: SeriesPage) -> str:
    """One series: tiles, chart, live accuracy, version history (no request header reaches the page)."""
    chart = page.chart
    return _render(
        "series.html", r=page.row, page=page,
        chart_svg=render_chart(chart) if chart else "",
        span_label=span_label(page.row.frequency, list(chart.ts)) if chart else "",
        beating={v.version for v in page.versions if _beats_baselines(v.metrics or {})},
    )


def not_found_html(detail: str) -> str:
    """The 404 page for an unknown series key."""
    return _render("not_found.html", detail=detail)
