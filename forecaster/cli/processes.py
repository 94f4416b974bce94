"""The commands that set up or run a process: `migrate`, `serve`, `scheduler`, `worker`, `up`."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from sqlalchemy.orm import Session, sessionmaker

from forecaster.cli.app import app, err, fail, handle_errors, open_db, out, settings
from forecaster.cli.runs import run_ingest
from forecaster.config.settings import Settings
from forecaster.logs import log_event

if TYPE_CHECKING:
    from forecaster.usecases.jobs import SeriesResult
    from forecaster.usecases.retrain import EpochProgress

API_WAIT_S = 15.0  # start-up training waits this long at most for the API to answer first
DATABASE_RETRY_S = 2.0  # while the database is away at start, `up` tries it this often
PROGRESS_EVERY_S = 5.0  # a training series prints its epoch at most this often


@app.command()
@handle_errors
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision (default head).")] = "head",
    downgrade: Annotated[bool, typer.Option(help="Go down to REVISION instead (e.g. base).")] = False,
) -> None:
    """Bring the database schema to the head revision (or another one)."""
    from forecaster.usecases.database import move_schema, open_database

    s = settings()
    engine, _ = open_database(s.database_url)
    before, after = move_schema(engine, revision, down=downgrade)
    url = engine.url.render_as_string(hide_password=True)
    engine.dispose()
    out.print(f"database {url}: schema {before or 'empty'} -> {after or 'empty'}", highlight=False)


@app.command()
@handle_errors
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (1-65535).")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the HTTP API (uvicorn). Reads forecasts from the database; never trains.

    Starts whatever the database does: while it is unreachable /healthz answers 200,
    /readyz and the data routes 503, and the API recovers by itself when it returns."""
    from sqlalchemy.exc import DBAPIError

    if not 1 <= port <= 65535:
        fail(f"--port {port} is not a TCP port: use 1-65535")
    if workers < 1:
        fail(f"--workers {workers}: at least 1 worker process is needed")

    from forecaster import plugins
    from forecaster.usecases.ingest import sync_all_series

    s = settings()
    try:
        sm = open_db(s)  # fails early, with a clear message, if the schema is not at head
    except DBAPIError as exc:
        reason = f"{type(exc.orig or exc).__name__}: {exc.orig or exc}".splitlines()[0]
        log_event("api.database_unreachable", level=logging.WARNING, error=reason)
        err.print(escape(f"warning: database unreachable at start ({reason}); serving anyway: /readyz and the "
                         "data routes answer 503 until it answers"), highlight=False, soft_wrap=True)
    else:
        try:
            sync_all_series(sm, s)  # configured series are listed before any ingest
        except DBAPIError:
            pass  # lost between the two: the next ingest does it
        finally:
            sm.kw["bind"].dispose()
    plugins.load("api")(s, host=host, port=port, workers=workers)


@app.command()
@handle_errors
def scheduler() -> None:
    """Run ingest and retrain on their cron schedules (one leader among many processes).

    A database that is away or not yet migrated is waited for (a log line each try)."""
    from forecaster import plugins

    s = settings()
    raise typer.Exit(plugins.load("scheduler")(s))


@app.command()
@handle_errors
def worker(
    concurrency: Annotated[int | None, typer.Option(
        min=1, max=64, help="Tasks run at once (default: workers.concurrency, 1).")] = None,
    queues: Annotated[str | None, typer.Option(
        help="Comma-separated queues to take tasks from: train, ingest (default: both).")] = None,
    torch_threads: Annotated[int | None, typer.Option(
        min=1, max=1024,
        help="torch threads for training (default: workers.torch_threads, else every core); "
             "several workers on one machine: cores / workers.")] = None,
) -> None:
    """Claim training and ingest tasks from the PostgreSQL queue and run them (any number, on any machine)."""
    from forecaster import plugins

    s = settings()
    if torch_threads is not None:
        s = s.model_copy(update={"workers": s.workers.model_copy(update={"torch_threads": torch_threads})})
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues is not None else None
    if names is not None and not names:
        fail(f"--queues {queues!r} names no queue (known: train, ingest)")
    raise typer.Exit(plugins.load("worker")(s, concurrency=concurrency, queues=names))


