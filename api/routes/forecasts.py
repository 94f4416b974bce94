"""Stored forecast paths: read from the database (or its response cache) only; no torch on this path."""

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
from forecaster.errors import InvalidInput, SeriesNotFound
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


CSV = "text/csv"
VARY = "Accept"  # the answer depends on it (JSON or CSV): shared HTTP caches must key on it too
_H_PARAMETER = {"name": "h", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1},
                "description": "Return the first h steps of the path (1 to the series' horizon; else 422)."}


def wants_csv(accept: str) -> bool:
    """Whether an ``Accept`` header prefers the CSV table to JSON (media types compared without case).

    CSV when ``text/csv`` (else ``text/*``, else ``*/*``) has a weight above 0 and above that of
    ``application/json`` (else ``application/*``, else ``*/*``), or the same weight with text/csv or
    text/* named; so ``text/csv`` and ``TEXT/CSV`` get CSV, ``application/json, text/csv;q=0.5``,
    ``*/*`` and no header get JSON.
    """
    accept = accept.lower()
    if "text/" not in accept:  # the usual */*, JSON or nothing: no parsing on the hot path
        return False
    weights: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (x.strip() for x in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 1.0  # a weight that is not a number: the type was still named
        weights[media] = max(q, weights.get(media, 0.0))

    def weight(*ranges: str) -> float:
        return next((weights[r] for r in ranges if r in weights), 0.0)

    csv_q, json_q = weight("text/csv", "text/*", "*/*"), weight("application/json", "application/*", "*/*")
    named = "text/csv" in weights or "text/*" in weights
    return csv_q > 0 and (csv_q > json_q or (csv_q == json_q and named))


def _steps(request: Request, key: str, stored: int) -> int | None:
    """``?h=`` as a number of steps (None: the whole path).

    Raises:
        InvalidInput: not a whole number from 1 to the stored path's length, naming both.
    """
    raw = request.query_params.get("h")
    if raw is None:
        return None
    try:
        h = int(raw)
    except ValueError:
        h = 0
    if not 1 <= h <= stored:
        raise InvalidInput(f"h={raw!r}: must be a whole number of steps from 1 to {stored}, the length of the "
                           f"path series {key!r} serves (its horizon)")
    return h


@router.get("/series/{key}/forecast", response_model=ForecastOut, openapi_extra={"parameters": [_H_PARAMETER]},
            responses={**problems(404, 422), 200: {"content": {CSV: {"example": (
                "step,target_ts,value,lower,upper\n1,2024-03-24T08:00:00Z,0.71,0.52,0.9\n")}}}})
async def read_forecast(key: str, request: Request) -> Response:
    """The latest stored forecast path of one series: its steps 1..h with values and intervals, and
    step 1's value, interval, target time and model version as flat fields.

    `?h=N` cuts the path to its first N steps; `Accept: text/csv` answers the path as a
    `step,target_ts,value,lower,upper` table. Served from the response cache while the database
    is unchanged (see api/forecast_cache.py), else read on the threadpool; either way the next
    GET after any change sees it. `?h=` is read here, not by FastAPI, so that any bad value
    (`two`, `0`, past the horizon) gets one 422 naming the series' horizon.
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
    steps = _steps(request, key, len(cached.forecast.path))  # a refused h is not a forecast served
    state.metrics.child(state.metrics.forecasts_served, key, cached.method).inc()
    csv = wants_csv(",".join(request.headers.getlist("accept")))
    if steps is None and not csv:
        return Response(cached.body, media_type="application/json", headers={"Vary": VARY})
    out = cached.forecast if steps is None else cached.forecast.first_steps(steps)
    if csv:
        return Response(out.csv(), media_type=CSV, headers={"Vary": VARY})
    return Response(out.model_dump_json(), media_type="application/json", headers={"Vary": VARY})


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
            if path.startswith(_PREFIX) and path.endswith(_SUFFIX) and not scope.get("query_string") \
                    and not wants_csv(b",".join(v for n, v in scope["headers"] if n == b"accept").decode("latin-1")):
                # the whole path as JSON only: ?h= and CSV answers are cut by the route
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
                            (b"content-type", b"application/json"), (b"vary", VARY.encode())]})
                        await send({"type": "http.response.body", "body": cached.body})
                        return
                    scope[TOKEN_SCOPE_KEY] = (token,)
        await self.app(scope, receive, send)


@router.post("/forecast", response_model=ForecastManyOut, responses=problems(413, 422))
def read_forecasts(body: ForecastManyIn, session: SessionDep, state: StateDep) -> ForecastManyOut:
    """Stored forecast paths of several series at once; an unknown key gets its own 404 result, not a failed
    request. `"h": N` in the body cuts each path to its first N steps (or fewer, where a path is shorter)."""
    results = []
    for key in dict.fromkeys(body.keys):  # each key once, in the order sent
        try:
            out = _forecast(session, state.settings, key)
        except SeriesNotFound as exc:
            results.append(ForecastResult(series_key=key, status=404, detail=str(exc)))
            continue
        state.metrics.child(state.metrics.forecasts_served, key, out.method).inc()
        results.append(ForecastResult(series_key=key, status=200,
                                      forecast=out if body.h is None else out.first_steps(body.h)))
    return ForecastManyOut(results=results)
