"""The ``forecaster`` command line: thin adapters over the library.

Every command reads ``forecaster.toml`` from the working directory unless
``--config PATH`` or ``FORECASTER_CONFIG`` names another. A ForecasterError is
printed as one line naming the bad value, and the command exits 2.
"""

from __future__ import annotations

import functools
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

from forecaster.config import Settings, load_settings
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


state = _State()


@app.callback()
def _main(
    config: Annotated[str | None, typer.Option("--config", "-c", help="Config file (default: ./forecaster.toml or $FORECASTER_CONFIG).")] = None,
) -> None:
    state.config = config


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
    configure_logging(s.log_level)
    return s


def open_db(s: Settings, *, migrate: bool = False) -> sessionmaker[Session]:
    """Engine + sessionmaker for the configured database; optionally migrate to head.

    Raises:
        StorageUnavailable: the schema is not at head and ``migrate`` is false.
    """
    from forecaster import migrate as mig
    from forecaster.db import make_engine, make_sessionmaker

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
    from forecaster import migrate as mig
    from forecaster.db import make_engine

    s = settings()
    engine = make_engine(s.database_url)
    before = mig.current_revision(engine)
    (mig.downgrade if downgrade else mig.upgrade)(engine, revision)
    after = mig.current_revision(engine)
    url = engine.url.render_as_string(hide_password=True)
    engine.dispose()
    out.print(f"database {url}: schema {before or 'empty'} -> {after or 'empty'}", highlight=False)


# ---------------------------------------------------------------- ingest


def ingest_table(outcomes: list[Any]) -> Table:
    table = Table(title="ingest", title_justify="left")
    for col in ("series", "status", "new", "updated", "unchanged", "rejected", "last observation", "note"):
        table.add_column(col, justify="right" if col in ("new", "updated", "unchanged", "rejected") else "left")
    for o in outcomes:
        colour = {"ok": "green", "snapshot": "yellow", "failed": "red"}[o.status]
        note = o.error if o.status == "failed" else "; ".join(o.notes)
        table.add_row(
            escape(o.series_key), f"[{colour}]{o.status}[/]", str(o.rows_new), str(o.rows_updated),
            str(o.rows_unchanged), str(o.rows_rejected),
            o.last_ts.strftime("%Y-%m-%d %H:%M UTC") if o.last_ts else "-", escape(note or ""),
        )
    return table


def run_ingest(s: Settings, sm: sessionmaker[Session], keys: list[str] | None, *, snapshot_fallback: bool) -> list[Any]:
    from forecaster import ingest
    from forecaster.forecasting import refresh_after_ingest

    specs = [sp for sp in ingest.select_specs(s, keys) if sp.source != "push"]
    ingest.sync_all_series(sm, s)
    with progress_bar() as bar:
        task = bar.add_task("ingest", total=len(specs))

        def done(o: Any) -> None:
            bar.update(task, advance=1, description=o.series_key)

        outcomes = ingest.ingest_many(sm, s, specs, snapshot_fallback=snapshot_fallback, on_done=done,
                                      after_write=refresh_after_ingest)
    out.print(ingest_table(outcomes))
    for o in outcomes:
        if o.status == "snapshot":
            out.print(f"[yellow]{escape(o.series_key)}: source unreachable, used the bundled offline snapshot[/]",
                      highlight=False)
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


def run_train(s: Settings, sm: sessionmaker[Session], keys: list[str] | None) -> list[Any]:
    from forecaster import ingest
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

        reports = training.retrain_many(sm, s, specs, on_start=on_start, on_done=on_done)
    out.print(train_table(reports))
    for r in reports:
        if r.status != "promoted" and r.reason:
            out.print(escape(f"{r.series_key}: {r.reason}"), highlight=False, soft_wrap=True)
    return reports


@app.command()
@handle_errors
def train(
    series: Annotated[list[str] | None, typer.Option("--series", "-s", help="Only this series key (repeatable).")] = None,
) -> None:
    """Train a new model version per series, gate it against the baselines and the champion."""
    s = settings()
    sm = open_db(s)
    reports = run_train(s, sm, series)
    if any(r.status == "failed" for r in reports):
        raise typer.Exit(1)


models_app = typer.Typer(help="Model versions in the registry.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
@handle_errors
def models_list(key: Annotated[str, typer.Argument(help="Series key.")]) -> None:
    """Versions of a series with holdout metrics side by side with the baselines."""
    from forecaster import registry

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


@app.command()
@handle_errors
def promote(key: Annotated[str, typer.Argument(help="Series key.")],
            version: Annotated[int, typer.Argument(help="Version number to serve.")]) -> None:
    """Make VERSION the series' champion (and store its forecast)."""
    from forecaster import registry
    from forecaster.db import write_session
    from forecaster.forecasting import refresh_forecast
    from forecaster.ingest import series_by_key

    s = settings()
    sm = open_db(s)
    with write_session(sm) as session:
        champ = registry.promote(session, series_key=key, version=version)
        refresh_forecast(session, series_by_key(session, key))
    was = f"was v{champ.previous_version}" if champ.previous_version else "it already was, or there was none"
    out.print(escape(f"{key}: champion is now v{champ.version} ({was})"), highlight=False)


@app.command()
@handle_errors
def rollback(key: Annotated[str, typer.Argument(help="Series key.")]) -> None:
    """Give the champion alias back to the version that held it before."""
    from forecaster import registry
    from forecaster.db import write_session
    from forecaster.forecasting import refresh_forecast
    from forecaster.ingest import series_by_key

    s = settings()
    sm = open_db(s)
    with write_session(sm) as session:
        champ = registry.rollback(session, series_key=key)
        refresh_forecast(session, series_by_key(session, key))
    out.print(escape(f"{key}: rolled back from v{champ.previous_version} to v{champ.version}"), highlight=False)


# ---------------------------------------------------------------- processes


@app.command()
@handle_errors
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the HTTP API (uvicorn). Reads forecasts from the database; never trains."""
    from forecaster import plugins

    from forecaster.ingest import sync_all_series

    s = settings()
    sm = open_db(s)  # fails early, with a clear message, if the schema is not at head
    sync_all_series(sm, s)  # configured series are listed (and 404s say "no data yet") before any ingest
    sm.kw["bind"].dispose()
    plugins.load("api")(s, host=host, port=port, workers=workers)


@app.command()
@handle_errors
def scheduler() -> None:
    """Run ingest and retrain on their cron schedules (one leader among many processes)."""
    from forecaster import plugins

    s = settings()
    open_db(s).kw["bind"].dispose()
    raise typer.Exit(plugins.load("scheduler")(s))


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
    from forecaster.ingest import sync_all_series
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
