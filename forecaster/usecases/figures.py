"""The dashboard's and the metrics' figures, read from the database (never torch).

    dashboard_table(session, settings) -> DashboardTable              the table on /
    series_figures(session, settings, key, points) -> SeriesFigures   /series/{key}
    metrics_figures(session) -> MetricsFigures                        the database gauges of GET /metrics
    candidate_label(method) -> str                                    a candidate's name for people

Plain frozen data only; the colours (``tone``) of a run's outcome are decided
here with the outcome, the rest of the presentation in api/dashboard/.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, load_only

from forecaster.config.settings import Settings
from forecaster.modelling.candidates import LABELS  # names only: statsforecast is not imported
from forecaster.store import forecasts, observations, registry
from forecaster.store.registry import VersionView, list_versions
from forecaster.store.series import find_series, ids_by_key, series_by_keys
from forecaster.store.tables import Forecast, IngestRun, JobRun, ModelVersion
from forecaster.usecases import catalog
from forecaster.usecases.accuracy import SeriesAccuracy, all_accuracy, series_accuracy

TRAIN_RUNS_SCANNED = 100  # recent train job runs searched for each series' last outcome


@dataclass(frozen=True)
class RunInfo:
    """The last ingest or train of a series: its outcome, when, and what it said."""

    status: str
    at: dt.datetime | None
    detail: str | None
    tone: str


INGEST_TONE = {"ok": "good", "snapshot": "warn", "unavailable": "warn", "failed": "bad"}
TRAIN_TONE = {"promoted": "good", "skipped": "warn", "failed": "bad"}


def mase_of(metrics: dict[str, Any] | None, name: str) -> float | None:
    block = (metrics or {}).get(name) or {}
    value = block.get("mase")
    return None if value is None else float(value)


def _last_ingests(session: Session, keys: list[str]) -> dict[str, RunInfo]:
    newest = select(func.max(IngestRun.id)).where(IngestRun.series_key.in_(keys)).group_by(IngestRun.series_key)
    runs = session.scalars(select(IngestRun).where(IngestRun.id.in_(newest)))
    return {r.series_key: RunInfo(r.status, r.finished_at or r.started_at,
                                  r.error or f"{r.rows_new} new, {r.rows_updated} updated",
                                  INGEST_TONE.get(r.status, ""))
            for r in runs}


def _last_trains(session: Session, ids: dict[str, int]) -> dict[str, RunInfo]:
    """From train job runs (they record skips and failures too) and from the newest version of each series."""
    out: dict[str, RunInfo] = {}
    for run in session.scalars(select(JobRun).where(JobRun.kind == "train").order_by(JobRun.id.desc())
                               .limit(TRAIN_RUNS_SCANNED)):
        progress = run.progress or {}
        if run.status == "running":  # several series at once on workers ("running"), one in process ("current")
            for key in progress.get("running") or [progress.get("current")]:
                if key in ids:
                    out.setdefault(key, RunInfo("running", run.started_at, None, ""))
        for result in progress.get("results", []):
            status = str(result.get("status"))
            out.setdefault(str(result.get("series")), RunInfo(status, run.finished_at or run.started_at,
                                                              result.get("detail"), TRAIN_TONE.get(status, "")))
    key_of = {i: k for k, i in ids.items()}
    for mv in session.scalars(registry.newest_versions(ids.values())):
        key = key_of[mv.series_id]
        seen = out.get(key)
        if seen is None or seen.at is None or seen.at < mv.created_at:  # trained outside a job run (CLI, tests)
            status = "rejected" if mv.status == "rejected" else "promoted" if mv.status != "candidate" else "trained"
            out[key] = RunInfo(status, mv.created_at, f"v{mv.version}: {mv.status_reason or ''}".rstrip(": "),
                               TRAIN_TONE.get(status, ""))
    return out


def _holdouts(session: Session, ids: dict[str, int],
              summaries: list[catalog.SeriesSummary]) -> dict[str, dict[str, float | None]]:
    """Holdout MASE of the champion and its baselines; with no champion, the baselines' MASE on
    the newest version's holdout (its model left out: it does not serve)."""
    champions = {s.champion_model_version_id for s in summaries if s.champion_model_version_id}
    small = load_only(ModelVersion.id, ModelVersion.series_id, ModelVersion.metrics)
    champion_metrics = {mv.series_id: mv.metrics for mv in registry.versions_by_id(session, champions, small)}
    newest_metrics = {mv.series_id: mv.metrics
                      for mv in session.scalars(registry.newest_versions(ids.values()).options(small))}
    out: dict[str, dict[str, float | None]] = {}
    for s in summaries:
        sid = ids.get(s.key, -1)
        m = champion_metrics.get(sid) if s.champion_model_version_id else newest_metrics.get(sid)
        out[s.key] = {n: mase_of(m, n) for n in ("model", "naive", "seasonal_naive")}
        if not s.champion_model_version_id:
            out[s.key]["model"] = None
    return out



@dataclass(frozen=True)
class TableFigures:
    """Everything the table on / reads from the database, by series key."""

    ids: dict[str, int]  # stored series' ids
    holdouts: dict[str, dict[str, float | None]]  # holdout MASE by method (model, naive, seasonal_naive)
    served: dict[int, str]  # series id -> method of its newest stored forecast
    ingests: dict[str, RunInfo]
    trains: dict[str, RunInfo]


