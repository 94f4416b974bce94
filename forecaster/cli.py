"""The ``forecaster`` command line: thin adapters over the library.

Every command reads ``forecaster.toml`` from the working directory unless
``--config PATH`` or ``FORECASTER_CONFIG`` names another. A ForecasterError is
printed as one line naming the bad value, and the command exits 2.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from forecaster.config.loading import load_settings
from forecaster.config.settings import Settings
from forecaster.errors import ForecasterError, StorageUnavailable

app = typer.Typer(
    help="Self-hosted time-series forecasting: ingest, train, gate, serve, track.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output (cron mail, CI logs, `make run | tee`) gets wide tables instead of 80 columns.
# emoji=False: series keys like "sine:a:b" must not turn into emoji codes.
out = Console(width=None if sys.stdout.isatty() else 160, emoji=False)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160, emoji=False)
F = TypeVar("F", bound=Callable[..., Any])


class _State:
    config: str | None = None
    log_file: str | None = None


state = _State()


@app.callback()
def _main(
    config: Annotated[str | None, typer.Option("--config", "-c", help="Config file (default: ./forecaster.toml or $FORECASTER_CONFIG).")] = None,
    log_file: Annotated[str | None, typer.Option("--log-file", help="Also append the log lines to this file (overrides log_file).")] = None,
) -> None:
    state.config = config
    state.log_file = log_file


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Turn expected failures into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ForecasterError as exc:
            fail(str(exc))
        except OperationalError as exc:
            fail(f"database unreachable: {exc.orig or exc}".splitlines()[0])
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def settings() -> Settings:
    from forecaster.logs import configure_logging

    s = load_settings(state.config)
    if state.log_file:
        s = s.model_copy(update={"log_file": state.log_file})
    configure_logging(s.log_level, log_file=s.log_file)
    return s


def open_db(s: Settings, *, migrate: bool = False) -> sessionmaker[Session]:
    """Engine + sessionmaker for the configured database; optionally migrate to head.

    Raises:
        StorageUnavailable: the schema is not at head and ``migrate`` is false.
    """
    from forecaster.store import migrate as mig
    from forecaster.store.tables import make_engine, make_sessionmaker

    engine = make_engine(s.database_url)
    if migrate:
        mig.upgrade(engine)
    elif not mig.at_head(engine):
        raise StorageUnavailable(
            f"database schema is at {mig.current_revision(engine) or 'nothing'}, not {mig.head_revision()}: "
            "run `forecaster migrate` first"
        )
    return make_sessionmaker(engine)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


# ---------------------------------------------------------------- migrate


@app.command()
@handle_errors
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision (default head).")] = "head",
    downgrade: Annotated[bool, typer.Option(help="Go down to REVISION instead (e.g. base).")] = False,
) -> None:
    """Bring the database schema to the head revision (or another one)."""
    from forecaster.store import migrate as mig
    from forecaster.store.tables import make_engine

    s = settings()
    engine = make_engine(s.database_url)
    before = mig.current_revision(engine)
    (mig.downgrade if downgrade else mig.upgrade)(engine, revision)
    after = mig.current_revision(engine)
    url = engine.url.render_as_string(hide_password=True)
    engine.dispose()
    out.print(f"database {url}: schema {before or 'empty'} -> {after or 'empty'}", highlight=False)


# ---------------------------------------------------------------- ingest


INGEST_COLOURS = {"ok": "green", "snapshot": "yellow", "unavailable": "yellow", "failed": "red"}  # as the dashboard


def ingest_table(outcomes: list[Any]) -> Table:
    table = Table(title="ingest", title_justify="left")
    for col in ("series", "status", "new", "updated", "unchanged", "rejected", "last observation", "note"):
        table.add_column(col, justify="right" if col in ("new", "updated", "unchanged", "rejected") else "left")
    for o in outcomes:
        colour = INGEST_COLOURS[o.status]
        note = o.error if o.status == "failed" else "; ".join(o.notes)
        table.add_row(
            escape(o.series_key), f"[{colour}]{o.status}[/]", str(o.rows_new), str(o.rows_updated),
            str(o.rows_unchanged), str(o.rows_rejected),
            o.last_ts.strftime("%Y-%m-%d %H:%M UTC") if o.last_ts else "-", escape(note or ""),
        )
    return table


def run_ingest(s: Settings, sm: sessionmaker[Session], keys: list[str] | None, *, snapshot_fallback: bool) -> list[Any]:
    from forecaster.usecases import ingest
    from forecaster.usecases.forecasting import BatchedRefresh, refresh_after_ingest

    specs = [sp for sp in ingest.select_specs(s, keys) if sp.source != "push"]
    # Many series: their stored forecasts are refreshed at the end, in batched passes per model shape.
    batched = BatchedRefresh() if len(specs) > 1 else None
    ingest.sync_all_series(sm, s)
    with progress_bar() as bar:
        task = bar.add_task("ingest", total=len(specs))

        def done(o: Any) -> None:
            bar.update(task, advance=1, description=o.series_key)

        outcomes = ingest.ingest_many(sm, s, specs, snapshot_fallback=snapshot_fallback, on_done=done,
                                      after_write=batched or refresh_after_ingest)
        if batched is not None:
            batched.flush(sm)
    out.print(ingest_table(outcomes))
    for o in outcomes:
        if o.status in ("snapshot", "unavailable"):
            out.print(f"[yellow]{escape(o.series_key)}: {o.status}: {escape(o.error or '')}[/]", highlight=False)
    return outcomes


@app.command()
@handle_errors
def ingest(
    series: Annotated[list[str] | None, typer.Option("--series", "-s", help="Only this series key (repeatable).")] = None,
    snapshot: Annotated[bool, typer.Option(help="Fall back to the bundled snapshot when a source is unreachable.")] = False,
) -> None:
    """Fetch every configured series (or --series KEY) and upsert new observations."""
    s = settings()
    sm = open_db(s)
    outcomes = run_ingest(s, sm, series, snapshot_fallback=snapshot)
    if any(o.status == "failed" for o in outcomes):
        raise typer.Exit(1)


# ---------------------------------------------------------------- observations


observations_app = typer.Typer(help="Stored observations: repair what should not have got in.", no_args_is_help=True)
app.add_typer(observations_app, name="observations")


def _aware(name: str, text: str) -> Any:
    import datetime as dt

    try:
        ts = dt.datetime.fromisoformat(text)
    except ValueError:
        fail(f"--{name} {text!r} is not an ISO-8601 time such as '2024-01-01T00:00:00Z'")
    if ts.tzinfo is None:
        fail(f"--{name} {text!r} has no UTC offset; add one, such as '2024-01-01T00:00:00Z'")
    return ts


@observations_app.command("delete")
@handle_errors
def observations_delete(
    key: Annotated[str, typer.Argument(help="Series key.")],
    start: Annotated[str, typer.Option(help="Delete ts >= START (ISO-8601 with an offset).")],
    end: Annotated[str, typer.Option(help="Delete ts <= END (ISO-8601 with an offset).")],
) -> None:
    """Delete a series' observations in [START, END]; forecasts and live accuracy follow (one transaction)."""
    from forecaster.usecases.observations import delete_observations

    t0, t1 = _aware("start", start), _aware("end", end)
    s = settings()
    sm = open_db(s)
    result = delete_observations(sm, s, series_key=key, start=t0, end=t1)
    forecast = result.forecast
    after = f"; next forecast {forecast.target_ts:%Y-%m-%d %H:%M} UTC = {forecast.value:.4g}" if forecast else ""
    out.print(escape(f"{key}: deleted {result.deleted} observations in [{t0.isoformat()}, {t1.isoformat()}] "
                     f"(ingest run {result.ingest_run_id}){after}"), highlight=False)


