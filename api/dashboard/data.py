"""What the dashboard pages show, shaped from the figures the use case reads (forecaster/usecases/figures.py).

    series_rows(dashboard_table(...)) -> list[SeriesRow]                           the table on /
    series_page(series_figures(..., points=chart_points)) -> SeriesPage            /series/{key}
    training_notes(list_runs(..., kind="train")) -> list[TrainingNote]            "training: KEY (i of n)" on /

Each row also says what its colours mean (``tone``: good, warn, bad, or "" for
none), so the templates only paint what was decided here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from api.dashboard.chart import ChartData, PastPoint
from api.dashboard.format import method_name
from forecaster.usecases.accuracy import SeriesAccuracy, StepAccuracy
from forecaster.usecases.figures import DashboardTable, ForecastPoint, RunInfo, SeriesFigures
from forecaster.usecases.jobs import JobRunView
from forecaster.usecases.models import VersionView

DAILY_POINTS = 120
SUBDAILY_SPAN = pd.Timedelta(days=7)
MAX_POINTS = 2016  # a week of 5-minute steps


@dataclass(frozen=True)
class SeriesRow:
    key: str
    source: str
    frequency: str
    unit: str | None
    params: dict[str, Any]
    observation_count: int
    last_ts: dt.datetime | None
    champion_version: int | None
    serving: str  # v3 / naive / seasonal naive; "" before any forecast
    serving_tone: str
    holdout: dict[str, float | None]  # holdout MASE by method (model, naive, seasonal_naive); see _holdouts
    beats_baselines: bool  # the champion's holdout MASE is below naive's and seasonal naive's
    accuracy: SeriesAccuracy
    live_tone: str
    last_ingest: RunInfo | None
    last_train: RunInfo | None


@dataclass(frozen=True)
class SeriesPage:
    row: SeriesRow
    first_ts: dt.datetime | None
    chart: ChartData | None
    next_forecast: PastPoint | None
    next_made_at: dt.datetime | None
    level: float | None
    versions: list[VersionView]
    steps: int = 0  # steps of the served path
    by_step: list[StepAccuracy] = field(default_factory=list)  # what serves, live, at the steps shown


def shown_steps(steps: list[int]) -> list[int]:
    """The steps a by-step table shows: every one up to 6, then 1, 2, 3, 6, 12, 24, ... and the last."""
    if len(steps) <= 6:
        return steps
    picks, k = {1, 2, 3}, 6
    while k < steps[-1]:
        picks.add(k)
        k *= 2
    picks.add(steps[-1])
    return [x for x in steps if x in picks]


def series_rows(table: DashboardTable) -> list[SeriesRow]:
    """One row per series of the table on /, by key."""
    f = table.figures
    ids, holdouts, served, ingests, trains = f.ids, f.holdouts, f.served, f.ingests, f.trains
    out = []
    for s in table.summaries:
        holdout = holdouts.get(s.key, {})
        model = holdout.get("model")
        beats = model is not None and all(model < v for n, v in holdout.items() if n != "model" and v is not None)
        method = served.get(ids.get(s.key, -1))
        serving = method_name(method, s.champion_version) if (method or s.champion_version) else ""
        serving_tone = "" if not serving else ("good" if beats else "") if s.champion_version else "warn"
        acc = table.accuracy[s.key]
        live = acc.serving
        live_tone = ("bad" if acc.drifting else "good" if acc.champion_version is not None and live is not None
                     and live.mase is not None and live.mase < 1 and live.count >= acc.min_actuals else "")
        out.append(SeriesRow(
            key=s.key, source=s.source, frequency=s.frequency, unit=s.unit, params=s.params,
            observation_count=s.observation_count, last_ts=s.last_observation_ts,
            champion_version=s.champion_version, serving=serving, serving_tone=serving_tone, holdout=holdout,
            beats_baselines=beats, accuracy=acc, live_tone=live_tone,
            last_ingest=ingests.get(s.key), last_train=trains.get(s.key),
        ))
    return out


def chart_points(frequency: str) -> int:
    """Observations on the chart: about a week of sub-daily steps, else 120 points."""
    try:
        step = pd.Timedelta(pd.tseries.frequencies.to_offset(frequency))
    except (ValueError, TypeError):
        return DAILY_POINTS
    if step >= pd.Timedelta(days=1):
        return DAILY_POINTS
    return int(min(MAX_POINTS, max(2, SUBDAILY_SPAN // step)))


def _step(frequency: str) -> dt.timedelta:
    """The longest normal gap between two observations (a weekend for business days, 31 days for months)."""
    stamps = pd.date_range("2024-01-01", periods=32, freq=frequency, tz="UTC")
    longest: dt.timedelta = pd.Series(stamps).diff().max().to_pytimedelta()
    return longest


def series_page(figures: SeriesFigures) -> SeriesPage:
    """Everything /series/{key} shows, from its figures (``series_figures(..., points=chart_points)``)."""
    row = series_rows(figures.table)[0]
    if not figures.ts:
        return SeriesPage(row, None, None, None, None, None, figures.versions)
    by_id = {v.id: v.version for v in figures.versions}
    by_target: dict[dt.datetime, ForecastPoint] = {}
    for f in figures.forecasts:
        by_target[f.target_ts] = f  # the latest forecast of each target
    newest = max(by_target.values(), key=lambda f: f.id, default=None)
    last_obs = figures.ts[-1]

    def point(f: ForecastPoint) -> PastPoint:
        return PastPoint(f.target_ts, f.value, f.lower, f.upper, f.actual,
                         method_name(f.method, by_id.get(f.model_version_id) if f.model_version_id else None))

    past = [point(f) for t, f in by_target.items() if t <= last_obs]
    nxt = point(newest) if newest is not None and newest.target_ts > last_obs else None
    frequency = figures.table.summaries[0].frequency
    fan = [point(f) for f in figures.path] if nxt is not None else []
    chart = ChartData(figures.ts, figures.values, _step(frequency), past, nxt, figures.table.summaries[0].unit, fan)
    live = row.accuracy.serving
    by = {x.step: x for x in live.by_step} if live is not None else {}
    return SeriesPage(row, figures.first_ts, chart, nxt, newest.made_at if nxt and newest else None,
                      newest.level if nxt and newest else None, figures.versions, len(figures.path),
                      [by[k] for k in shown_steps(sorted(by))])


@dataclass(frozen=True)
class TrainingNote:
    """A series training now: which one, its place in its run, and the run."""

    key: str
    position: int  # 1-based, among the run's series
    total: int
    run_id: int


def training_notes(runs: Sequence[JobRunView]) -> list[TrainingNote]:
    """The series in hand of each train run still going (oldest run first)."""
    notes = []
    for run in reversed(runs):
        if run.status != "running":
            continue
        for i, key in enumerate((run.progress or {}).get("running") or []):
            notes.append(TrainingNote(key, run.series_done + run.series_failed + 1 + i, run.series_total, run.id))
    return notes
