"""The ``forecaster`` command line: the Typer app and what every command shares.

Each command validates its options, calls one use-case function and renders
its result (the command modules beside this one). Every command reads
``forecaster.toml`` from the working directory unless ``--config PATH`` or
``FORECASTER_CONFIG`` names another. A ForecasterError is printed as one line
naming the bad value, and the command exits 2.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from forecaster.config.loading import load_settings
from forecaster.config.settings import Settings
from forecaster.errors import ForecasterError

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
    config: Annotated[str | None, typer.Option(
        "--config", "-c", help="Config file (default: ./forecaster.toml or $FORECASTER_CONFIG).")] = None,
    log_file: Annotated[str | None, typer.Option(
        "--log-file", help="Also append the log lines to this file (overrides log_file).")] = None,
) -> None:
    state.config = config
    state.log_file = log_file


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line naming what is wrong on stderr and exit with ``code``."""
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
    from forecaster.usecases.database import open_database, require_head

    engine, sm = open_database(s.database_url)
    require_head(engine, upgrade=migrate)
    return sm


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


def fmt(x: float | None, digits: int = 3) -> str:
    """A metric for a table cell ("-" when there is none)."""
    return "-" if x is None else f"{x:.{digits}f}"


def main() -> None:
    """Console-script entry point."""
    app(prog_name="forecaster")
