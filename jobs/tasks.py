"""What a scheduled job does when it fires: one job run over its series.

    fire(ctx, job_id=..., kind="ingest", keys=[...])   # a ``cron`` job run, executed here or enqueued

With a task queue (PostgreSQL: ``ctx.queue``), a firing only enqueues one task
per series (``usecases.jobs.start_run``) and returns: `forecaster worker`
processes do the work, and the leader never trains. In process (SQLite), the
firing executes the run on its own thread (``InProcessQueue.execute``), so a
job's lock covers its run. Either way each series goes through
``usecases.jobs.run_series``, and a source that is unavailable for now
(``SourceUnavailable``: network, 429, 5xx) is retried with exponential backoff
(``ctx.retry``; a worker uses the same policy).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from forecaster.config.settings import Settings
from forecaster.logs import log_event
from forecaster.usecases.executor import InProcessQueue
from forecaster.usecases.ingest import RetryPolicy
from forecaster.usecases.jobs import abandon_runs, record_run, start_run
from forecaster.usecases.queue import WorkQueue


@dataclass
class JobContext:
    """What every firing needs: the database, the config, and when to stop."""

    sm: sessionmaker[Session]
    settings: Settings
    stop: threading.Event
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    queue: WorkQueue | None = None  # where the work goes; None: this process, retrying by ``retry``
    # One lock per job (kind + schedule): a firing that finds its job still
    # running is skipped, whichever path fired it (cron or the start-up run).
    _running: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def job_lock(self, job_id: str) -> threading.Lock:
        """The lock that one run of job ``job_id`` holds while it goes."""
        with self._guard:
            return self._running.setdefault(job_id, threading.Lock())


def fire(ctx: JobContext, *, job_id: str, kind: str, keys: Sequence[str]) -> int | None:
    """One firing of a scheduled job: record a ``cron`` job run and execute it.

    Never raises (a scheduler thread has no one to raise to): failures are on
    the run row and in the log. Returns the run id, or None when the firing was
    skipped (the same job still running, or the scheduler stopping).
    """
    lock = ctx.job_lock(job_id)
    if not lock.acquire(blocking=False):
        log_event("job.skipped", job=job_id, reason="the previous run of this job is still going")
        return None
    try:
        if ctx.stop.is_set():
            return None
        queue = ctx.queue or InProcessQueue(ctx.sm, ctx.settings, retry=ctx.retry)
        if not isinstance(queue, InProcessQueue):
            run = start_run(ctx.sm, ctx.settings, queue, kind=kind, keys=list(keys), trigger="cron")
            log_event("job.fired", job=job_id, kind=kind, run_id=run.id, series=run.series_total,
                      executor="queue")
            return run.id
        run = record_run(ctx.sm, ctx.settings, kind=kind, keys=list(keys), trigger="cron")
        log_event("job.fired", job=job_id, kind=kind, run_id=run.id, series=run.series_total)
        queue.execute(run.id, stop=ctx.stop)
        return run.id
    except Exception:  # noqa: BLE001 - logged here, recorded on the run by its executor
        log_event("job.crashed", job=job_id, kind=kind, exc_info=True)
        return None
    finally:
        lock.release()


def abandon_cron_runs(sm: sessionmaker[Session]) -> int:
    """Mark ``cron`` runs still 'running' or 'queued' as interrupted, whatever their age.

    Only the leader runs cron jobs, so when a process becomes leader any such
    run was left behind by a previous leader that died. Runs the API started
    are not touched (they may be alive in an API process).
    """
    return abandon_runs(sm, trigger="cron", any_age=True)
