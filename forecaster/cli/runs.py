"""`forecaster ingest` and `forecaster train`: one job run executed here, shown as a table.

Both call ``usecases.executor.run_here`` (the run goes through the same
``run_series`` as a scheduled or queued one, and is listed in ``job_runs``)
and render its series' results; a progress bar runs on stderr meanwhile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import TaskID
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from forecaster.cli import holdout
from forecaster.cli.app import (
    app,
    fmt,
    handle_errors,
    open_db,
    out,
    progress_bar,
    settings,
)
from forecaster.config.settings import Settings
from forecaster.usecases.jobs import series_of_run
from forecaster.usecases.models import start_label

if TYPE_CHECKING:
    from forecaster.usecases.jobs import SeriesResult
    from forecaster.usecases.retrain import EpochProgress

INGEST_COLOURS = {"ok": "green", "snapshot": "yellow", "unavailable": "yellow", "failed": "red"}  # as the dashboard
TRAIN_COLOURS = {"promoted": "green", "rejected": "yellow", "skipped": "dim", "failed": "red"}


def ingest_table(results: list[SeriesResult]) -> Table:
    """One row per series: rows new, updated, unchanged and rejected, the last observation, a note."""
    from forecaster.usecases.ingest import IngestOutcome

    table = Table(title="ingest", title_justify="left")
    for col in ("series", "status", "new", "updated", "unchanged", "rejected", "last observation", "note"):
        table.add_column(col, justify="right" if col in ("new", "updated", "unchanged", "rejected") else "left")
    for r in results:
        status = f"[{INGEST_COLOURS.get(r.status, 'red')}]{r.status}[/]"
        o = r.outcome
        if not isinstance(o, IngestOutcome):  # it broke before the ingest could report
            table.add_row(escape(r.series_key), status, "-", "-", "-", "-", "-", escape(r.detail or ""))
            continue
        note = o.error if o.status == "failed" else "; ".join(o.notes)
        table.add_row(
            escape(o.series_key), status, str(o.rows_new), str(o.rows_updated),
            str(o.rows_unchanged), str(o.rows_rejected),
            o.last_ts.strftime("%Y-%m-%d %H:%M UTC") if o.last_ts else "-", escape(note or ""),
        )
    return table


def run_ingest(s: Settings, sm: sessionmaker[Session], keys: list[str] | None, *,
               snapshot_fallback: bool) -> list[SeriesResult]:
    """Ingest ``keys`` (every fetched series when None) as a job run here; print the table."""
    from forecaster.usecases.executor import run_here

    with progress_bar() as bar:
        task = bar.add_task("ingest", total=len(series_of_run(s, kind="ingest", keys=keys)))

        def done(result: SeriesResult) -> None:
            bar.update(task, advance=1, description=result.series_key)

        report = run_here(sm, s, kind="ingest", keys=keys, snapshot_fallback=snapshot_fallback, on_done=done)
    out.print(ingest_table(report.results))
    for r in report.results:
        if r.status in ("snapshot", "unavailable"):
            out.print(f"[yellow]{escape(r.series_key)}: {r.status}: {escape(r.detail or '')}[/]", highlight=False)
    return report.results


@app.command()
@handle_errors
def ingest(
    series: Annotated[list[str] | None,
                      typer.Option("--series", "-s", help="Only this series key (repeatable).")] = None,
    snapshot: Annotated[bool, typer.Option(
        help="Fall back to the bundled snapshot when a source is unreachable.")] = False,
) -> None:
    """Fetch every configured series (or --series KEY) and upsert new observations."""
    s = settings()
    sm = open_db(s)
    results = run_ingest(s, sm, series, snapshot_fallback=snapshot)
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)


def train_table(results: list[SeriesResult]) -> Table:
    """One row per series: what its new version serves and that holdout MASE, the recurrent model's
    beside it, the baselines' and the champion's, and the coverage of the interval that serves."""
    from forecaster.usecases.retrain import TrainReport

    table = Table(title="train: holdout MASE of what each new version serves (each holdout fold by the choice "
                        "made before it), the recurrent model's and the baselines' (lower is better)",
                  title_justify="left", caption=f"{holdout.COVERAGE_NOTE}; h: steps per path; MASE: mean over the "
                  "path's steps, step 1: at the first step", caption_justify="left")
    for col in ("series", "status", "version", "start", "h", "serves", "MASE", "step 1", "model", "naive", "seasonal",
                "champion", "coverage", "device", "time"):
        table.add_column(col)
    for res in results:
        r = res.outcome if isinstance(res.outcome, TrainReport) else None
        m = (r.metrics if r else None) or {}
        table.add_row(
            escape(res.series_key), f"[{TRAIN_COLOURS.get(res.status, 'red')}]{res.status}[/]",
            f"v{r.version}" if r and r.version else "-", start_label(r.start if r else None),
            str(holdout.horizon(m)) if m else "-",
            escape(holdout.served_label(m)), fmt(holdout.served_mase(m)), fmt(holdout.served_step1(m)),
            *(fmt(holdout.holdout_mase(m, block)) for block in holdout.RIVALS),
            holdout.percent(holdout.served_coverage(m, res.status)), (r.device if r else None) or "-",
            f"{r.duration_s:.1f}s" if r else "-",
        )
    return table


def run_train(s: Settings, sm: sessionmaker[Session], keys: list[str] | None,
              one_by_one: bool = False, cold: bool = False) -> list[SeriesResult]:
    """Train ``keys`` (every series when None) as a job run here; print the table and each non-promotion's reason."""
    from forecaster.usecases.executor import run_here

    with progress_bar() as bar:
        overall = bar.add_task("train", total=len(series_of_run(s, kind="train", keys=keys)))
        tasks: dict[str, TaskID] = {}  # series in hand -> its bar (several at once when fleets train)

        def on_start(key: str) -> EpochProgress:
            tasks[key] = bar.add_task(f"  {key}", total=None)

            def progress(epoch: int, epochs: int, val_loss: float) -> None:
                bar.update(tasks[key], completed=epoch, total=epochs, description=f"  {key} val={val_loss:.4f}")

            return progress

        def on_done(result: SeriesResult) -> None:
            if result.series_key in tasks:
                bar.remove_task(tasks.pop(result.series_key))
            bar.update(overall, advance=1)

        report = run_here(sm, s, kind="train", keys=keys, one_by_one=one_by_one, on_start=on_start, on_done=on_done,
                          cold=cold)
    from forecaster.usecases.retrain import TrainReport

    out.print(train_table(report.results))
    for r in report.results:
        reason = r.outcome.reason if isinstance(r.outcome, TrainReport) else r.detail
        if r.status != "promoted" and reason:
            out.print(escape(f"{r.series_key}: {reason}"), highlight=False, soft_wrap=True)
    return report.results


@app.command()
@handle_errors
def train(
    series: Annotated[list[str] | None,
                      typer.Option("--series", "-s", help="Only this series key (repeatable).")] = None,
    one_by_one: Annotated[bool, typer.Option(
        "--one-by-one",
        help="Train each series alone in turn, never in fleets (fleets: on a GPU, or amp groups of 16+ on a bf16 CPU).",
    )] = False,
    cold: Annotated[bool, typer.Option(
        "--cold", help="Train from scratch: random weights, every statistical form searched again "
                       "(default: warm from the champion where its network has the same shape).")] = False,
) -> None:
    """Train a new model version per series, gate it against the baselines and the champion.

    A retrain starts warm from the champion's weights and statistical forms where it can, with a
    short budget; ``--cold`` starts from scratch (so does every ``model.cold_every``-th retrain,
    and a retrain whose warm version lost to a baseline).

    Where it pays (a GPU; amp LSTM/RNN groups of 16+ on a CPU with native bfloat16), series of one
    model shape are trained together as a fleet (one batched pass per step); each still gets its
    own data, seed, early stopping, metrics, gate and version.
    """
    s = settings()
    sm = open_db(s)
    results = run_train(s, sm, series, one_by_one, cold)
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)
