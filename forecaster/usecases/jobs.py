"""Job runs as use cases: start one (API trigger, cron, CLI), and do one series of one.

    start_run(sm, settings, queue, kind="train", keys=None, trigger="api") -> JobRunView
    run_series(sm, settings, run_id=..., kind="train", series_key=..., retry=...) -> SeriesResult

``start_run`` records a queued run and hands it to the queue (forecaster/usecases/queue.py):
on PostgreSQL that only enqueues one task per series, so the process that
starts a run (an API replica, the scheduler's leader) never trains.
``run_series`` is the one executor of a series, whoever runs it (a worker task,
or forecaster/usecases/executor.py in this process): it marks the series in hand,
ingests or retrains it, and counts the outcome into the run (``jobruns.record_result``).
It is safe to run twice for the same (run, series), as a task whose worker died
is: the result is counted once, and a retrain whose version was already
written by the first attempt is not trained again.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from forecaster.config.settings import SeriesSpec, Settings
from forecaster.errors import ForecasterError, SeriesNotFound
from forecaster.logs import log_event
from forecaster.store import jobruns
from forecaster.store.jobruns import JobRunView as JobRunView  # the view these use cases return
from forecaster.store.series import find_series
from forecaster.store.tables import JobRun, ModelVersion, Observation
from forecaster.usecases import ingest
from forecaster.usecases.fleets import FleetGatherer
from forecaster.usecases.forecasting import refresh_after_ingest
from forecaster.usecases.queue import WorkQueue
from forecaster.usecases.retrain import EpochProgress, TrainReport, retrain_series

DATABASE_LOST = (OperationalError, InterfaceError)  # worth running the task again once the database is back


@dataclass(frozen=True)
class SeriesResult:
    """One series' outcome inside a job run, as counted into the run."""

    series_key: str
    status: str  # ingest: ok / snapshot / unavailable / failed; train: promoted / rejected / skipped / failed
    ok: bool
    detail: str | None
    outcome: ingest.IngestOutcome | TrainReport | None = None  # what the ingest or the training reported, when it ran
    stopped: bool = False  # cut short because its run is stopping (an ingest's retries given up)


def start_run(sm: sessionmaker[Session], settings: Settings, queue: WorkQueue, *, kind: str,
              keys: Sequence[str] | None = None, trigger: str = "manual",
              snapshot_fallback: bool = False, cold: bool = False) -> JobRunView:
    """Record a job run over ``keys`` (every configured series when None) and hand it to ``queue``
    (``cold``: a train run whose series retrain from scratch).

    Returns the run as recorded (``queued``); poll ``jobruns.get_run`` for progress.

    Raises:
        InvalidInput: unknown kind.
        SeriesNotFound: a key is not configured.
        StorageUnavailable: the task queue cannot be reached.
    """
    run = jobruns.create_run(sm, settings, kind=kind, keys=keys, trigger=trigger, cold=cold)
    try:
        queue.submit(run.id, kind=kind, keys=run.series_keys or [], snapshot_fallback=snapshot_fallback)
    except Exception as exc:
        jobruns.give_up(sm, run.id, error=f"could not be queued: {exc}")  # never left 'queued' forever
        raise
    return run


def _trained_by_run(session: Session, series_id: int, run_id: int) -> ModelVersion | None:
    """A version this run already wrote for the series (its task ran before and died after the commit)."""
    for mv in session.scalars(select(ModelVersion).where(ModelVersion.series_id == series_id)
                              .order_by(ModelVersion.version.desc()).limit(5)):
        if (mv.lineage or {}).get("job_run_id") == run_id:
            return mv
    return None


