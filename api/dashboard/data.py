"""What the dashboard pages show, read from the database (never torch) into frozen rows.

    series_rows(session, settings) -> list[SeriesRow]        the table on /
    series_page(session, settings, key) -> SeriesPage         /series/{key}

Each row also says what its colours mean (``tone``: good, warn, bad, or "" for
none), so the templates only paint what was decided here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.dashboard.chart import ChartData, PastPoint
from api.dashboard.format import method_name
from forecaster import catalog
from forecaster.accuracy import SeriesAccuracy, all_accuracy, series_accuracy
from forecaster.config import Settings
from forecaster.db import Forecast, IngestRun, JobRun, ModelVersion, Observation, Series
from forecaster.forecasting import load_values
from forecaster.registry import VersionView, list_versions

TRAIN_RUNS_SCANNED = 100  # recent train job runs searched for each series' last outcome
DAILY_POINTS = 120
SUBDAILY_SPAN = pd.Timedelta(days=7)
MAX_POINTS = 2016  # a week of 5-minute steps


@dataclass(frozen=True)
class RunInfo:
    """The last ingest or train of a series: its outcome, when, and what it said."""

    status: str
    at: dt.datetime | None
    detail: str | None
    tone: str


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


def _mase(metrics: dict[str, Any] | None, name: str) -> float | None:
    block = (metrics or {}).get(name) or {}
    value = block.get("mase")
    return None if value is None else float(value)


def _aware(ts: Any) -> dt.datetime | None:
    if ts is None:
        return None
    if isinstance(ts, str):
        ts = dt.datetime.fromisoformat(ts)
    assert isinstance(ts, dt.datetime)
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=dt.timezone.utc)


INGEST_TONE = {"ok": "good", "snapshot": "warn", "unavailable": "warn", "failed": "bad"}
TRAIN_TONE = {"promoted": "good", "skipped": "warn", "failed": "bad"}


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
        if run.status == "running" and progress.get("current") in ids:
            out.setdefault(progress["current"], RunInfo("running", run.started_at, None, ""))
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
        out[s.key] = {n: _mase(m, n) for n in ("model", "naive", "seasonal_naive")}
        if not s.champion_model_version_id:
            out[s.key]["model"] = None
    return out


def _empty_accuracy(key: str, settings: Settings) -> SeriesAccuracy:
    m = settings.monitoring
    return SeriesAccuracy(key, m.accuracy_window, m.drift_min_actuals, [], None, None, False, "no forecasts yet")


def _rows(session: Session, settings: Settings, summaries: list[catalog.SeriesSummary],
          accuracy: dict[str, SeriesAccuracy]) -> list[SeriesRow]:
    keys = [s.key for s in summaries]
    ids = dict(session.execute(select(Series.key, Series.id).where(Series.key.in_(keys))).all())
    holdouts = _holdouts(session, ids, summaries)
    latest = (select(func.max(Forecast.id)).where(Forecast.series_id.in_(list(ids.values())))
              .group_by(Forecast.series_id))
    served = {sid: method for sid, method in session.execute(
        select(Forecast.series_id, Forecast.method).where(Forecast.id.in_(latest)))}
    ingests, trains = _last_ingests(session, keys), _last_trains(session, ids)
    out = []
    for s in summaries:
        holdout = holdouts.get(s.key, {})
        model = holdout.get("model")
        beats = model is not None and all(model < v for n, v in holdout.items() if n != "model" and v is not None)
        method = served.get(ids.get(s.key, -1))
        serving = method_name(method, s.champion_version) if (method or s.champion_version) else ""
        serving_tone = "" if not serving else ("good" if beats else "") if s.champion_version else "warn"
        acc = accuracy.get(s.key) or _empty_accuracy(s.key, settings)
        live = acc.serving
        live_tone = ("bad" if acc.drifting else "good" if acc.champion_version is not None and live is not None
                     and live.mase is not None and live.mase < 1 and live.count >= acc.min_actuals else "")
        out.append(SeriesRow(
            key=s.key, source=s.source, frequency=s.frequency, unit=s.unit, params=s.params,
            observation_count=s.observation_count, last_ts=_aware(s.last_observation_ts),
            champion_version=s.champion_version, serving=serving, serving_tone=serving_tone, holdout=holdout,
            beats_baselines=beats, accuracy=acc, live_tone=live_tone,
            last_ingest=ingests.get(s.key), last_train=trains.get(s.key),
        ))
    return out


def series_rows(session: Session, settings: Settings) -> list[SeriesRow]:
    """One row per series (stored or configured), by key."""
    m = settings.monitoring
    accuracy = all_accuracy(session, window=m.accuracy_window, min_actuals=m.drift_min_actuals)
    return _rows(session, settings, catalog.list_series(session, settings), accuracy)


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


def series_page(session: Session, settings: Settings, key: str) -> SeriesPage:
    """Everything /series/{key} shows.

    Raises:
        SeriesNotFound: neither stored nor configured, naming the key.
    """
    summary = catalog.series_summary(session, settings, key)
    series = session.scalar(select(Series).where(Series.key == key))
    m = settings.monitoring
    acc = (series_accuracy(session, series_key=key, window=m.accuracy_window, min_actuals=m.drift_min_actuals)
           if series is not None else _empty_accuracy(key, settings))
    row = _rows(session, settings, [summary], {key: acc})[0]
    if series is None or summary.observation_count == 0:
        versions = [] if series is None else list_versions(session, series_key=key)
        return SeriesPage(row, None, None, None, None, None, versions)
    versions = list_versions(session, series_key=key)
    by_id = {v.id: v.version for v in versions}
    ts, values = load_values(session, series.id, tail=chart_points(series.frequency))
    rows = session.scalars(select(Forecast).where(Forecast.series_id == series.id,
                                                  Forecast.target_ts >= ts[0].to_pydatetime())
                           .order_by(Forecast.id))
    by_target: dict[dt.datetime, Forecast] = {}
    for f in rows:
        by_target[f.target_ts] = f  # the latest forecast of each target
    newest = max(by_target.values(), key=lambda f: f.id, default=None)
    last_obs = ts[-1].to_pydatetime()

    def point(f: Forecast) -> PastPoint:
        return PastPoint(f.target_ts, f.value, f.lower, f.upper, f.actual,
                         method_name(f.method, by_id.get(f.model_version_id) if f.model_version_id else None))

    past = [point(f) for t, f in by_target.items() if t <= last_obs]
    nxt = point(newest) if newest is not None and newest.target_ts > last_obs else None
    chart = ChartData([t.to_pydatetime() for t in ts], [float(v) for v in values], _step(series.frequency), past,
                      nxt, series.unit)
    first_ts = _aware(session.scalar(select(func.min(Observation.ts)).where(Observation.series_id == series.id)))
    return SeriesPage(row, first_ts, chart, nxt, newest.made_at if nxt and newest else None,
                      newest.level if nxt and newest else None, versions)
