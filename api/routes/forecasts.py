"""Stored next-step forecasts: read from the database (or its response cache) only; no torch on this path."""

from __future__ import annotations

from types import SimpleNamespace

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import AppState, SessionDep, StateDep
from api.routes import problems
from api.schemas import ForecastManyIn, ForecastManyOut, ForecastOut, ForecastResult
from forecaster.config.settings import Settings
from forecaster.errors import SeriesNotFound
from forecaster.usecases.forecasting import get_forecast

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
    # A cached body never gets here: ForecastFastPath answers it before routing.
    state: AppState = request.app.state.forecaster
    taken = request.scope.get(TOKEN_SCOPE_KEY)  # the fast path's token, taken before this read
    token = taken[0] if taken is not None else await state.forecasts.token(key)
    cached = state.forecasts.get(key, token)
    if cached is None:
        cached = state.forecasts.put(key, token, await run_in_threadpool(_read_one, state, key))
        state.metrics.child(state.metrics.forecast_reads, "database").inc()
    else:
        state.metrics.child(state.metrics.forecast_reads, "cache").inc()
    state.metrics.child(state.metrics.forecasts_served, key, cached.method).inc()
    return Response(cached.body, media_type="application/json")


TOKEN_SCOPE_KEY = "forecaster.forecast_token"
_PREFIX, _SUFFIX = "/v1/series/", "/forecast"


class ForecastFastPath:
    """``GET /v1/series/{key}/forecast`` answered from the response cache before FastAPI routes it.

    The cached bytes are what ``read_forecast`` would send (same body, same
    headers); only the framework's routing and parameter solving are skipped,
    which is most of the cost of a cache hit. The change token is taken first
    exactly as there, so freshness is the same. Anything else — a miss, a
    ``{key}`` the route would not match, any other request — goes on to the app
    (a miss carries the token along, so it is taken once). The request is still
    counted and timed under the route's template.
    """

    route = SimpleNamespace(path=f"{router.prefix}/series/{{key}}/forecast")  # what the metrics label reads

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root):]
            if path.startswith(_PREFIX) and path.endswith(_SUFFIX):
                key = path[len(_PREFIX) : -len(_SUFFIX)]
                if key and "/" not in key:  # what the route's {key} matches
                    state = self.state
                    token = await state.forecasts.token(key)
                    cached = state.forecasts.get(key, token)
                    if cached is not None:
                        scope["route"] = self.route  # the metrics' route label
                        state.metrics.child(state.metrics.forecast_reads, "cache").inc()
                        state.metrics.child(state.metrics.forecasts_served, key, cached.method).inc()
                        await send({"type": "http.response.start", "status": 200, "headers": [
                            (b"content-length", str(len(cached.body)).encode()),
                            (b"content-type", b"application/json")]})
                        await send({"type": "http.response.body", "body": cached.body})
                        return
                    scope[TOKEN_SCOPE_KEY] = (token,)
        await self.app(scope, receive, send)


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
        state.metrics.child(state.metrics.forecasts_served, key, out.method).inc()
        results.append(ForecastResult(series_key=key, status=200, forecast=out))
    return ForecastManyOut(results=results)