def _up_to_date(session: Session, series_id: int, run: JobRun) -> ModelVersion | None:
    """The latest version, when it was made after ``run`` was queued, on exactly today's data.

    Another run trained this series in the meantime (two enqueuers at once whose
    tasks did not overlap in the queue): a second training would give the same
    model again, so the task is counted ``skipped`` instead.
    """
    latest = session.scalar(select(ModelVersion).where(ModelVersion.series_id == series_id)
                            .order_by(ModelVersion.version.desc()).limit(1))
    if latest is None or latest.created_at < run.started_at:
        return None
    count = session.scalar(select(func.count()).select_from(Observation).where(Observation.series_id == series_id))
    return latest if (latest.lineage or {}).get("row_count_total") == count else None


def _train(sm: sessionmaker[Session], spec: SeriesSpec, run_id: int, gather: FleetGatherer | None,
           progress: EpochProgress | None) -> SeriesResult:
    with sm() as session:
        run = session.get(JobRun, run_id)
        cold = run is not None and bool((run.options or {}).get("cold"))
        series = find_series(session, spec.key)
        if run is not None and series is not None:
            done = _trained_by_run(session, series.id, run_id)
            if done is not None:
                return SeriesResult(spec.key, "promoted" if done.status == "champion" else done.status, True,
                                    f"v{done.version}: {done.status_reason or ''} "
                                    "(written before this task was retried)")
            fresh = _up_to_date(session, series.id, run)
            if fresh is not None:
                by = (fresh.lineage or {}).get("job_run_id")
                return SeriesResult(spec.key, "skipped", True,
                                    f"v{fresh.version} was trained on the same data after this run was queued"
                                    + (f" (by job run {by})" if by else ""))
    try:
        r = retrain_series(sm, spec, job_run_id=run_id, gather=gather, progress=progress, cold=cold)
    except ForecasterError as exc:  # the series' own problem: recorded, never retried
        return SeriesResult(spec.key, "failed", False, f"{spec.key}: {exc}")
    return SeriesResult(spec.key, r.status, r.ok, r.reason if r.version is None else f"v{r.version}: {r.reason}", r)


def _ingest(sm: sessionmaker[Session], settings: Settings, spec: SeriesSpec, run_id: int,
            retry: ingest.RetryPolicy | None, stop: threading.Event, snapshot_fallback: bool,
            after_write: ingest.AfterWrite) -> SeriesResult:
    attempts = ingest.Attempts()
    fetch = ingest.retrying_fetch(retry, stop, attempts) if retry is not None else None
    o = ingest.ingest_series(sm, settings, spec, job_run_id=run_id, snapshot_fallback=snapshot_fallback,
                             fetch=fetch, after_write=after_write)
    detail = o.error or f"{o.rows_new} new, {o.rows_updated} updated"
    tries = attempts.by_key.get(spec.key, 1)
    if tries > 1 and o.ok:
        detail += f" (after {tries} attempts)"
    return SeriesResult(spec.key, o.status, o.ok, detail, o, stopped=spec.key in attempts.given_up)


