"""`forecaster models list`, `promote`, `baseline`, `rollback`: the registry's versions and what serves."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from forecaster.cli import holdout
from forecaster.cli.app import app, err, fmt, handle_errors, open_db, out, settings
from forecaster.usecases.models import start_label

if TYPE_CHECKING:
    from forecaster.usecases.models import Champion, ServingChange


models_app = typer.Typer(help="Model versions in the registry.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
@handle_errors
def models_list(key: Annotated[str, typer.Argument(help="Series key.")]) -> None:
    """Versions of a series: what each serves, its holdout MASE and MAE, the model's and the baselines' beside it."""
    from forecaster.usecases.models import list_versions

    s = settings()
    sm = open_db(s)
    with sm() as session:
        versions = list_versions(session, series_key=key)
    table = Table(title=escape(f"{key}: model versions: holdout MASE of what each serves (each holdout fold "
                               "by the choice made before it), the recurrent model's and the baselines' "
                               "(lower is better); * serves now"),
                  title_justify="left",
                  caption=("h: steps per path; MASE: mean over the path's steps (and origins), step 1: at the first "
                           f"step; MAE: of what serves, in the series' unit; {holdout.COVERAGE_NOTE}"),
                  caption_justify="left")
    for col in ("version", "status", "created", "start", "cell", "h", "serves", "MASE", "step 1", "model", "naive",
                "seasonal", "champion", "MAE", "coverage", "reason"):
        table.add_column(col)
    for v in versions:
        m = v.metrics
        table.add_row(
            f"v{v.version}" + (" *" if v.is_champion else ""), v.status, f"{v.created_at:%Y-%m-%d %H:%M}",
            start_label(v.lineage.get("start")),
            str(v.hyperparameters.get("cell", "-")), str(holdout.horizon(m)), escape(holdout.served_label(m)),
            fmt(holdout.served_mase(m)), fmt(holdout.served_step1(m)),
            *(fmt(holdout.holdout_mase(m, block)) for block in holdout.RIVALS), fmt(holdout.served_block(m).get("mae")),
            holdout.percent(holdout.served_coverage(m, v.status)), escape(v.status_reason or ""),
        )
    out.print(table if versions else escape(f"{key} has no model versions yet: run `forecaster train`"))


def _serving(champ: Champion) -> str:
    return "the baseline" if champ.version is None else f"v{champ.version}"


def _forecast_line(change: ServingChange) -> str:
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