class TrainBehind:
    """`forecaster up`'s own work behind the API, on one thread: (when the database was away at
    start) wait for it, migrate and ingest; then train the series that need it, printing a line
    per series and its epochs every few seconds.

    The training is a job run (trigger ``startup``) executed by the in-process executor in a
    child process (so that it never holds the API's GIL), under this process's train lock, so it
    waits for, and is waited for by, any other train run of this process (API trigger, cron).
    ``shutdown`` abandons the series in training at its next epoch (nothing of it is stored)
    and the run ends ``interrupted``.
    """

    def __init__(self, s: Settings, *, threads: int, api: tuple[str, int], train: bool) -> None:
        self._s, self._threads, self._api, self._train = s, threads, api, train
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, sm: sessionmaker[Session] | None) -> None:
        """Go, on a daemon thread; ``sm`` None: the database is away, wait for it and bring it up first."""
        if sm is None or self._train:
            self._thread = threading.Thread(target=self._work, args=(sm,), name="up-train-behind", daemon=True)
            self._thread.start()

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop at the next epoch (or the next database try) and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _work(self, sm: sessionmaker[Session] | None) -> None:
        try:
            if sm is None:
                sm = self._wait_for_database()
                if sm is None:
                    return
                run_ingest(self._s, sm, None, snapshot_fallback=self._s.snapshot_fallback)
            if self._train:
                self._train_needing(sm)
        except KeyboardInterrupt:  # raised at an epoch's end by _progress on shutdown
            log_event("up.training_stopped")
        except Exception:  # noqa: BLE001 - a thread has no caller: logged, the API keeps serving
            log_event("up.crashed", level=logging.ERROR, exc_info=True)

    def _wait_for_database(self) -> sessionmaker[Session] | None:
        """Migrate as soon as the database answers (None: stopped first)."""
        from sqlalchemy.exc import DBAPIError

        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            try:
                sm = open_db(self._s, migrate=True)
            except DBAPIError as exc:
                if attempt % 15 == 1:  # once in a while: the scheduler logs its own tries too
                    log_event("up.database_unavailable", level=logging.WARNING, attempt=attempt,
                              error=str(exc.orig or exc).strip().splitlines()[0], retry_s=DATABASE_RETRY_S)
                self._stop.wait(DATABASE_RETRY_S)
                continue
            log_event("up.database_available", attempts=attempt)
            out.print("database answers: schema at head; ingesting", highlight=False)
            return sm
        return None

    def _api_answers(self) -> bool:
        host, port = self._api
        try:
            with socket.create_connection(("127.0.0.1" if host in ("0.0.0.0", "::", "") else host, port), 0.5):
                return True
        except OSError:
            return False

    def _train_needing(self, sm: sessionmaker[Session]) -> None:
        import multiprocessing

        from forecaster.usecases.executor import STOP_POLL_S, training_lock
        from forecaster.usecases.jobs import get_run, record_run
        from forecaster.usecases.retrain import needs_training

        todo = needs_training(sm, self._s)
        if not todo:
            out.print("every series already has a model and no new data since: nothing to train")
            return
        deadline = time.monotonic() + API_WAIT_S
        while not self._api_answers() and time.monotonic() < deadline and not self._stop.is_set():
            self._stop.wait(0.1)  # the API opens its port first: baselines are served meanwhile
        log_event("up.training", series=len(todo), torch_threads=self._threads, process="child")
        run = record_run(sm, self._s, kind="train", keys=todo, trigger="startup")
        out.print(f"training {len(todo)} series behind the API (job run {run.id}, {self._threads} torch "
                  f"thread{'s' if self._threads > 1 else ''}, in a child process); each serves its model once "
                  "promoted, a baseline until then", highlight=False)
        started = time.monotonic()
        # This process's train lock is held for the child's run: an API-triggered or cron train run
        # here waits for it, as for any other train run of this process.
        lock = training_lock(sm)
        while not lock.acquire(timeout=STOP_POLL_S):
            if self._stop.is_set():
                return
        try:
            # A child process, not a thread: training holds the GIL for whole epochs' worth of Python
            # and would stall the API's event loop in between its requests (GET p99 262 ms measured).
            ctx = multiprocessing.get_context("spawn")
            stop = ctx.Event()
            child = ctx.Process(target=_train_child, args=(self._s, run.id, self._threads, len(todo), stop),
                                name="forecaster-up-train", daemon=True)
            child.start()
            while child.is_alive():
                if self._stop.is_set():
                    stop.set()  # the child abandons its series at the next epoch and records the run
                    child.join(CHILD_STOP_S)
                    break
                child.join(0.5)
            if child.is_alive():
                child.terminate()
        finally:
            lock.release()
        ended = get_run(sm, run.id)
        out.print(f"training {ended.status}: {ended.series_done} of {ended.series_total} series in "
                  f"{time.monotonic() - started:.0f}s", highlight=False)


CHILD_STOP_S = 30.0  # how long a stopping `up` waits for its training child to record its run