def run_series(
    sm: sessionmaker[Session],
    settings: Settings,
    *,
    run_id: int,
    kind: str,
    series_key: str,
    retry: ingest.RetryPolicy | None = None,
    stop: threading.Event | None = None,
    snapshot_fallback: bool = False,
    queue: WorkQueue | None = None,
    gather: FleetGatherer | None = None,
    progress: EpochProgress | None = None,
    after_write: ingest.AfterWrite | None = None,
) -> SeriesResult:
    """Ingest or retrain one series of job run ``run_id`` and count the outcome into the run.

    ``gather``: the concurrent train tasks of one model shape train together as a
    fleet where fleets pay. ``progress``: called after each epoch of a training alone.
    ``after_write``: what an ingest that changed rows does next (default: refresh the
    series' stored forecast).

    The call that closes an ingest run also starts the drift retrain on ``queue``
    when ``monitoring.retrain_on_drift`` is set.

    A problem with the series (its data, its source after ``retry``'s attempts,
    its training) is recorded as ``failed`` and returned, not raised. A lost
    database raises (``OperationalError``): nothing about this series was
    recorded, and the caller (a queue task) runs it again later.

    Raises:
        RunNotFound: no such run.
    """
    spec = settings.series_by_key(series_key)
    if spec is None:
        result = SeriesResult(series_key, "failed", False,
                              str(SeriesNotFound(f"{series_key} is not in this worker's config")))
        jobruns.record_result(sm, run_id, series_key, status=result.status, ok=False, detail=result.detail)
        return result
    jobruns.series_started(sm, run_id, series_key)
    try:
        if kind == "ingest":
            result = _ingest(sm, settings, spec, run_id, retry, stop or threading.Event(), snapshot_fallback,
                             after_write or refresh_after_ingest)
        else:
            result = _train(sm, spec, run_id, gather, progress)
    except DATABASE_LOST:
        raise
    except Exception as exc:  # noqa: BLE001 - one series must never stop the run: recorded as failed
        log_event(f"{kind}.failed", series=series_key, run_id=run_id, error=repr(exc), exc_info=True)
        result = SeriesResult(series_key, "failed", False, f"{series_key}: {type(exc).__name__}: {exc}")
    run, closed = jobruns.record_result(sm, run_id, series_key, status=result.status, ok=result.ok,
                                        detail=result.detail, stopping=result.stopped)
    log_event(f"job.{kind}.series", run_id=run_id, series=series_key, status=result.status,
              done=run.series_done, failed=run.series_failed, total=run.series_total)
    drift_check = closed and not result.stopped and kind == "ingest" and settings.monitoring.retrain_on_drift
    if drift_check and queue is not None:
        retrain_drifting(sm, settings, queue, run_id=run_id, keys=run.series_keys or [])
    return result


def retrain_drifting(sm: sessionmaker[Session], settings: Settings, queue: WorkQueue, *, run_id: int,
                     keys: Sequence[str]) -> JobRunView | None:
    """After ingest run ``run_id``, start a retrain (trigger ``drift``) of those of ``keys`` whose champion drifts.

    Returns the new run, or None when nothing drifts.
    """
    from forecaster.usecases.accuracy import drifting_series

    with sm() as session:
        due = [k for k in drifting_series(session, settings) if k in keys]
    if not due:
        return None
    log_event("drift.retrain", run_id=run_id, series=",".join(due))
    return start_run(sm, settings, queue, kind="train", keys=due, trigger="drift")


def get_run(sm: sessionmaker[Session], run_id: int) -> JobRunView:
    """One job run and its progress.

    Raises:
        RunNotFound: no such run.
    """
    return jobruns.get_run(sm, run_id)


def list_runs(sm: sessionmaker[Session], *, limit: int = 50, kind: str | None = None) -> list[JobRunView]:
    """The newest job runs first, of one kind or all."""
    return jobruns.list_runs(sm, limit=limit, kind=kind)


def series_of_run(settings: Settings, *, kind: str, keys: Sequence[str] | None) -> list[str]:
    """The series a run of ``kind`` over ``keys`` would cover (each once; push series never ingested).

    Raises:
        InvalidInput: unknown kind.
        SeriesNotFound: a key is not configured.
    """
    return jobruns.run_keys(settings, kind=kind, keys=keys)


def abandon_runs(sm: sessionmaker[Session], *, trigger: str | None = None, any_age: bool = False) -> int:
    """Mark runs a dead process left 'running' or 'queued' as interrupted; how many.

    ``trigger`` limits it to runs of one origin; ``any_age`` takes them whatever their age
    (otherwise only those started more than six hours ago).
    """
    if any_age:
        return jobruns.mark_abandoned(sm, older_than=None, trigger=trigger)
    return jobruns.mark_abandoned(sm, trigger=trigger)


def record_run(sm: sessionmaker[Session], settings: Settings, *, kind: str, keys: Sequence[str],
               trigger: str) -> JobRunView:
    """Record a queued run over ``keys`` for an executor of this process to run."""
    return jobruns.create_run(sm, settings, kind=kind, keys=keys, trigger=trigger)
