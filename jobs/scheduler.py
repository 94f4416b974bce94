"""The scheduler process: ingest and retrain on their cron schedules, one leader at a time.

    run_scheduler(settings) -> int        # `forecaster scheduler`: blocks until SIGTERM/SIGINT
    start_in_background(settings).shutdown()   # `forecaster up`: inside the API process

Every process runs the same loop: take the leader lease (jobs/lease.py) or wait
``leader_retry_s`` and try again. Only the leader starts an APScheduler
``BackgroundScheduler``; it checks its lease every ``lease_check_s`` and stops
the jobs the moment the lease is lost, then goes back to following.

Jobs: one per (kind, cron expression). The global ``[schedule]`` crons cover
every series without its own ``ingest`` / ``retrain`` override; series with an
override run in a job of their own schedule. All times are UTC.

Work: on PostgreSQL (``[workers] queue = "auto"``) a firing only enqueues one
task per series and `forecaster worker` processes do it (forecaster/usecases/queue.py);
on SQLite the leader runs it here, series after series.

A database that cannot be reached (or is not migrated yet) at start is waited
for: ``scheduler.database_unavailable`` is logged at each try, every
``leader_retry_s``, and the scheduler carries on when it answers. Losing it
later costs the lease (PostgreSQL) and the loop goes back to waiting for it.

Stopping (SIGTERM, SIGINT, ``shutdown()``): no new firings; the run in hand
stops between series (a retry backoff is cut short) and is recorded
``interrupted``; the lease is released; ``run_scheduler`` returns 0. A second
signal exits at once (the next leader marks the run interrupted).
Options come from the environment: see jobs/options.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from forecaster.config.settings import Settings
from forecaster.logs import log_event
from forecaster.usecases.database import open_database, schema_state
from forecaster.usecases.executor import make_queue
from forecaster.usecases.jobs import abandon_runs
from forecaster.usecases.queue import WorkQueue
from jobs import tasks
from jobs.cron import cron_trigger
from jobs.lease import Lease, make_lease
from jobs.options import SchedulerOptions

# A late firing still runs if it is at most this late (the thread pool was busy,
# the process was paused); later than that it is skipped and the next firing
# does the work. Ingest runs every few minutes, so a stale one is not worth
# running twice in a row; retrain runs daily, so an hour's grace keeps a day's
# models from being skipped because of a short stall around the cron time.
MISFIRE_GRACE_S = {"ingest": 300, "train": 3600}
CRON_KEYS = {"ingest": "ingest", "train": "retrain"}  # job run kind -> its cron's key in [schedule] and [[series]]


@dataclass(frozen=True)
class PlannedJob:
    """One scheduled job: a kind, its cron expression and the series it covers."""

    id: str
    kind: str
    cron: str
    keys: tuple[str, ...]


def plan_jobs(settings: Settings) -> list[PlannedJob]:
    """The jobs for ``settings``: global crons plus one per distinct per-series override.

    Push series are left out of ingest (nothing to fetch); a job with no series
    is left out entirely.
    """
    jobs: list[PlannedJob] = []
    for kind, field in CRON_KEYS.items():
        default = getattr(settings.schedule, field)
        groups: dict[str, list[str]] = {default: []}
        for spec in settings.series:
            if kind == "ingest" and spec.source == "push":
                continue
            groups.setdefault(getattr(spec, field) or default, []).append(spec.key)
        for cron, keys in groups.items():
            if keys:
                job_id = field if cron == default else f"{field}[{cron}]"
                jobs.append(PlannedJob(job_id, kind, cron, tuple(keys)))
    return jobs


def build_scheduler(ctx: tasks.JobContext, jobs: list[PlannedJob], *, run_now: bool = False) -> BackgroundScheduler:
    """Build an APScheduler (not started) with ``jobs`` on UTC cron triggers.

    With ``run_now``, a one-off start-up job runs every ingest job, then every
    retrain job, once (sequentially, so that retrain sees the fresh data).
    """
    sched = BackgroundScheduler(
        timezone=dt.UTC,
        executors={"default": ThreadPoolExecutor(max_workers=len(jobs) + 1)},
    )
    for job in jobs:
        sched.add_job(
            tasks.fire,
            cron_trigger(job.cron),
            kwargs={"ctx": ctx, "job_id": job.id, "kind": job.kind, "keys": job.keys},
            id=job.id,
            name=f"{job.kind} {job.cron}",
            # Several firings missed while the process was stalled run once, not
            # back to back: each run already covers everything up to now.
            coalesce=True,
            # The same job never overlaps itself: a firing that finds the last
            # run still going is skipped (two ingests of one series would only
            # race; two trainings would double the load for the same result).
            max_instances=1,
            misfire_grace_time=MISFIRE_GRACE_S[job.kind],
        )
    if run_now and jobs:
        sched.add_job(_run_each_once, kwargs={"ctx": ctx, "jobs": jobs}, id="start", name="run each job once",
                      next_run_time=dt.datetime.now(dt.UTC), misfire_grace_time=None)

    def on_event(event: JobEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            log_event("job.missed", job=event.job_id, scheduled=event.scheduled_run_time.isoformat())
        else:
            log_event("job.skipped", job=event.job_id, reason="the previous run of this job is still going")

    sched.add_listener(on_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    return sched


def _run_each_once(ctx: tasks.JobContext, jobs: list[PlannedJob]) -> None:
    for job in sorted(jobs, key=lambda j: j.kind != "ingest"):
        if ctx.stop.is_set():
            return
        tasks.fire(ctx, job_id=job.id, kind=job.kind, keys=job.keys)


class SchedulerLoop:
    """Follow, lead, follow again, until ``stop`` is set. See the module docstring."""

    def __init__(self, settings: Settings, stop: threading.Event, options: SchedulerOptions | None = None) -> None:
        self.settings, self.stop = settings, stop
        self.options = options or SchedulerOptions.from_settings(settings.scheduler)

    def run(self) -> None:
        """Block until ``stop`` is set; the lease is released on the way out."""
        opts = self.options
        logging.getLogger("apscheduler").setLevel(logging.ERROR)  # its events are logged as ours
        engine, sm = open_database(self.settings.database_url)
        lease = make_lease(self.settings.database_url, idle_timeout_s=opts.lease_timeout_s)
        jobs = plan_jobs(self.settings)
        log_event("scheduler.start", pid=os.getpid(), lease=lease.description,
                  jobs=",".join(f"{j.id}={len(j.keys)}" for j in jobs) or "none",
                  ingest=self.settings.schedule.ingest, retrain=self.settings.schedule.retrain)
        first_term, waiting = True, False
        queue: WorkQueue | None = None
        try:
            if not self._wait_for_database(engine):
                return
            queue = make_queue(sm, self.settings, retry=opts.retry)
            log_event("scheduler.work", executor=queue.description)
            while not self.stop.is_set():
                if not self._database_answers(engine):
                    if not self._wait_for_database(engine):
                        return
                if lease.try_acquire():
                    log_event("scheduler.leader", pid=os.getpid(), lease=lease.description)
                    lost = self._lead(sm, lease, jobs, queue, run_now=opts.run_on_start and first_term)
                    first_term, waiting = False, False
                    lease.release()
                    if lost:
                        log_event("scheduler.follower", pid=os.getpid(), reason="lease lost")
                    continue
                if not waiting:
                    log_event("scheduler.follower", pid=os.getpid(), reason="another process leads",
                              retry_s=opts.leader_retry_s)
                    waiting = True
                self.stop.wait(opts.leader_retry_s)
        finally:
            lease.release()
            if queue is not None:
                queue.shutdown()
            engine.dispose()
            log_event("scheduler.stop", pid=os.getpid())

    def _database_answers(self, engine: Engine) -> bool:
        """True when the database answers and its schema is at head (checked without logging)."""
        try:
            return schema_state(engine).ready
        except SQLAlchemyError:
            return False

    def _wait_for_database(self, engine: Engine) -> bool:
        """Block until the database answers at head, logging each failed try; False when stopped first."""
        attempt = 0
        while not self.stop.is_set():
            attempt += 1
            try:
                state = schema_state(engine)
                if state.ready:
                    if attempt > 1:
                        log_event("scheduler.database_available", attempts=attempt)
                    return True
                reason = f"{state.describe()}: run `forecaster migrate`"
            except SQLAlchemyError as exc:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            log_event("scheduler.database_unavailable", attempt=attempt, retry_s=self.options.leader_retry_s,
                      error=reason, level=logging.WARNING)
            self.stop.wait(self.options.leader_retry_s)
        return False

    def _lead(self, sm: sessionmaker[Session], lease: Lease, jobs: list[PlannedJob], queue: WorkQueue | None,
              *, run_now: bool) -> bool:
        """Run the jobs until ``stop`` is set (False) or the lease is lost (True)."""
        ctx = tasks.JobContext(sm, self.settings, threading.Event(), self.options.retry, queue)
        try:
            # With workers, a queued or running run is alive in the queue whatever happened to
            # the last leader: nothing to abandon. In process, the last leader took its runs with it.
            abandoned = 0 if queue is not None and not queue.runs_in_process else (
                abandon_runs(sm) + tasks.abandon_cron_runs(sm))
        except SQLAlchemyError as exc:
            log_event("scheduler.db_error", error=str(exc).splitlines()[0], level=logging.WARNING)
            abandoned = 0
        if abandoned:
            log_event("scheduler.abandoned_runs", runs=abandoned)
        sched = build_scheduler(ctx, jobs, run_now=run_now)
        sched.start()
        for job in sched.get_jobs():
            log_event("job.scheduled", job=job.id, next_run=job.next_run_time.isoformat())
        lost = False
        while not self.stop.wait(self.options.lease_check_s):
            if not lease.check():
                lost = True
                break
        ctx.stop.set()  # the run in hand stops between series; backoff waits end now
        log_event("scheduler.stopping", reason="lease lost" if lost else "asked to stop")
        sched.shutdown(wait=True)
        return lost


@contextmanager
def _signals_set(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT set ``stop``; a second one exits at once (the lease dies with us)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            log_event("scheduler.killed", signal=signal.Signals(signum).name)
            os._exit(1)
        log_event("scheduler.signal", signal=signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_scheduler(settings: Settings) -> int:
    """Run the scheduler in this process until SIGTERM or SIGINT; return the exit code (0).

    Raises:
        ConfigError: a ``FORECASTER_SCHEDULER__*`` variable holds a bad value.
    """
    stop = threading.Event()
    loop = SchedulerLoop(settings, stop)
    with _signals_set(stop):
        loop.run()
    return 0


class BackgroundHandle:
    """The scheduler running on a thread of this process (``forecaster up``)."""

    def __init__(self, thread: threading.Thread, stop: threading.Event) -> None:
        self._thread, self._stop = thread, stop

    def shutdown(self, timeout_s: float | None = 60.0) -> None:
        """Stop taking work, let the series in hand finish, release the lease."""
        self._stop.set()
        self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        """True while the scheduler thread is alive."""
        return self._thread.is_alive()


def start_in_background(settings: Settings) -> BackgroundHandle:
    """Start the scheduler loop on a daemon thread and return a handle to stop it.

    Raises:
        ConfigError: a ``FORECASTER_SCHEDULER__*`` variable holds a bad value.
    """
    stop = threading.Event()
    loop = SchedulerLoop(settings, stop)

    def target() -> None:
        try:
            loop.run()
        except Exception:  # noqa: BLE001 - a thread has no caller to raise to
            log_event("scheduler.crashed", exc_info=True, level=logging.ERROR)

    thread = threading.Thread(target=target, name="forecaster-scheduler", daemon=True)
    thread.start()
    return BackgroundHandle(thread, stop)