def _train_child(s: Settings, run_id: int, threads: int, total: int, stop: Any) -> None:
    """The start-up training, in its own process: run ``run_id`` through the in-process executor,
    printing a line per series and its epochs; ``stop`` (a multiprocessing Event) ends it at the
    next epoch. Ctrl-C in the terminal goes to the parent, which sets ``stop``."""
    import os
    import signal

    import torch

    from forecaster.usecases.executor import InProcessQueue

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.nice(5)  # the API's requests come first
    except OSError:
        pass
    torch.set_num_threads(threads)
    sm = open_db(s)
    shown = _Shown(total=total)
    stopping = threading.Event()

    def watch() -> None:  # mirror the parent's event into the thread Event the executor polls
        stop.wait()
        stopping.set()

    threading.Thread(target=watch, daemon=True).start()

    def on_start(key: str) -> EpochProgress:
        shown.begin(key)
        return _progress(key, time.monotonic(), stopping)

    try:
        InProcessQueue(sm, s).execute(run_id, stop=stopping, on_start=on_start, on_done=shown.done, one_by_one=True)
    except KeyboardInterrupt:  # raised at an epoch's end by _progress when stopping; the run is recorded
        log_event("up.training_stopped")


def _progress(key: str, began: float, stop: threading.Event) -> EpochProgress:
    last = [began]

    def progress(epoch: int, epochs: int, val_loss: float) -> None:
        if stop.is_set():
            raise KeyboardInterrupt(f"{key}: abandoned at epoch {epoch}: forecaster up is stopping")
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or epoch == epochs:
            last[0] = now
            left = (now - began) / epoch * (epochs - epoch)
            out.print(escape(f"  {key}: epoch {epoch}/{epochs}, val loss {val_loss:.4f}, at most ~{left:.0f}s "
                             "left (early stopping may end it sooner)"), highlight=False)

    return progress


class _Shown:
    """The per-series lines of a start-up training: i of n, how long, what serves now."""

    def __init__(self, total: int) -> None:
        self.total, self.count, self.began, self.spent = total, 0, time.monotonic(), 0.0

    def begin(self, key: str) -> None:
        self.count += 1
        self.began = time.monotonic()
        done = self.count - 1
        left = f", ~{self.spent / done * (self.total - done):.0f}s left for the rest" if done else ""
        out.print(escape(f"training {key} ({self.count} of {self.total}{left})"), highlight=False)

    def done(self, result: SeriesResult) -> None:
        took = time.monotonic() - self.began
        self.spent += took
        serves = (f"/v1/series/{result.series_key}/forecast now serves this version" if result.status == "promoted"
                  else "what served it before still does")
        out.print(escape(f"  {result.series_key}: {result.status} ({result.detail or ''}) in {took:.0f}s; {serves}"),
                  highlight=False, soft_wrap=True)


@app.command()
@handle_errors
def up(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    train_models: Annotated[bool, typer.Option(
        "--train/--no-train",
        help="Train series that need it (no model yet, or new data since their latest version), behind the API.",
    )] = True,
) -> None:
    """All in one: migrate, ingest (bundled snapshot when offline), then serve the API with the
    scheduler in the same process at once, baselines first, while the series that need it train
    behind (one at a time; each serves its model the moment it is promoted).

    A database that is away at start is waited for while the API serves (/healthz 200, data
    routes 503); the migrate, ingest and training follow when it answers. Ctrl-C stops cleanly:
    the series in training is abandoned at its next epoch and the run recorded ``interrupted``."""
    from sqlalchemy.exc import DBAPIError

    from forecaster import plugins
    from forecaster.usecases.executor import training_threads

    s = settings()
    start_scheduler = plugins.load("scheduler_background")
    serve_api = plugins.load("api")
    behind = TrainBehind(s, threads=training_threads(s.workers.torch_threads, serving=True),
                         api=(host, port), train=train_models)
    try:
        sm = open_db(s, migrate=True)
    except DBAPIError as exc:
        reason = f"{type(exc.orig or exc).__name__}: {exc.orig or exc}".splitlines()[0]
        log_event("up.database_unreachable", level=logging.WARNING, error=reason)
        err.print(escape(f"warning: database unreachable at start ({reason}); serving anyway: /readyz and the data "
                         "routes answer 503 until it answers, then it is migrated, ingested and trained"),
                  highlight=False, soft_wrap=True)
        behind.start(None)
    else:
        engine = sm.kw["bind"]
        out.print(f"[bold]forecaster up[/]: database {engine.url.render_as_string(hide_password=True)} (schema at "
                  f"head), {len(s.series)} series from {s.config_path or 'defaults'}", highlight=False)
        run_ingest(s, sm, None, snapshot_fallback=s.snapshot_fallback)
        behind.start(sm)
    handle = start_scheduler(s)
    out.print(f"scheduler: ingest '{s.schedule.ingest}', retrain '{s.schedule.retrain}' (cron, UTC)", highlight=False)
    out.print(f"[bold green]serving[/] http://{host}:{port}  (dashboard /, API docs /docs, forecasts "
              f"/v1/series/{{key}}/forecast) — Ctrl-C to stop", highlight=False)
    try:
        serve_api(s, host=host, port=port, workers=1)
    finally:
        behind.shutdown()
        handle.shutdown()
        out.print("stopped")
