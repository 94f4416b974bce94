"""Job runs: an ingest or retrain over several series, recorded in ``job_runs``.

The scheduler (cron), the API (admin trigger, 202 + id) and the CLI all go
through ``create_run``, then either ``execute_run`` (in this process: SQLite,
the embedded default) or one queued task per series (forecaster/usecases/queue.py,
PostgreSQL), each of which calls ``series_started`` and ``record_result``.
Either way progress is written to the row after each series, so a client
polling ``/v1/jobs/runs/{id}`` sees it move; with tasks the row's counts are
the sum of its tasks' results, and the task that records the last series
closes the run.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from forecaster.usecases import ingest
from forecaster.usecases import retrain as training
from forecaster.config.settings import Settings
from forecaster.store.tables import JobRun, utcnow, write_session
from forecaster.errors import InvalidInput, RunNotFound
from forecaster.usecases.forecasting import refresh_after_ingest
from forecaster.logs import log_event

KINDS = ("ingest", "train")


@dataclass(frozen=True)
class JobRunView:
    id: int
    kind: str
    trigger: str
    status: str
    series_keys: list[str] | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    series_total: int
    series_done: int
    series_failed: int
    progress: dict[str, Any] | None
    error: str | None


def _view(r: JobRun) -> JobRunView:
    return JobRunView(r.id, r.kind, r.trigger, r.status, r.series_keys, r.started_at, r.finished_at,
                      r.series_total, r.series_done, r.series_failed, r.progress, r.error)


def create_run(sm: sessionmaker[Session], settings: Settings, *, kind: str, keys: Sequence[str] | None = None,
               trigger: str = "manual") -> JobRunView:
    """Record a queued job run for the named series (all when ``keys`` is empty).

    Raises:
        InvalidInput: unknown kind.
        SeriesNotFound: a key is not configured.
    """
    if kind not in KINDS:
        raise InvalidInput(f"job kind {kind!r} is not one of {', '.join(KINDS)}")
    specs = ingest.select_specs(settings, keys)
    if kind == "ingest":
        specs = [s for s in specs if s.source != "push"]
    with write_session(sm) as session:
        run = JobRun(kind=kind, trigger=trigger, series_keys=[s.key for s in specs], status="queued",
                     series_total=len(specs), progress={"results": []})
        session.add(run)
        session.flush()
        return _view(run)


def _update(sm: sessionmaker[Session], run_id: int, **fields: Any) -> None:
    with write_session(sm) as session:
        run = session.get(JobRun, run_id)
        assert run is not None
        for k, v in fields.items():
            setattr(run, k, v)


def execute_run(
    sm: sessionmaker[Session],
    settings: Settings,
    run_id: int,
    *,
    stop: threading.Event | None = None,
    retry: ingest.RetryPolicy | None = None,
    snapshot_fallback: bool = False,
) -> JobRunView:
    """Run a queued job: each series in turn, progress recorded after each.

    Ingest retries a source that is unavailable for now (``retry``: network,
    429, 5xx) with backoff; training is not retried. Ends ``ok`` (all series
    fine), ``partial`` (some failed), ``failed`` (all failed) or ``interrupted``
    (``stop`` was set: the series in hand finishes, no new one starts).

    Raises:
        RunNotFound: no such run.
    """
    stop = stop or threading.Event()
    with sm() as session:
        run = session.get(JobRun, run_id)
        if run is None:
            raise RunNotFound(f"no job run with id {run_id}")
        kind, keys = run.kind, list(run.series_keys or [])
    _update(sm, run_id, status="running", started_at=utcnow())
    log_event(f"job.{kind}.start", run_id=run_id, series=len(keys))
    known = {s.key: s for s in settings.series}
    specs = [known[k] for k in keys if k in known]
    attempts = ingest.Attempts()
    fetch = ingest.retrying_fetch(retry, stop, attempts) if retry is not None else None
    results: list[dict[str, Any]] = []
    done = failed = 0
    stopped = False
    try:
        for spec in specs:
            if stop.is_set():
                stopped = True
                break
            _update(sm, run_id, progress={"results": list(results), "current": spec.key})
            if kind == "ingest":
                o = ingest.ingest_series(sm, settings, spec, job_run_id=run_id, snapshot_fallback=snapshot_fallback,
                                         fetch=fetch, after_write=refresh_after_ingest)
                ok, status, detail = o.ok, o.status, o.error or f"{o.rows_new} new, {o.rows_updated} updated"
                tries = attempts.by_key.get(spec.key, 1)
                if tries > 1 and o.ok:
                    detail += f" (after {tries} attempts)"
            else:
                r = training.retrain_many(sm, settings, [spec], job_run_id=run_id)[0]
                ok, status = r.ok, r.status
                detail = r.reason if r.version is None else f"v{r.version}: {r.reason}"
            done, failed = done + ok, failed + (not ok)
            results.append({"series": spec.key, "status": status, "detail": detail})
            _update(sm, run_id, series_done=done, series_failed=failed,
                    progress={"results": list(results), "current": None})
            if spec.key in attempts.given_up:  # failed only because we are stopping
                stopped = True
                break
    except BaseException as exc:
        _update(sm, run_id, status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                finished_at=utcnow(), error=f"{type(exc).__name__}: {exc}")
        raise
    status = "interrupted" if stopped else "partial" if failed and done else "failed" if failed else "ok"
    errors = "; ".join(r["detail"] or "" for r in results if r["status"] == "failed")
    _update(sm, run_id, status=status, finished_at=utcnow(), error=errors or None)
    log_event(f"job.{kind}.done", run_id=run_id, status=status, done=done, failed=failed)
    if kind == "ingest" and settings.monitoring.retrain_on_drift and not stopped:
        _retrain_drifting(sm, settings, run_id, keys, stop)
    return get_run(sm, run_id)


def _retrain_drifting(sm: sessionmaker[Session], settings: Settings, run_id: int, keys: list[str],
                      stop: threading.Event) -> None:
    """After an ingest, retrain (as its own job run) the series whose champion drifted."""
    from forecaster.usecases.accuracy import drifting_series

    with sm() as session:
        due = [k for k in drifting_series(session, settings) if k in keys]
    if due:
        log_event("drift.retrain", run_id=run_id, series=",".join(due))
        drift_run = create_run(sm, settings, kind="train", keys=due, trigger="drift")
        execute_run(sm, settings, drift_run.id, stop=stop)


def _locked_run(session: Session, run_id: int) -> JobRun:
    """The run row, locked against the other workers recording into it (PostgreSQL ``FOR UPDATE``)."""
    run = session.get(JobRun, run_id, with_for_update=True)
    if run is None:
        raise RunNotFound(f"no job run with id {run_id}")
    return run


def series_started(sm: sessionmaker[Session], run_id: int, key: str) -> None:
    """A task began work on ``key``: the run is running, and ``key`` is listed as in hand."""
    with write_session(sm) as session:
        run = _locked_run(session, run_id)
        progress = dict(run.progress or {})
        running = [k for k in progress.get("running", []) if k != key] + [key]
        run.progress = {**progress, "running": running, "current": running[0]}
        if run.status == "queued":
            run.status = "running"
            log_event(f"job.{run.kind}.start", run_id=run_id, series=run.series_total)


def record_result(sm: sessionmaker[Session], run_id: int, key: str, *, status: str, ok: bool,
                  detail: str | None) -> tuple[JobRunView, bool]:
    """Count one series' outcome into its run, once; the last one closes the run.

    Idempotent per series: a task that runs again (its worker died after
    recording) does not count twice. When every series has a result the run
    ends ``ok``, ``partial`` or ``failed`` like ``execute_run``. Returns the run
    and whether this call closed it.

    Raises:
        RunNotFound: no such run.
    """
    with write_session(sm) as session:
        run = _locked_run(session, run_id)
        progress = dict(run.progress or {})
        results = list(progress.get("results", []))
        running = [k for k in progress.get("running", []) if k != key]
        if all(r["series"] != key for r in results):
            results.append({"series": key, "status": status, "detail": detail})
            run.series_done += ok
            run.series_failed += not ok
        run.progress = {**progress, "results": results, "running": running,
                        "current": running[0] if running else None}
        closed = run.series_done + run.series_failed >= run.series_total and run.finished_at is None
        if closed:
            _close(run, results)
        return _view(run), closed


def _close(run: JobRun, results: list[dict[str, Any]]) -> None:
    done, failed = run.series_done, run.series_failed
    run.status = "partial" if failed and done else "failed" if failed else "ok"
    run.finished_at = utcnow()
    run.error = "; ".join(r["detail"] or "" for r in results if r["status"] == "failed") or None
    log_event(f"job.{run.kind}.done", run_id=run.id, status=run.status, done=done, failed=failed)


def give_up(sm: sessionmaker[Session], run_id: int, *, error: str) -> None:
    """Record a run that could not start (its tasks could not be queued) as failed, saying why."""
    with write_session(sm) as session:
        run = _locked_run(session, run_id)
        if run.finished_at is None:
            run.status, run.finished_at, run.error = "failed", utcnow(), error


def close_if_empty(sm: sessionmaker[Session], run_id: int) -> None:
    """A run with no series at all is done as soon as it is queued."""
    with write_session(sm) as session:
        run = _locked_run(session, run_id)
        if run.series_total == 0 and run.finished_at is None:
            _close(run, [])


def get_run(sm: sessionmaker[Session], run_id: int) -> JobRunView:
    """One job run.

    Raises:
        RunNotFound: no such run (mapped to 404).
    """
    with sm() as session:
        run = session.get(JobRun, run_id)
        if run is None:
            raise RunNotFound(f"no job run with id {run_id}")
        return _view(run)


def list_runs(sm: sessionmaker[Session], *, limit: int = 50, kind: str | None = None) -> list[JobRunView]:
    with sm() as session:
        q = select(JobRun).order_by(JobRun.id.desc()).limit(limit)
        if kind:
            q = q.where(JobRun.kind == kind)
        return [_view(r) for r in session.scalars(q)]


def mark_abandoned(
    sm: sessionmaker[Session],
    *,
    older_than: dt.timedelta | None = dt.timedelta(hours=6),
    trigger: str | None = None,
) -> int:
    """Mark runs left 'running' or 'queued' by a process that died as interrupted.

    ``older_than`` limits it to runs started that long ago (None: any age);
    ``trigger`` to runs of one origin (the scheduler leader passes "cron": only a
    leader runs those, so a new leader knows any such run lost its process).
    """
    with write_session(sm) as session:
        q = select(JobRun).where(JobRun.status.in_(("running", "queued")))
        if older_than is not None:
            q = q.where(JobRun.started_at < utcnow() - older_than)
        if trigger is not None:
            q = q.where(JobRun.trigger == trigger)
        rows = session.scalars(q).all()
        for r in rows:
            r.status, r.finished_at, r.error = "interrupted", utcnow(), "abandoned: the process running it stopped"
        return len(rows)


class BackgroundRunner:
    """Runs job runs one at a time on a worker thread (API triggers, `forecaster up`)."""

    def __init__(self, sm: sessionmaker[Session], settings: Settings) -> None:
        self._sm, self._settings = sm, settings
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def submit(self, run_id: int, **kwargs: Any) -> None:
        def work() -> None:
            with self._lock:  # one job at a time: the same job never overlaps itself
                try:
                    execute_run(self._sm, self._settings, run_id, stop=self._stop, **kwargs)
                except Exception:  # noqa: BLE001 - recorded on the run row already
                    log_event("job.crashed", run_id=run_id, exc_info=True)

        t = threading.Thread(target=work, name=f"job-run-{run_id}", daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def shutdown(self, timeout: float = 30) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
