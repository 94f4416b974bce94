"""The dashboard's and the metrics' figures, read from the database (never torch).

    figures(session, summaries) -> TableFigures                 the dashboard table on /
    forecasts_since(session, series_id, since) -> [Forecast]    the chart of /series/{key}
    first_observation_ts(session, series_id)
    metrics_figures(session) -> MetricsFigures                  the database gauges of GET /metrics

Plain frozen data only; the colours (``tone``) of a run's outcome are decided
here with the outcome, the rest of the presentation in api/dashboard/.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from forecaster.usecases import catalog
from forecaster.store.registry import CHAMPION
from forecaster.store.tables import Forecast, IngestRun, JobRun, ModelVersion, Observation, Series

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
    newest = (select(ModelVersion.series_id, func.max(ModelVersion.version).label("v"))
              .where(ModelVersion.series_id.in_(list(ids.values()))).group_by(ModelVersion.series_id).subquery())
    key_of = {i: k for k, i in ids.items()}
    for mv in session.scalars(select(ModelVersion).join(
            newest, (newest.c.series_id == ModelVersion.series_id) & (newest.c.v == ModelVersion.version))):
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
    newest = (select(ModelVersion.series_id, func.max(ModelVersion.version).label("v"))
              .where(ModelVersion.series_id.in_(list(ids.values()))).group_by(ModelVersion.series_id).subquery())
    rows = session.execute(
        select(ModelVersion.id, ModelVersion.series_id, ModelVersion.metrics).where(ModelVersion.id.in_(champions))
        .union_all(select(ModelVersion.id, ModelVersion.series_id, ModelVersion.metrics).join(
            newest, (newest.c.series_id == ModelVersion.series_id) & (newest.c.v == ModelVersion.version))))
    champion_metrics: dict[int, dict[str, Any]] = {}
    newest_metrics: dict[int, dict[str, Any]] = {}
    for mv_id, series_id, metrics in rows:
        (champion_metrics if mv_id in champions else newest_metrics)[series_id] = metrics
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
    ids = dict(session.execute(select(Series.key, Series.id).where(Series.key.in_(keys))).all())
    latest = (select(func.max(Forecast.id)).where(Forecast.series_id.in_(list(ids.values())))
              .group_by(Forecast.series_id))
    served = {sid: method for sid, method in session.execute(
        select(Forecast.series_id, Forecast.method).where(Forecast.id.in_(latest)))}
    return TableFigures(ids, _holdouts(session, ids, summaries), served, _last_ingests(session, keys),
                        _last_trains(session, ids))


def forecasts_since(session: Session, series_id: int, since: dt.datetime) -> list[Forecast]:
    """Stored forecasts of a series whose target is at or after ``since``, oldest first."""
    return list(session.scalars(select(Forecast).where(Forecast.series_id == series_id, Forecast.target_ts >= since)
                                .order_by(Forecast.id)))


def first_observation_ts(session: Session, series_id: int) -> Any:
    """The oldest observation's timestamp (as the driver returns it: SQLite may give naive text)."""
    return session.scalar(select(func.min(Observation.ts)).where(Observation.series_id == series_id))


@dataclass(frozen=True)
class MetricsFigures:
    """What ``GET /metrics`` reports from the database, whichever process wrote it."""

    champions: list[tuple[str, int, dt.datetime]]  # (series key, version, trained at)
    newest_observation: list[tuple[str, Any]]  # (series key, ts as the driver gives it)
    ingest_runs: dict[str, int]  # by status
    job_runs: dict[tuple[str, str], int]  # by (kind, status)
    queue_tasks: dict[tuple[str, str], int]  # procrastinate tasks by (queue, status); empty on SQLite


def metrics_figures(session: Session) -> MetricsFigures:
    """Read every database figure of the metrics endpoint in one session."""
    from forecaster.store.tables import Alias
    from forecaster.usecases.queue import queue_counts_in

    champions = [(k, v, at) for k, v, at in session.execute(
        select(Series.key, ModelVersion.version, ModelVersion.created_at)
        .join(Alias, Alias.series_id == Series.id)
        .join(ModelVersion, ModelVersion.id == Alias.model_version_id)
        .where(Alias.name == CHAMPION))]
    newest = [(k, ts) for k, ts in session.execute(
        select(Series.key, func.max(Observation.ts)).join(Observation, Observation.series_id == Series.id)
        .group_by(Series.key))]
    ingest = {status: n for status, n in session.execute(
        select(IngestRun.status, func.count()).group_by(IngestRun.status))}
    jobs = {(kind, status): n for kind, status, n in session.execute(
        select(JobRun.kind, JobRun.status, func.count()).group_by(JobRun.kind, JobRun.status))}
    return MetricsFigures(champions, newest, ingest, jobs, queue_counts_in(session))
