"""`forecaster observations delete`: repair stored observations that should not have got in."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.markup import escape

from forecaster.cli.app import app, fail, handle_errors, open_db, out, settings

observations_app = typer.Typer(help="Stored observations: repair what should not have got in.", no_args_is_help=True)
app.add_typer(observations_app, name="observations")


def _aware(name: str, text: str) -> dt.datetime:
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