# ---------------------------------------------------------------- train and the registry


def _fmt(x: Any, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def train_table(reports: list[Any]) -> Table:
    table = Table(title="train: holdout MASE of the new version vs the baselines (lower is better)", title_justify="left")
    for col in ("series", "status", "version", "model", "naive", "seasonal", "champion", "coverage", "device", "time"):
        table.add_column(col)
    for r in reports:
        m = r.metrics or {}
        colour = {"promoted": "green", "rejected": "yellow", "skipped": "dim", "failed": "red"}[r.status]
        cov = (m.get("interval") or {}).get("coverage")
        table.add_row(
            escape(r.series_key), f"[{colour}]{r.status}[/]", f"v{r.version}" if r.version else "-",
            _fmt((m.get("model") or {}).get("mase")), _fmt((m.get("naive") or {}).get("mase")),
            _fmt((m.get("seasonal_naive") or {}).get("mase")), _fmt((m.get("champion") or {}).get("mase")),
            "-" if cov is None else f"{cov:.0%}", r.device or "-", f"{r.duration_s:.1f}s",
        )
    return table


def run_train(s: Settings, sm: sessionmaker[Session], keys: list[str] | None, one_by_one: bool = False) -> list[Any]:
    from forecaster.usecases import ingest
    from forecaster.usecases import retrain as training

    specs = ingest.select_specs(s, keys)
    with progress_bar() as bar:
        overall = bar.add_task("train", total=len(specs))
        current: dict[str, Any] = {}

        def on_start(spec: Any) -> Any:
            current["task"] = bar.add_task(f"  {spec.key}", total=None)

            def progress(epoch: int, epochs: int, val_loss: float) -> None:
                bar.update(current["task"], completed=epoch, total=epochs,
                           description=f"  {spec.key} val={val_loss:.4f}")

            return progress

        def on_done(report: Any) -> None:
            bar.remove_task(current.pop("task"))
            bar.update(overall, advance=1)

        reports = training.retrain_many(sm, s, specs, on_start=on_start, on_done=on_done, one_by_one=one_by_one)
    out.print(train_table(reports))
    for r in reports:
        if r.status != "promoted" and r.reason:
            out.print(escape(f"{r.series_key}: {r.reason}"), highlight=False, soft_wrap=True)
    return reports


@app.command()
@handle_errors
def train(
    series: Annotated[list[str] | None, typer.Option("--series", "-s", help="Only this series key (repeatable).")] = None,
    one_by_one: Annotated[bool, typer.Option(
        "--one-by-one", help="Train each series alone in turn, never in fleets (fleets: on a GPU, or amp groups of 16+ on a bf16 CPU).")] = False,
) -> None:
    """Train a new model version per series, gate it against the baselines and the champion.

    Where it pays (a GPU; amp LSTM/RNN groups of 16+ on a CPU with native bfloat16), series of one
    model shape are trained together as a fleet (one batched pass per step); each still gets its
    own data, seed, early stopping, metrics, gate and version.
    """
    s = settings()
    sm = open_db(s)
    reports = run_train(s, sm, series, one_by_one)
    if any(r.status == "failed" for r in reports):
        raise typer.Exit(1)


models_app = typer.Typer(help="Model versions in the registry.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
@handle_errors
def models_list(key: Annotated[str, typer.Argument(help="Series key.")]) -> None:
    """Versions of a series with holdout metrics side by side with the baselines."""
    from forecaster.store import registry

    s = settings()
    sm = open_db(s)
    with sm() as session:
        versions = registry.list_versions(session, series_key=key)
    table = Table(title=escape(f"{key}: model versions (holdout MASE; 'serves' was chosen on validation)"),
                  title_justify="left")
    for col in ("version", "status", "created", "cell", "serves", "served", "model", "naive", "seasonal",
                "champion", "MAE", "reason"):
        table.add_column(col)
    for v in versions:
        m = v.metrics
        served = m.get("served") or {"label": "recurrent model", "mase": m["model"]["mase"]}
        table.add_row(
            f"v{v.version}" + (" *" if v.is_champion else ""), v.status, f"{v.created_at:%Y-%m-%d %H:%M}",
            str(v.hyperparameters.get("cell", "-")), escape(str(served["label"])), _fmt(served["mase"]),
            _fmt(m["model"]["mase"]), _fmt(m["naive"]["mase"]),
            _fmt((m.get("seasonal_naive") or {}).get("mase")), _fmt((m.get("champion") or {}).get("mase")),
            _fmt(m["model"]["mae"]), escape(v.status_reason or ""),
        )
    out.print(table if versions else escape(f"{key} has no model versions yet: run `forecaster train`"))


def _serving(champ: Any) -> str:
    return "the baseline" if champ.version is None else f"v{champ.version}"


def _forecast_line(change: Any) -> str:
    f = change.forecast
    if f is None:
        return ""
    made_by = f"v{f.model_version}" if f.model_version is not None else f.method
    return f"; stored forecast for {f.target_ts:%Y-%m-%d %H:%M} UTC: {f.value:.6g} ({made_by})"


@app.command()
@handle_errors
def promote(key: Annotated[str, typer.Argument(help="Series key.")],
            version: Annotated[int, typer.Argument(help="Version number to serve.")],
            force: Annotated[bool, typer.Option("--force", help="Serve it even though the gate rejected it.")] = False,
            ) -> None:
    """Make VERSION the series' champion (and store its forecast); a version the gate
    rejected needs --force."""
    from forecaster.usecases import models

    s = settings()
    sm = open_db(s)
    change = models.promote_version(sm, series_key=key, version=version, force=force)
    champ = change.champion
    if not champ.changed:
        was = "it already was"
    else:
        was = "was the baseline" if champ.previous_version is None else f"was v{champ.previous_version}"
    out.print(escape(f"{key}: champion is now v{champ.version} ({was}){_forecast_line(change)}"), highlight=False)
    gate = "passed" if champ.gate_passed else "rejected it"
    line = f"gate {gate}: {champ.gate_reason}" + ("; served anyway (--force)" if champ.forced else "")
    (err if champ.forced else out).print(escape(line), highlight=False, soft_wrap=True)


@app.command()
@handle_errors
def baseline(key: Annotated[str, typer.Argument(help="Series key.")]) -> None:
    """Serve the series' baseline (naive or seasonal naive) instead of a model version.

    `forecaster rollback KEY` returns to the version that served; a later retrain whose
    version passes the gate is promoted as usual."""
    from forecaster.usecases import models

    s = settings()
    sm = open_db(s)
    change = models.serve_baseline(sm, series_key=key)
    champ = change.champion
    was = "it already was" if not champ.changed else f"was v{champ.previous_version}"
    out.print(escape(f"{key}: the baseline serves now ({was}){_forecast_line(change)}"), highlight=False)


@app.command()
@handle_errors
def rollback(key: Annotated[str, typer.Argument(help="Series key.")]) -> None:
    """Serve again what served before the last move: an earlier version, or the baseline."""
    from forecaster.usecases import models

    s = settings()
    sm = open_db(s)
    change = models.rollback(sm, series_key=key)
    champ = change.champion
    before = "the baseline" if champ.previous_version is None else f"v{champ.previous_version}"
    out.print(escape(f"{key}: rolled back from {before} to {_serving(champ)}{_forecast_line(change)}"),
              highlight=False)


# ---------------------------------------------------------------- processes


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
    from forecaster.logs import log_event

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
    from forecaster.usecases.ingest import sync_all_series
    from forecaster.usecases.retrain import needs_training

    s = settings()
    sm = open_db(s, migrate=True)
    engine = sm.kw["bind"]
    out.print(f"[bold]forecaster up[/]: database {engine.url.render_as_string(hide_password=True)} (schema at head), "
              f"{len(s.series)} series from {s.config_path or 'defaults'}", highlight=False)
    sync_all_series(sm, s)
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


def main() -> None:
    """Console-script entry point."""
    app(prog_name="forecaster")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
