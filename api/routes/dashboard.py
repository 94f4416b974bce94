"""The dashboard: ``GET /`` (every series) and ``GET /series/{key}`` (one series), server-rendered HTML.

Pages read the database only (no torch, no JavaScript). Keys hold ``:``, ``^``
and ``,``; links URL-encode them and the route takes them encoded or not.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.dashboard import data, render
from api.deps import SessionDep, SessionMakerDep, SettingsDep
from api.routes import problems
from forecaster.errors import SeriesNotFound
from forecaster.usecases import figures, jobs

router = APIRouter(tags=["dashboard"])
_HTML: dict[int | str, dict[str, Any]] = {200: {"content": {"text/html": {}}, "description": "An HTML page."}}


@router.get("/", response_class=HTMLResponse, responses={**_HTML, **problems()})
def dashboard(session: SessionDep, sm: SessionMakerDep, settings: SettingsDep) -> HTMLResponse:
    """The dashboard: every series with its last observation, champion, holdout and live MASE, last runs,
    and which series are training now."""
    training = data.training_notes(jobs.list_runs(sm, limit=20, kind="train"))
    return HTMLResponse(render.index_html(data.series_rows(figures.dashboard_table(session, settings)), settings,
                                          training))


@router.get("/series/{key}", response_class=HTMLResponse,
            responses={**_HTML, 404: {"content": {"text/html": {}}, "description": "No such series (an HTML page)."},
                       **problems()})
def series_dashboard(key: str, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    """One series: chart of recent observations with past and next forecasts, live accuracy, model versions."""
    try:
        page = data.series_page(figures.series_figures(session, settings, key, data.chart_points))
    except SeriesNotFound as exc:
        return HTMLResponse(render.not_found_html(str(exc)), status_code=404)
    return HTMLResponse(render.series_html(page))
