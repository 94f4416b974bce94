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
out = Console()
err = Console(stderr=True)
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
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
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
            o.series_key, f"[{colour}]{o.status}[/]", str(o.rows_new), str(o.rows_updated),
            str(o.rows_unchanged), str(o.rows_rejected),
            o.last_ts.strftime("%Y-%m-%d %H:%M UTC") if o.last_ts else "-", note or "",
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
            out.print(f"[yellow]{o.series_key}: source unreachable, used the bundled offline snapshot[/]", highlight=False)
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


def main() -> None:
    """Console-script entry point."""
    app(prog_name="forecaster")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
