"""The in-process executor: a job run's series on a thread of this process, and where a run's work goes.

    queue = make_queue(sm, settings)                    # TaskQueue on PostgreSQL, InProcessQueue otherwise
    queue.submit(run_id, kind="train", keys=[...])      # in process: runs on a thread here, returns at once
    InProcessQueue(sm, settings).execute(run_id)        # runs it on this thread (a scheduler firing)
    run_here(sm, settings, kind="ingest", on_done=...)  # records a run and executes it here (the CLI)

Each series goes through ``jobs.run_series``, the function a worker task runs,
so the recorded result, the drift retrain after an ingest and the run's status
are the same whoever executes it. Submitted runs go one at a time; a drift
retrain that an ingest run starts runs right after it, on the same thread.
Stopping (``shutdown``, or the ``stop`` given to ``execute``) lets the series in
hand finish (an ingest's retry backoff is cut short), starts no new one and
records the run ``interrupted``.

Train runs of one database go one at a time in this process, whichever executor
holds them (the API's queue, a cron firing, `forecaster up`'s start-up training):
a second waits for the first (``training_lock``), so one series never trains
twice at once; ingest runs do not wait for training.

A train run of several series whose model shapes could train faster as a fleet
(``fleets.fleets_pay``: a GPU, amp on a bf16 CPU) runs its series on threads
that meet in a ``FleetGatherer``, as a worker with ``--concurrency`` does.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from forecaster.config.settings import Settings
from forecaster.logs import log_event
from forecaster.store import jobruns
from forecaster.usecases.fleets import FleetGatherer, fleets_pay
from forecaster.usecases.forecasting import BatchedRefresh
from forecaster.usecases.ingest import RetryPolicy, sync_all_series
from forecaster.usecases.jobs import SeriesResult, run_series
from forecaster.usecases.queue import TaskQueue, WorkQueue
from forecaster.usecases.retrain import EpochProgress

FLEET_THREADS = 64  # train series in hand at once when fleets pay: the most one fleet gathers

_TRAINING: dict[str, threading.Lock] = {}  # database URL -> the lock its train runs take
_TRAINING_GUARD = threading.Lock()
STOP_POLL_S = 0.5  # how often a train run waiting for another checks whether it should stop instead

OnStart = Callable[[str], EpochProgress | None]  # a series begins; may return its per-epoch progress callback
OnDone = Callable[[SeriesResult], None]  # a series' result was recorded


class InProcessQueue:
    """Job runs executed by this process (see the module docstring)."""

    description = "in-process"
    runs_in_process = True

    def __init__(self, sm: sessionmaker[Session], settings: Settings, *, retry: RetryPolicy | None = None) -> None:
        self._sm, self._settings, self._retry = sm, settings, retry
        self._stop = threading.Event()
        self._one_at_a_time = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._in_hand = threading.local()  # per executing thread: runs started by the run in hand

    def submit(self, run_id: int, *, kind: str, keys: Sequence[str], snapshot_fallback: bool = False) -> None:
        """Execute the run on a background thread, after any run submitted before it."""
        follow_ups: list[tuple[int, bool]] | None = getattr(self._in_hand, "follow_ups", None)
        if follow_ups is not None:  # started by the run this thread executes (its drift retrain): runs next, here
            follow_ups.append((run_id, snapshot_fallback))
            return

        def work() -> None:
            with self._one_at_a_time:  # one run at a time: the same series never trains twice at once
                try:
                    self.execute(run_id, snapshot_fallback=snapshot_fallback)
                except Exception:  # noqa: BLE001 - recorded on the run row already
                    log_event("job.crashed", run_id=run_id, exc_info=True)

        t = threading.Thread(target=work, name=f"job-run-{run_id}", daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop between series and wait for the run in hand."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout_s)

    def execute(self, run_id: int, *, stop: threading.Event | None = None, snapshot_fallback: bool = False,
                on_start: OnStart | None = None, on_done: OnDone | None = None, one_by_one: bool = False,
                batch_refresh: bool = False) -> jobruns.JobRunView:
        """Execute queued run ``run_id`` on this thread, then the runs it started; return it as it ended.

        ``stop`` (default: this executor's own, set by ``shutdown``) ends the run
        between series. ``one_by_one``: never train in fleets. ``batch_refresh``:
        an ingest of several series refreshes their stored forecasts once, at the
        end, in batched passes per model shape. ``ok``/``partial``/``failed`` as
        ``jobruns.record_result`` decides; ``interrupted`` when stopped.

        Raises:
            RunNotFound: no such run.
        """
        stop = stop or self._stop
        self._in_hand.follow_ups = []
        try:
            run = self._execute(run_id, stop, snapshot_fallback, on_start, on_done, one_by_one, batch_refresh)
            while self._in_hand.follow_ups:
                follow_up, fallback = self._in_hand.follow_ups.pop(0)
                self._execute(follow_up, stop, fallback, None, None, one_by_one, False)
        finally:
            self._in_hand.follow_ups = None
        return run

    def _execute(self, run_id: int, stop: threading.Event, snapshot_fallback: bool, on_start: OnStart | None,
                 on_done: OnDone | None, one_by_one: bool, batch_refresh: bool) -> jobruns.JobRunView:
        run = jobruns.get_run(self._sm, run_id)
        if run.kind != "train":
            return self._execute_run(run, stop, snapshot_fallback, on_start, on_done, one_by_one, batch_refresh)
        lock = training_lock(self._sm)
        while not lock.acquire(timeout=STOP_POLL_S):  # another train run of this process is going
            if stop.is_set():
                return jobruns.close_stopped(self._sm, run_id)
        try:
            return self._execute_run(run, stop, snapshot_fallback, on_start, on_done, one_by_one, batch_refresh)
        finally:
            lock.release()

    def _execute_run(self, run: jobruns.JobRunView, stop: threading.Event, snapshot_fallback: bool,
                     on_start: OnStart | None, on_done: OnDone | None, one_by_one: bool,
                     batch_refresh: bool) -> jobruns.JobRunView:
        run_id = run.id
        keys = list(run.series_keys or [])
        refresh = BatchedRefresh() if batch_refresh and run.kind == "ingest" and len(keys) > 1 else None
        gather = None
        if run.kind == "train" and not one_by_one and len(keys) > 1 and self._settings.workers.fleet_wait_s > 0 \
                and fleets_pay(s for s in self._settings.series if s.key in keys):
            gather = FleetGatherer(self._settings.workers.fleet_wait_s, max_size=min(len(keys), FLEET_THREADS))

        halt = threading.Event()  # a series broke the run: the pool's other series start no more

        def one(key: str) -> bool:
            """Run one series unless stopping; False when it was not started."""
            if stop.is_set() or halt.is_set():
                return False
            result = run_series(self._sm, self._settings, run_id=run_id, kind=run.kind, series_key=key,
                                retry=self._retry if run.kind == "ingest" else None, stop=stop,
                                snapshot_fallback=snapshot_fallback, queue=self, gather=gather,
                                progress=on_start(key) if on_start else None, after_write=refresh)
            if on_done:
                on_done(result)
            return True

        try:
            if gather is None:
                started = all(one(key) for key in keys)  # all() stops at the first series not started
            else:
                with ThreadPoolExecutor(min(len(keys), FLEET_THREADS), thread_name_prefix=f"job-run-{run_id}") as pool:
                    try:
                        started = all(list(pool.map(one, keys)))
                    except BaseException:
                        halt.set()
                        raise
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            _close_quietly(self._sm, run_id, status, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if refresh is not None:
                refresh.flush(self._sm)
        if not started:
            return jobruns.close_stopped(self._sm, run_id)
        jobruns.close_if_empty(self._sm, run_id)
        return jobruns.get_run(self._sm, run_id)


def training_lock(sm: sessionmaker[Session]) -> threading.Lock:
    """The lock every train run on ``sm``'s database holds while it executes in this process."""
    url = sm.kw["bind"].url.render_as_string(hide_password=False)
    with _TRAINING_GUARD:
        return _TRAINING.setdefault(url, threading.Lock())


def training_threads(configured: int | None = None, *, serving: bool = False) -> int:
    """torch intra-op threads for training here: ``configured`` when given, else the cores this
    process may use (its CPU affinity), one of them left to the API when it serves from this process."""
    if configured:
        return configured
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1) if serving else max(1, cores)


