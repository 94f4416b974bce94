"""Retraining service: stored observations → new model version → gate → stored forecast.

The maths is ``modelling.train_series`` (a pure function of data, config and
seed); this module reads the data, writes the version, moves the alias and
refreshes the forecast, all in one transaction so that a failed training
leaves the registry exactly as it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from forecaster import __version__, registry
from forecaster.config import SeriesSpec, Settings
from forecaster.db import Series, write_session
from forecaster.errors import ForecasterError, InvalidInput, NotEnoughData, TrainingError
from forecaster.forecasting import load_values, refresh_forecast
from forecaster.ingest import find_series, sync_series
from forecaster.logs import log_event

Progress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class TrainReport:
    """What one series' retrain did: promoted, rejected, skipped (too little data) or failed."""

    series_key: str
    status: str
    version: int | None = None
    model_version_id: int | None = None
    reason: str = ""
    metrics: dict[str, Any] | None = None
    device: str | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("promoted", "rejected", "skipped")


def _champion_predictor(session: Session, series: Series) -> tuple[Any, int | None]:
    mv = registry.champion_of(session, series.id)
    if mv is None:
        return None, None
    from forecaster.modelling import Predictor

    return Predictor.from_artifact(mv.hyperparameters, mv.scaler, mv.weights), mv.version


def retrain_series(
    sm: sessionmaker[Session],
    settings: Settings,
    spec: SeriesSpec,
    *,
    progress: Progress | None = None,
    job_run_id: int | None = None,
) -> TrainReport:
    """Train a new version of one series, gate it, and store it with the forecast.

    Never raises for a problem with this series' data or training: the report
    says ``skipped`` or ``failed`` with the reason, and nothing is written.
    """
    from forecaster import modelling  # torch lives behind this import

    started = time.perf_counter()
    with sm() as session:
        series = find_series(session, spec.key)
        if series is None:
            return TrainReport(spec.key, "skipped", reason=f"{spec.key}: no observations yet: ingest it first")
        ts, values = load_values(session, series.id)
        champion, champion_version = _champion_predictor(session, series)
    try:
        ts, values, dropped = modelling.recent_segment(ts, values)
    except (pd.errors.OutOfBoundsDatetime, OverflowError) as exc:  # a row stored before validation existed
        reason = (f"{spec.key}: a stored timestamp is out of range for training ({type(exc).__name__}: {exc}); "
                  "delete it with `forecaster observations delete` or DELETE /v1/series/{key}/observations")
        log_event("train.failed", level=logging.ERROR, series=spec.key, run_id=job_run_id, error=reason)
        return TrainReport(spec.key, "failed", reason=reason)
    if dropped:
        log_event("train.segment", series=spec.key, run_id=job_run_id, dropped=dropped,
                  since=ts[0].isoformat() if len(ts) else None)
    try:
        outcome = modelling.train_series(ts, values, frequency=spec.frequency, spec=spec.model,
                                        champion=champion, progress=progress)
    except NotEnoughData as exc:
        note = f" (after the last gap in the data, since {ts[0]:%Y-%m-%d %H:%M}; {dropped} older points unused)" \
            if dropped else ""
        log_event("train.skipped", series=spec.key, run_id=job_run_id, reason=str(exc) + note)
        return TrainReport(spec.key, "skipped", reason=f"{spec.key}: {exc}{note}")
    except (TrainingError, InvalidInput) as exc:
        log_event("train.failed", level=logging.ERROR, series=spec.key, run_id=job_run_id, error=str(exc))
        return TrainReport(spec.key, "failed", reason=f"{spec.key}: {exc}")
    promote, reason = modelling.gate(outcome.metrics)
    if champion_version is not None:
        reason = reason.replace("champion", f"champion v{champion_version}", 1)
    lineage = {**outcome.lineage, "series_key": spec.key, "code_version": __version__, "job_run_id": job_run_id,
               "row_count_total": int(values.size) + dropped, "dropped_before_gap": dropped}

    for attempt in range(3):  # a concurrent trainer may take our version number: retry afresh
        try:
            with write_session(sm) as session:
                series = sync_series(session, spec)
                mv = registry.add_version(
                    session, series, hyperparameters=outcome.hyperparameters, scaler=outcome.scaler,
                    weights=outcome.weights, metrics=outcome.metrics, lineage=lineage,
                    status="candidate" if promote else "rejected", status_reason=reason,
                )
                if promote:
                    registry.make_champion(session, series, mv, reason)
                refresh_forecast(session, series)
                version, mv_id = mv.version, mv.id
            break
        except IntegrityError:
            if attempt == 2:
                raise
    duration = time.perf_counter() - started
    status = "promoted" if promote else "rejected"
    model_m = outcome.metrics["model"]
    log_event("train.done", series=spec.key, run_id=job_run_id, version=version, status=status,
              mase=model_m.get("mase"), naive_mase=outcome.metrics["naive"].get("mase"),
              device=outcome.lineage.get("device"), duration_s=round(duration, 2))
    return TrainReport(spec.key, status, version, mv_id, reason, outcome.metrics,
                       outcome.lineage.get("device"), duration)


def retrain_many(
    sm: sessionmaker[Session],
    settings: Settings,
    specs: Iterable[SeriesSpec],
    *,
    job_run_id: int | None = None,
    on_start: Callable[[SeriesSpec], Progress | None] | None = None,
    on_done: Callable[[TrainReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[TrainReport]:
    """Retrain each series in turn; one failing never stops the others."""
    reports = []
    for spec in specs:
        if should_stop is not None and should_stop():
            break
        progress = on_start(spec) if on_start else None
        try:
            report = retrain_series(sm, settings, spec, progress=progress, job_run_id=job_run_id)
        except ForecasterError as exc:
            log_event("train.failed", level=logging.ERROR, series=spec.key, run_id=job_run_id, error=str(exc))
            report = TrainReport(spec.key, "failed", reason=f"{spec.key}: {exc}")
        except Exception as exc:  # noqa: BLE001 - one series must never stop the others
            log_event("train.failed", level=logging.ERROR, series=spec.key, run_id=job_run_id, error=repr(exc),
                      exc_info=True)
            report = TrainReport(spec.key, "failed", reason=f"{spec.key}: {type(exc).__name__}: {exc}")
        reports.append(report)
        if on_done:
            on_done(report)
    return reports


def needs_training(sm: sessionmaker[Session], settings: Settings) -> list[str]:
    """Keys of configured series with no model version yet, or with observations newer
    than their latest version's training data (so a second `forecaster up` on the
    same directory does no duplicate work)."""
    from sqlalchemy import func, select

    from forecaster.db import ModelVersion, Observation

    keys = []
    with sm() as session:
        for spec in settings.series:
            series = find_series(session, spec.key)
            if series is None:
                continue
            latest = session.scalar(select(ModelVersion).where(ModelVersion.series_id == series.id)
                                    .order_by(ModelVersion.version.desc()).limit(1))
            count = session.scalar(select(func.count()).select_from(Observation)
                                   .where(Observation.series_id == series.id))
            if not count:
                continue
            if latest is None or (latest.lineage or {}).get("row_count_total") != count:
                keys.append(spec.key)
    return keys
