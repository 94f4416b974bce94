"""Job runs: an ingest or a train over several series, recorded in ``job_runs``.

The scheduler (cron), the API (admin trigger, 202 + id) and the CLI all record
a run with ``create_run``; whatever executes it (forecaster/usecases/jobs.py:
a thread of this process, or one queued task per series on `forecaster worker`
processes) calls ``series_started`` and ``record_result`` for each series.
Progress is written to the row after each series, so a client polling
``/v1/jobs/runs/{id}`` sees it move; the row's counts are the sum of its
series' results, and the call that records the last series closes the run.
A run that stops before that is closed by ``close_stopped``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from forecaster.config.settings import Settings
from forecaster.errors import InvalidInput, RunNotFound, SeriesNotFound
from forecaster.logs import log_event
from forecaster.store.tables import JobRun, utcnow, write_session

JOB_KINDS = ("ingest", "train")  # the ``kind`` of a job run, as stored and as the API names it


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
    cold: bool = False  # a train run that retrains from scratch (``forecaster train --cold``)


def _view(r: JobRun) -> JobRunView:
    return JobRunView(r.id, r.kind, r.trigger, r.status, r.series_keys, r.started_at, r.finished_at,
                      r.series_total, r.series_done, r.series_failed, r.progress, r.error,
                      bool((r.options or {}).get("cold")))


def run_keys(settings: Settings, *, kind: str, keys: Sequence[str] | None) -> list[str]:
    """The series a run of ``kind`` over ``keys`` covers: each named key once, in first-seen order
    (every configured series when ``keys`` is empty); push series are never ingested.

    Raises:
        InvalidInput: unknown kind.
        SeriesNotFound: a key is not configured; the message lists the known keys.
    """
    if kind not in JOB_KINDS:
        raise InvalidInput(f"job kind {kind!r} is not one of {', '.join(JOB_KINDS)}")
    known = {s.key: s for s in settings.series}
    wanted = list(dict.fromkeys(keys)) if keys else list(known)
    missing = [k for k in wanted if k not in known]
    if missing:
        raise SeriesNotFound(
            f"series {', '.join(map(repr, missing))} not in the config (known: {', '.join(known) or 'none'})"
        )
    return [k for k in wanted if not (kind == "ingest" and known[k].source == "push")]


def create_run(sm: sessionmaker[Session], settings: Settings, *, kind: str, keys: Sequence[str] | None = None,
               trigger: str = "manual", cold: bool = False) -> JobRunView:
    """Record a queued job run for the named series (all when ``keys`` is empty; see ``run_keys``);
    ``cold``: a train run whose series retrain from scratch.

    Raises:
        InvalidInput: unknown kind.
        SeriesNotFound: a key is not configured.
    """
    series_keys = run_keys(settings, kind=kind, keys=keys)
    with write_session(sm) as session:
        run = JobRun(kind=kind, trigger=trigger, series_keys=series_keys, status="queued",
                     series_total=len(series_keys), progress={"results": []},
                     options={"cold": True} if cold and kind == "train" else None)
        session.add(run)
        session.flush()
        return _view(run)


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
                  detail: str | None, stopping: bool = False) -> tuple[JobRunView, bool]:
    """Count one series' outcome into its run, once; the last one closes the run.

    Idempotent per series: a task that runs again (its worker died after
    recording) does not count twice. When every series has a result the run
    ends ``ok`` (all fine), ``partial`` (some failed) or ``failed`` (all
    failed), or ``interrupted`` when ``stopping`` (this series was cut short
    because its executor is stopping). Returns the run and whether this call closed it.

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
            _close(run, results, "interrupted" if stopping else None)
        return _view(run), closed


def _failures(results: list[dict[str, Any]]) -> str | None:
    return "; ".join(r["detail"] or "" for r in results if r["status"] == "failed") or None


def _close(run: JobRun, results: list[dict[str, Any]], status: str | None = None) -> None:
    done, failed = run.series_done, run.series_failed
    run.status = status or ("partial" if failed and done else "failed" if failed else "ok")
    run.finished_at = utcnow()
    run.error = _failures(results)
    log_event(f"job.{run.kind}.done", run_id=run.id, status=run.status, done=done, failed=failed)


def close_stopped(sm: sessionmaker[Session], run_id: int, *, status: str = "interrupted",
                  error: str | None = None) -> JobRunView:
    """Close a run that ends before every series has a result: its executor stopped between
    series (``interrupted``, the failures so far as the error) or broke (``failed``, ``error``).

    A run already closed stays as it is.

    Raises:
        RunNotFound: no such run.
    """
    with write_session(sm) as session:
        run = _locked_run(session, run_id)
        if run.finished_at is None:
            progress = dict(run.progress or {})
            _close(run, list(progress.get("results", [])), status)
            run.progress = {**progress, "running": [], "current": None}
            if error is not None:
                run.error = error
        return _view(run)


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
