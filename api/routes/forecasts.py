"""Stored next-step forecasts: read from the database (or its response cache) only; no torch on this path."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from api.deps import AppState, SessionDep, StateDep
from api.routes import problems
from api.schemas import ForecastManyIn, ForecastManyOut, ForecastOut, ForecastResult
from forecaster.config import Settings
from forecaster.errors import SeriesNotFound
from forecaster.forecasting import get_forecast

router = APIRouter(prefix="/v1", tags=["forecasts"])


def _forecast(session: Session, settings: Settings, key: str) -> ForecastOut:
    try:
        return ForecastOut.from_domain(get_forecast(session, series_key=key))
    except SeriesNotFound:
        if settings.series_by_key(key) is None:
            raise
        raise SeriesNotFound(f"series {key!r} is configured but has no data yet: run an ingest "
                             "(POST /v1/jobs/ingest) or push observations") from None


def _read_one(state: AppState, key: str) -> ForecastOut:
    with state.sm() as session:
        return _forecast(session, state.settings, key)


@router.get("/series/{key}/forecast", response_model=ForecastOut, responses=problems(404))
async def read_forecast(key: str, request: Request) -> Response:
    """The latest stored next-step forecast of one series: value, interval, target time, model version.

    Served from the response cache while the database is unchanged (see api/forecast_cache.py),
    else read on the threadpool; either way the next GET after any change sees it.
    """
    # The app state straight from the request (no dependency to solve: this is the hot path).
    state: AppState = request.app.state.forecaster
    token = await state.forecasts.token(key)  # taken before reading, so a change during the read is never masked
    cached = state.forecasts.get(key, token)
    state.metrics.forecast_reads.labels("cache" if cached is not None else "database").inc()
    if cached is None:
        cached = state.forecasts.put(key, token, await run_in_threadpool(_read_one, state, key))
    state.metrics.forecasts_served.labels(key, cached.method).inc()
    return Response(cached.body, media_type="application/json")


@router.post("/forecast", response_model=ForecastManyOut, responses=problems(413, 422))
def read_forecasts(body: ForecastManyIn, session: SessionDep, state: StateDep) -> ForecastManyOut:
    """Stored forecasts of several series at once; an unknown key gets its own 404 result, not a failed request."""
    results = []
    for key in dict.fromkeys(body.keys):  # each key once, in the order sent
        try:
            out = _forecast(session, state.settings, key)
        except SeriesNotFound as exc:
            results.append(ForecastResult(series_key=key, status=404, detail=str(exc)))
            continue
        state.metrics.forecasts_served.labels(key, out.method).inc()
        results.append(ForecastResult(series_key=key, status=200, forecast=out))
    return ForecastManyOut(results=results)
