"""`forecaster worker`: claim ingest and training tasks from the PostgreSQL queue and run them.

    run_worker(settings, concurrency=2, queues=["train"]) -> int   # blocks until SIGTERM/SIGINT

A worker is a procrastinate ``Worker`` (forecaster/usecases/queue.py enqueues; the task
functions here call ``usecases.jobs.run_series``, so a task is one series of one
job run). Sync task functions run on threads: ``concurrency`` tasks at once.

Failures, and what the worker does about each:

- **A worker dies** (``kill -9``, OOM, a lost machine): it stops writing its
  heartbeat (every ``heartbeat_s``). Every live worker looks every
  ``stalled_check_s`` for tasks held by a worker silent for ``stalled_after_s``
  and puts them back in the queue, where any worker claims them at once
  (LISTEN/NOTIFY). So a dead worker's task starts again within
  ``stalled_after_s + stalled_check_s`` (40 s by default). A version is written
  in one transaction, so the dead worker left nothing half-written; the rerun
  counts the series once and does not train it twice.
- **The database goes away**: running tasks fail on their next write and
  procrastinate retries them (up to ``DB_TRIES`` times, every 5 s or more); the
  worker notices (its heartbeat fails), stops, and waits for the database,
  logging ``worker.database_unavailable`` each ``database_retry_s``; when it is
  back the worker starts again, and the tasks it held are recovered as above.
- **SIGTERM / SIGINT**: no new task is claimed; the tasks in hand finish (a
  sync task cannot be cut short; procrastinate flags it aborted after
  ``shutdown_timeout_s``), then the worker exits 0. A second signal exits at
  once, and the task in hand is recovered elsewhere as for a dead worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from forecaster.config.settings import Settings
from forecaster.logs import log_event
from forecaster.usecases.fleets import FleetGatherer
from forecaster.usecases.ingest import RetryPolicy
from forecaster.usecases.jobs import DATABASE_LOST, run_series
from forecaster.usecases.queue import QUEUES, TASKS, TaskQueue, WorkQueue, conninfo

DB_TRIES = 10  # attempts of a task that fails because the database went away


def build_app(sm: sessionmaker[Session], settings: Settings, stop: threading.Event,
              queue: WorkQueue | None = None, gather: FleetGatherer | None = None,
              concurrency: int | None = None) -> Any:
    """The procrastinate App with our two tasks, on an async psycopg pool."""
    import procrastinate

    dsn, kwargs = conninfo(settings.database_url)
    w = settings.workers
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(
        conninfo=dsn, kwargs=kwargs, min_size=0, max_size=max(4, (concurrency or w.concurrency) + 3), timeout=10))
    # Only a lost database is worth another attempt: the series' own problems are
    # recorded as failed by run_series and the task succeeds.
    retry = procrastinate.RetryStrategy(max_attempts=DB_TRIES, wait=5, linear_wait=5,
                                        retry_exceptions=list(DATABASE_LOST))
    ingest_retry = RetryPolicy(tries=settings.scheduler.ingest_tries, backoff_s=settings.scheduler.retry_backoff_s)

    def make(kind: str) -> None:
        @app.task(name=TASKS[kind], queue=kind, retry=retry, pass_context=True)
        def task(context: Any, *, run_id: int, series_key: str, snapshot_fallback: bool = False) -> str:
            log_event("worker.task", kind=kind, series=series_key, run_id=run_id, job=context.job.id,
                      attempt=context.job.attempts + 1, worker=context.worker_name)
            result = run_series(sm, settings, run_id=run_id, kind=kind, series_key=series_key,
                                retry=ingest_retry, stop=stop, snapshot_fallback=snapshot_fallback, queue=queue,
                                gather=gather if kind == "train" else None)
            return result.status

    for kind in QUEUES:
        make(kind)
    return app


async def _recover_stalled(app: Any, settings: Settings) -> None:
    """Put the tasks of workers silent for ``stalled_after_s`` back in the queue, every ``stalled_check_s``."""
    w = settings.workers
    while True:
        await asyncio.sleep(w.stalled_check_s)
        try:
            stalled = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=w.stalled_after_s)
        except Exception as exc:  # noqa: BLE001 - the database may be away: the worker loop handles that
            log_event("worker.stalled_check_failed", error=str(exc).splitlines()[0] if str(exc) else repr(exc))
            continue
        for job in stalled:
            try:
                await app.job_manager.retry_job(job)
            except Exception as exc:  # noqa: BLE001 - another worker requeued it first
                reason = str(exc).splitlines()[0] if str(exc) else repr(exc)
                log_event("worker.stalled_retry_skipped", job=job.id, reason=reason)
                continue
            log_event("worker.stalled_requeued", job=job.id, task=job.task_name,
                      series=(job.task_kwargs or {}).get("series_key"), dead_worker=job.worker_id,
                      level=logging.WARNING)


async def _database_ready(app: Any, settings: Settings, stop: asyncio.Event) -> bool:
    """Wait until the queue's tables answer; log each failed try. False when asked to stop first."""
    attempt = 0
    while not stop.is_set():
        attempt += 1
        try:
            await app.open_async()
            await app.job_manager.list_queues_async()
            return True
        except Exception as exc:  # noqa: BLE001 - unreachable, or migrate has not run yet
            reason = str(exc.__cause__ or exc).splitlines()[0] if str(exc.__cause__ or exc) else repr(exc)
            log_event("worker.database_unavailable", attempt=attempt, retry_s=settings.workers.database_retry_s,
                      error=reason, level=logging.WARNING)
            await app.close_async()
            try:
                await asyncio.wait_for(stop.wait(), settings.workers.database_retry_s)
            except TimeoutError:
                pass
    return False