def figures(session: Session, summaries: list[catalog.SeriesSummary]) -> TableFigures:
    """The figures of the dashboard table for ``summaries`` (one read transaction, no writes)."""
    keys = [s.key for s in summaries]
    ids = ids_by_key(session, keys)
    served = forecasts.latest_methods(session, list(ids.values()))
    return TableFigures(ids, _holdouts(session, ids, summaries), served, _last_ingests(session, keys),
                        _last_trains(session, ids))


@dataclass(frozen=True)
class DashboardTable:
    """What the table on / shows: each series' summary and live accuracy, and the table's figures."""

    summaries: list[catalog.SeriesSummary]
    accuracy: dict[str, SeriesAccuracy]  # every summary's key; "no forecasts yet" where none was scored
    figures: TableFigures


def _empty_accuracy(key: str, settings: Settings) -> SeriesAccuracy:
    m = settings.monitoring
    return SeriesAccuracy(key, m.accuracy_window, m.drift_min_actuals, [], None, None, False, "no forecasts yet")


def dashboard_table(session: Session, settings: Settings) -> DashboardTable:
    """The table on /: one row per series (stored or configured), by key."""
    m = settings.monitoring
    accuracy = all_accuracy(session, window=m.accuracy_window, min_actuals=m.drift_min_actuals)
    summaries = catalog.list_series(session, settings)
    return DashboardTable(summaries, {s.key: accuracy.get(s.key) or _empty_accuracy(s.key, settings)
                                      for s in summaries}, figures(session, summaries))


@dataclass(frozen=True)
class ForecastPoint:
    """One stored forecast as the chart of /series/{key} draws it."""

    id: int
    target_ts: dt.datetime
    made_at: dt.datetime
    value: float
    lower: float | None
    upper: float | None
    level: float | None
    actual: float | None
    method: str
    model_version_id: int | None


@dataclass(frozen=True)
class SeriesFigures:
    """What /series/{key} shows: its table row's figures, versions, recent observations and forecasts."""

    table: DashboardTable  # this series alone
    versions: list[VersionView]
    ts: list[dt.datetime]  # the recent observations charted, oldest first (empty: nothing stored)
    values: list[float]
    forecasts: list[ForecastPoint]  # stored step-1 forecasts targeting the charted range or later, oldest first
    first_ts: dt.datetime | None  # the oldest stored observation
    path: list[ForecastPoint] = field(default_factory=list)  # the served path, steps 1..h (empty: none stored)


def series_figures(session: Session, settings: Settings, key: str, points: Callable[[str], int]) -> SeriesFigures:
    """The figures of /series/{key}, charting the last ``points(frequency)`` observations.

    Raises:
        SeriesNotFound: neither stored nor configured, naming the key.
    """
    summary = catalog.series_summary(session, settings, key)
    series = find_series(session, key)
    m = settings.monitoring
    acc = (series_accuracy(session, series_key=key, window=m.accuracy_window, min_actuals=m.drift_min_actuals)
           if series is not None else _empty_accuracy(key, settings))
    table = DashboardTable([summary], {key: acc}, figures(session, [summary]))
    versions = [] if series is None else list_versions(session, series_key=key)
    if series is None or summary.observation_count == 0:
        return SeriesFigures(table, versions, [], [], [], None)
    ts, values = observations.load_values(session, series.id, tail=points(series.frequency))
    stamps = [t.to_pydatetime() for t in ts]
    def point(f: Forecast) -> ForecastPoint:
        return ForecastPoint(f.id, f.target_ts, f.made_at, f.value, f.lower, f.upper, f.level, f.actual, f.method,
                             f.model_version_id)

    shown = [point(f) for f in forecasts.since(session, series.id, stamps[0])]
    served = forecasts.latest(session, series.id)
    path = [point(f) for f in forecasts.path_rows(session, served)] if served is not None else []
    return SeriesFigures(table, versions, stamps, [float(v) for v in values], shown,
                         observations.first_ts(session, series.id), path)


@dataclass(frozen=True)
class MetricsFigures:
    """What ``GET /metrics`` reports from the database, whichever process wrote it."""

    champions: list[tuple[str, int, dt.datetime]]  # (series key, version, trained at)
    newest_observation: list[tuple[str, dt.datetime]]  # (series key, ts)
    ingest_runs: dict[str, int]  # by status
    job_runs: dict[tuple[str, str], int]  # by (kind, status)
    queue_tasks: dict[tuple[str, str], int]  # procrastinate tasks by (queue, status); empty on SQLite


def metrics_figures(session: Session) -> MetricsFigures:
    """Read every database figure of the metrics endpoint in one session."""
    from forecaster.usecases.queue import queue_counts_in

    key_of = {s.id: s.key for s in series_by_keys(session)}
    champions = [(key_of[sid], c.version, c.created_at) for sid, c in registry.champions(session).items()]
    newest = observations.newest_by_key(session)
    ingest = {status: n for status, n in session.execute(
        select(IngestRun.status, func.count()).group_by(IngestRun.status))}
    jobs = {(kind, status): n for kind, status, n in session.execute(
        select(JobRun.kind, JobRun.status, func.count()).group_by(JobRun.kind, JobRun.status))}
    return MetricsFigures(champions, newest, ingest, jobs, queue_counts_in(session))


def candidate_label(method: str) -> str:
    """A statistical candidate's name for people (``ets`` -> AutoETS); the method itself when unknown."""
    return LABELS.get(method, method)
