"""The commands that set up or run a process: `migrate`, `serve`, `scheduler`, `worker`, `up`."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.markup import escape

from forecaster.cli.app import app, err, fail, handle_errors, open_db, out, settings
from forecaster.cli.runs import run_ingest, run_train


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
    from forecaster.logs import log_event
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
    concurrency: Annotated[int | None, typer.Option(min=1, max=64, help="Tasks run at once (default: workers.concurrency, 1).")] = None,
    queues: Annotated[str | None, typer.Option(help="Comma-separated queues to take tasks from: train, ingest (default: both).")] = None,
    torch_threads: Annotated[int | None, typer.Option(min=1, max=1024, help="torch threads for training (default: workers.torch_threads, else every core); several workers on one machine: cores / workers.")] = None,
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


@app.command()
@handle_errors
def up(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    train_models: Annotated[bool, typer.Option("--train/--no-train", help="Train series that have no model yet.")] = True,
) -> None:
    """All in one: migrate, ingest (bundled snapshot when offline), train, then serve
    the API with the scheduler in the same process. Ctrl-C stops cleanly."""
    from forecaster import plugins
    from forecaster.usecases.retrain import needs_training

    s = settings()
    sm = open_db(s, migrate=True)
    engine = sm.kw["bind"]
    out.print(f"[bold]forecaster up[/]: database {engine.url.render_as_string(hide_password=True)} (schema at head), "
              f"{len(s.series)} series from {s.config_path or 'defaults'}", highlight=False)
    run_ingest(s, sm, None, snapshot_fallback=s.snapshot_fallback)
    if train_models:
        todo = needs_training(sm, s)
        if todo:
            run_train(s, sm, todo)
        else:
            out.print("every series already has a model and no new data since: skipping training")
    start_scheduler = plugins.load("scheduler_background")
    serve_api = plugins.load("api")
    handle = start_scheduler(s)
    out.print(f"scheduler: ingest '{s.schedule.ingest}', retrain '{s.schedule.retrain}' (cron, UTC)", highlight=False)
    out.print(f"[bold green]serving[/] http://{host}:{port}  (dashboard /, API docs /docs, forecasts "
              f"/v1/series/{{key}}/forecast) — Ctrl-C to stop", highlight=False)
    try:
        serve_api(s, host=host, port=port, workers=1)
    finally:
        handle.shutdown()
        out.print("stopped")