def _warm_up(queues: Sequence[str], torch_threads: int | None = None) -> float:
    """Import what training needs before claiming anything (torch and its optimiser machinery
    take seconds to import): the first task then costs what every later one does. Sets torch's
    intra-op threads when ``torch_threads`` is given (several workers on one machine)."""
    import time

    started = time.perf_counter()
    if "train" in queues or torch_threads:
        import torch
        import torch._dynamo  # noqa: F401 - pulled in by the first optimiser otherwise

        from forecaster.usecases.retrain import load_training

        load_training()

        if torch_threads:
            torch.set_num_threads(torch_threads)
    return time.perf_counter() - started


async def _serve(settings: Settings, concurrency: int, queues: Sequence[str]) -> int:
    from procrastinate.worker import Worker

    from forecaster.usecases.database import open_database

    engine, sm = open_database(settings.database_url)
    thread_stop = threading.Event()  # cuts an ingest's retry backoff short on shutdown
    drift_queue = TaskQueue(sm, settings)  # where a drift retrain after an ingest run goes
    # procrastinate runs sync tasks on the loop's default executor, which asyncio sizes to
    # min(32, cpus + 4): 6 threads on a 2-core machine, whatever --concurrency says.
    from concurrent.futures import ThreadPoolExecutor

    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=concurrency + 4, thread_name_prefix="forecaster-task"))
    gather = None
    if concurrency > 1 and "train" in queues and settings.workers.fleet_wait_s > 0:
        gather = FleetGatherer(settings.workers.fleet_wait_s, max_size=concurrency)
    app = build_app(sm, settings, thread_stop, drift_queue, gather, concurrency)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    current: dict[str, Worker] = {}
    name = f"{socket.gethostname()}-{os.getpid()}"
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log_event("worker.killed", signal=signal.Signals(signum).name)
            os._exit(1)
        log_event("worker.signal", signal=signal.Signals(signum).name)
        stop.set()
        thread_stop.set()
        if "worker" in current:
            current["worker"].stop()  # type: ignore[no-untyped-call]

    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, on_signal, s)
    w = settings.workers
    warm_s = _warm_up(queues, w.torch_threads)
    log_event("worker.start", pid=os.getpid(), name=name, concurrency=concurrency, queues=",".join(queues),
              stalled_after_s=w.stalled_after_s, heartbeat_s=w.heartbeat_s, warm_up_s=round(warm_s, 2),
              torch_threads=w.torch_threads or "all")
    try:
        while not stop.is_set():
            if not await _database_ready(app, settings, stop):
                break
            worker = Worker(app=app, queues=list(queues), name=name, concurrency=concurrency,
                            fetch_job_polling_interval=w.poll_s, abort_job_polling_interval=w.poll_s,
                            shutdown_graceful_timeout=w.shutdown_timeout_s, listen_notify=True,
                            install_signal_handlers=False, update_heartbeat_interval=w.heartbeat_s,
                            stalled_worker_timeout=w.stalled_after_s)
            current["worker"] = worker
            recover = asyncio.create_task(_recover_stalled(app, settings), name="recover stalled")
            try:
                await worker.run()  # type: ignore[no-untyped-call]
                if worker.worker_id is None and not stop.is_set():
                    raise ConnectionError("the worker stopped: its heartbeat or listener lost the database")
            except Exception as exc:  # noqa: BLE001 - the database went away: wait for it and start again
                log_event("worker.database_lost", error=str(exc.__cause__ or exc).splitlines()[0] or repr(exc),
                          level=logging.WARNING)
            finally:
                current.pop("worker", None)
                recover.cancel()
                await asyncio.gather(recover, return_exceptions=True)
                await app.close_async()
    finally:
        drift_queue.shutdown()
        engine.dispose()
        log_event("worker.stop", pid=os.getpid())
    return 0


def run_worker(settings: Settings, *, concurrency: int | None = None, queues: Sequence[str] | None = None) -> int:
    """Run a worker until SIGTERM or SIGINT; return the exit code (0).

    Raises:
        ConfigError: the database is SQLite (there is no queue to work from), or a queue name is unknown.
    """
    from forecaster.errors import ConfigError

    if not settings.workers.uses_queue(settings.database_url):
        raise ConfigError(
            f"`forecaster worker` needs the PostgreSQL queue, but database_url is "
            f"{settings.database_url.split(':', 1)[0]}:... and workers.queue = {settings.workers.queue!r}: "
            "on SQLite, `forecaster up` (or the scheduler) runs the work in its own process"
        )
    queues = list(queues or settings.workers.queues)
    unknown = [q for q in queues if q not in QUEUES]
    if unknown:
        raise ConfigError(f"--queues {','.join(unknown)}: not a queue (known: {', '.join(QUEUES)})")
    return asyncio.run(_serve(settings, concurrency or settings.workers.concurrency, queues))
