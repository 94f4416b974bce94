"""Where a job run's work goes: the interface, and the PostgreSQL task queue.

    queue = make_queue(sm, settings)                  # forecaster/usecases/executor.py
    queue.submit(run_id, kind="train", keys=[...])    # returns at once
    queue.shutdown()

- ``TaskQueue`` (PostgreSQL): one procrastinate task per series, on the queue
  named after its kind (``train``, ``ingest``), claimed by `forecaster worker`
  processes on any machine (jobs/worker.py). Each task carries
  ``lock="series:<key>"`` (procrastinate never runs two tasks with one lock at
  once: the same series never trains or ingests in two places) and
  ``queueing_lock="<kind>:<key>"`` (a second enqueue while one is still waiting
  is refused: two leaders, or a leader and an admin, add no duplicate work;
  that series is counted ``skipped`` in the later run, naming the reason).
- ``InProcessQueue`` (SQLite, the embedded default, or ``[workers] queue =
  "in-process"``; forecaster/usecases/executor.py): the run executes on a thread
  of this process, series after series; `forecaster up` needs no other process.

Either way each series goes through ``usecases.jobs.run_series``.
procrastinate's tables live in the PostgreSQL schema ``procrastinate`` (created
by Alembic revision 0002), which every queue connection puts on its
``search_path``. Nothing here imports torch; procrastinate itself is imported
only when a ``TaskQueue`` is built.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from forecaster.config.settings import Settings
from forecaster.logs import log_event
from forecaster.store import jobruns

QUEUE_SCHEMA = "procrastinate"
TASKS = {"train": "forecaster.train_series", "ingest": "forecaster.ingest_series"}  # kind -> task name
QUEUES = tuple(TASKS)  # procrastinate queue names: one per kind


def series_lock(key: str) -> str:
    """The procrastinate ``lock`` of every task of one series (no two run at once)."""
    return f"series:{key}"


def queueing_lock(kind: str, key: str) -> str:
    """The procrastinate ``queueing_lock``: at most one waiting task per (kind, series)."""
    return f"{kind}:{key}"


def conninfo(database_url: str) -> tuple[str, dict[str, Any]]:
    """psycopg's connection string and connect arguments for the queue, from a SQLAlchemy URL.

    The arguments put the queue's schema on the search path and ask for TCP
    keepalives, so a worker notices a dead server in seconds rather than hours.
    """
    url = make_url(database_url).set(drivername="postgresql")
    dsn = url.render_as_string(hide_password=False)
    return dsn, {
        "options": f"-c search_path={QUEUE_SCHEMA}",
        "connect_timeout": 5,
        "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
        "application_name": "forecaster-queue",
    }


class WorkQueue(Protocol):
    """What the API, the scheduler and the CLI need from an executor."""

    description: str
    runs_in_process: bool

    def submit(self, run_id: int, *, kind: str, keys: Sequence[str], snapshot_fallback: bool = False) -> None:
        """Start (in process) or enqueue (workers) the work of a queued job run; returns at once."""

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop taking work; in process, let the series in hand finish."""


class TaskQueue:
    """One procrastinate task per series; workers run them (see the module docstring)."""

    runs_in_process = False

    def __init__(self, sm: sessionmaker[Session], settings: Settings) -> None:
        import procrastinate

        self._sm = sm
        dsn, kwargs = conninfo(settings.database_url)
        # A small pool opened on first use (the API may start while the database is away).
        self._app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector(
            conninfo=dsn, kwargs=kwargs, min_size=0, max_size=4, timeout=10))
        self._opened = False
        self._lock = threading.Lock()  # the API submits from several threads: one pool, opened once
        self.description = f"procrastinate on PostgreSQL (schema {QUEUE_SCHEMA})"

    def _open(self) -> Any:
        with self._lock:
            if not self._opened:
                self._app.open()
                self._opened = True
        return self._app

    def submit(self, run_id: int, *, kind: str, keys: Sequence[str], snapshot_fallback: bool = False) -> None:
        """Defer one task per series of the run; a series already waiting is recorded ``skipped``.

        Raises:
            StorageUnavailable: the queue cannot be reached (nothing was enqueued for that series).
        """
        from procrastinate import exceptions

        from forecaster.errors import StorageUnavailable

        queued = skipped = 0
        try:
            app = self._open()
            for key in keys:
                deferrer = app.configure_task(name=TASKS[kind], queue=kind, lock=series_lock(key),
                                              queueing_lock=queueing_lock(kind, key))
                try:
                    deferrer.defer(run_id=run_id, series_key=key, snapshot_fallback=snapshot_fallback)
                    queued += 1
                except exceptions.AlreadyEnqueued:
                    skipped += 1
                    jobruns.record_result(self._sm, run_id, key, status="skipped", ok=True,
                                          detail=f"already waiting in the {kind} queue (enqueued by another run)")
        except exceptions.ConnectorException as exc:
            raise StorageUnavailable(f"the task queue cannot be reached: {exc.__cause__ or exc}") from None
        if not keys:
            jobruns.close_if_empty(self._sm, run_id)
        log_event("queue.enqueued", run_id=run_id, kind=kind, tasks=queued, skipped=skipped)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Close the pool (queued tasks stay queued: workers own them)."""
        if self._opened:
            self._app.close()
            self._opened = False


def queue_counts_in(session: Session) -> dict[tuple[str, str], int]:
    """Tasks by (queue, status) -- todo, doing, succeeded, failed, ... -- for watching the queue.

    Empty on SQLite, or before revision 0002 (no queue there).
    """
    if session.get_bind().dialect.name != "postgresql":
        return {}
    if session.execute(text("SELECT to_regclass(:t)"), {"t": f"{QUEUE_SCHEMA}.procrastinate_jobs"}).scalar() is None:
        return {}
    rows = session.execute(text(
        f"SELECT queue_name, status::text, count(*) FROM {QUEUE_SCHEMA}.procrastinate_jobs "
        "GROUP BY queue_name, status"))
    return {(q, s): int(n) for q, s, n in rows}
