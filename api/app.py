"""The FastAPI app factory: ``create_app(settings)``; ``app_from_env()`` for uvicorn workers.

Nothing is built at import time. ``create_app`` makes the engine and
sessionmaker (no connection yet), the work queue (forecaster/usecases/queue.py: tasks for
workers on PostgreSQL, a thread of this process on SQLite) and the predictor cache, and
the lifespan disposes of them on shutdown. Middleware, outermost first:
metrics (sees every status, 500s included), the catch-all that turns escaped
exceptions into a 500 problem, the security headers of HTML pages (api/headers.py), the admin
key and body caps (api/limits.py), the fast paths of the forecast GET and the predict POST
(api/routes/forecasts.py, api/routes/models.py), then FastAPI's exception handlers (problems.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_redoc_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi_offline import FastAPIOffline

from api import problems
from api.deps import AppState
from api.forecast_cache import ForecastCache
from api.headers import DOCS_CSP, SecurityHeaders
from api.limits import BodyGuard, body_caps
from api.metrics import ApiMetrics, MetricsMiddleware
from api.predictors import PredictorCache
from api.routes import (
    DESCRIPTIONS,
    PROBLEM_CONTENT,
    accuracy,
    dashboard,
    forecasts,
    health,
    jobs,
    models,
    observations,
    series,
)
from forecaster import __version__
from forecaster.config.loading import load_settings
from forecaster.config.settings import Settings
from forecaster.logs import configure_logging, log_event, log_to_file
from forecaster.usecases.database import open_database
from forecaster.usecases.executor import make_queue

DOCS_ASSETS_URL = "/docs-assets"  # Swagger UI / ReDoc scripts, styles and favicon
DOCS_URL = "/docs"  # Swagger UI
MAX_BODY_BYTES = 64 * 1024 * 1024  # the largest body any route takes (a push: ~1.5M CSV rows); api/limits.py

DESCRIPTION = """\
Next-step forecasts of the series declared in `forecaster.toml`, served from the database.

* Read: series, observations, stored forecasts, model versions (metrics and lineage).
* Predict: `POST /v1/models/{id}/predict` runs a model on windows you send.
* Admin (header `X-API-Key`): push observations, promote (with `force` past the gate), serve the baseline,
  roll back, trigger ingest or retrain.

Errors are `application/problem+json` with `type`, `title`, `status` and a `detail` naming the bad value.
"""


def create_app(settings: Settings) -> FastAPI:
    """Build the API for ``settings`` (no connection is opened until a request needs one)."""
    engine, sm = open_database(settings.database_url)
    state = AppState(settings=settings, engine=engine, sm=sm, queue=make_queue(sm, settings),
                     predictors=PredictorCache(settings.api.predict_cache_size), forecasts=ForecastCache(engine),
                     metrics=ApiMetrics(sm, settings.monitoring))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log_event("api.start", database=engine.dialect.name, series=len(settings.series),
                  work=state.queue.description)
        if "change-me" in settings.api_keys:
            log_event("api.insecure_key", level=logging.WARNING,
                      detail="api_keys holds the example key 'change-me': anyone can use the admin endpoints; "
                             "set FORECASTER_API_KEYS='[\"<a long secret>\"]'")
        try:
            yield
        finally:
            await run_in_threadpool(state.queue.shutdown)  # in process: a running job finishes its current series
            await run_in_threadpool(state.predictors.close)
            await state.forecasts.aclose()
            engine.dispose()
            log_event("api.stop")

    # /docs and /redoc load their scripts and styles from this app (fastapi-offline ships
    # Swagger UI and ReDoc), never from a CDN: the service is often air-gapped.
    app = FastAPIOffline(
        docs_url=DOCS_URL, static_url=DOCS_ASSETS_URL, redoc_url=None, title="forecaster", version=__version__,
        description=DESCRIPTION, lifespan=lifespan,
        openapi_tags=[
            {"name": "forecasts", "description": "Stored next-step forecasts (database reads only)."},
            {"name": "series", "description": "Series and their observations; pushing observations (admin)."},
            {"name": "models", "description": "Model versions, predictions from windows, promotion (admin)."},
            {"name": "jobs", "description": "Ingest and retrain runs (admin)."},
            {"name": "health", "description": "Liveness, readiness, Prometheus metrics."},
        ],
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_api_route("/redoc", _redoc_page(app), include_in_schema=False)
    app.state.forecaster = state
    problems.install(app)
    for module in (forecasts, series, observations, models, jobs, health):
        app.include_router(module.router)
    app.include_router(accuracy.router)
    app.include_router(dashboard.router)
    # Innermost first: the forecast GET's cache hits and the common predict POST are answered before
    # routing, inside the body caps and the error and metrics layers (so they are capped, caught and
    # counted like any request).
    app.add_middleware(models.PredictFastPath, state=state)
    app.add_middleware(forecasts.ForecastFastPath, state=state)
    app.add_middleware(BodyGuard, caps=body_caps(settings, MAX_BODY_BYTES), api_keys=settings.api_keys)
    docs_pages = (DOCS_URL, str(app.swagger_ui_oauth2_redirect_url))  # Swagger UI runs inline scripts
    app.add_middleware(SecurityHeaders, by_path=dict.fromkeys(docs_pages, DOCS_CSP))
    app.add_middleware(problems.CatchAllMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # added last = outermost
    return app


def _redoc_page(app: FastAPI) -> Callable[[Request], Awaitable[HTMLResponse]]:
    """/redoc from the bundled ReDoc, with a Content-Security-Policy keeping the page on this server.

    ReDoc's bundle draws its footer logo from the vendor's CDN; the policy stops the
    browser from even trying (ReDoc then hides the image), so an air-gapped page makes
    no outside request at all.
    """

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png", with_google_fonts=False)
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    return redoc


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with every error documented as problem+json only (422 included)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes, tags=app.openapi_tags)
        for path in schema["paths"].values():
            for op in path.values():
                for code, response in op.get("responses", {}).items():
                    if code.isdigit() and int(code) >= 400:
                        response["content"] = dict(PROBLEM_CONTENT)
                        if code == "422":
                            response["description"] = DESCRIPTIONS[422]
        components = schema.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: settings from ``FORECASTER_CONFIG`` (and ``FORECASTER_*``)."""
    settings = load_settings()
    configure_logging(settings.log_level)
    log_to_file(settings.log_file)
    return create_app(settings)