def _close_quietly(sm: sessionmaker[Session], run_id: int, status: str, error: str) -> None:
    """Close a run whose executor broke, if the database still answers (else the next leader marks it abandoned)."""
    try:
        jobruns.close_stopped(sm, run_id, status=status, error=error)
    except Exception:  # noqa: BLE001 - the original error is what the caller raises
        log_event("job.close_failed", run_id=run_id, exc_info=True)


def make_queue(sm: sessionmaker[Session], settings: Settings, *, retry: RetryPolicy | None = None) -> WorkQueue:
    """The executor ``settings`` asks for: tasks on PostgreSQL, this process otherwise
    (retrying an unavailable source by ``retry``)."""
    if settings.workers.uses_queue(settings.database_url):
        return TaskQueue(sm, settings)
    return InProcessQueue(sm, settings, retry=retry)


@dataclass(frozen=True)
class RunReport:
    """A job run executed here, as it ended, with each series' result in the run's order."""

    run: jobruns.JobRunView
    results: list[SeriesResult]  # the series it did not reach (stopped) are absent


def run_here(sm: sessionmaker[Session], settings: Settings, *, kind: str, keys: Sequence[str] | None = None,
             snapshot_fallback: bool = False, one_by_one: bool = False, on_start: OnStart | None = None,
             on_done: OnDone | None = None, cold: bool = False) -> RunReport:
    """Record a job run (trigger ``manual``) over ``keys`` (all when None) and execute it on this thread.

    What `forecaster ingest`, `train` and `up` do, whatever the database: the
    same run, series results and drift retrain as any other executor, with an
    ingest's stored forecasts refreshed in batched passes at the end.

    Raises:
        InvalidInput: unknown kind.
        SeriesNotFound: a key is not configured.
    """
    if kind == "ingest":
        sync_all_series(sm, settings)  # every configured series is listed before any ingest
    run = jobruns.create_run(sm, settings, kind=kind, keys=keys, trigger="manual", cold=cold)
    results: dict[str, SeriesResult] = {}

    def done(result: SeriesResult) -> None:
        results[result.series_key] = result
        if on_done is not None:
            on_done(result)

    ended = InProcessQueue(sm, settings).execute(run.id, snapshot_fallback=snapshot_fallback, on_start=on_start,
                                                 on_done=done, one_by_one=one_by_one, batch_refresh=True)
    return RunReport(ended, [results[k] for k in run.series_keys or [] if k in results])
