"""Errors as ``application/problem+json`` (RFC 9457): the only place that knows HTTP statuses.

One table (``STATUS``) maps exception classes to statuses; a handler finds an
error's status by walking ``type(exc).__mro__``, so a subclass inherits its
parent's status unless the table names it. Every problem body has ``type``,
``title``, ``status`` and ``detail``; the detail is ``str(exc)``, which names
the bad value and the way out (STYLE.md §8). Unexpected exceptions become a 500
whose body says nothing about the code; the traceback goes to the log.

    ForecasterError ......................... 500  (a bug-shaped error we raised on purpose)
    ├── ConfigError ......................... 500
    ├── InvalidInput ........................ 422
    │   ├── BatchTooLarge (api) ............. 413
    │   └── UnsupportedMediaType (api) ...... 415
    ├── SeriesNotFound / ModelNotFound / RunNotFound  404
    ├── Conflict ............................ 409
    ├── StorageUnavailable .................. 503
    ├── SourceError ......................... 502
    ├── NotAuthenticated (api) .............. 401
    └── NotAllowed (api) .................... 403
    sqlalchemy OperationalError, DisconnectionError, pool TimeoutError  503
    sqlalchemy IntegrityError ............... 409  (a concurrent write won; retry)
    RequestValidationError .................. 422  (names the field and the value sent)
    a body over its route's cap ............. 413  (api/limits.py, with the cap as ``limit``)
    the client leaving mid-request .......... logged at DEBUG, nothing sent, counted as 499
    anything else ........................... 500
"""

from __future__ import annotations

import http
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from forecaster.errors import (
    ConfigError,
    Conflict,
    ForecasterError,
    InvalidInput,
    ModelNotFound,
    RunNotFound,
    SeriesNotFound,
    SourceError,
    StorageUnavailable,
)
from forecaster.logs import log_event

PROBLEM_JSON = "application/problem+json"


class NotAuthenticated(ForecasterError):
    """An admin endpoint was called without an API key."""


class NotAllowed(ForecasterError):
    """The API key sent is not one of the configured keys (or none are configured)."""


class BatchTooLarge(InvalidInput):
    """A predict request holds more windows than ``api.max_predict_batch``."""


class UnsupportedMediaType(InvalidInput):
    """A body in a format the endpoint does not read (it names the ones it does)."""


class AnsweredEarly(StarletteHTTPException):
    """A refusal decided as a body is first asked for (api/limits.py), its problem answer ready.

    An HTTP exception, not one of ours: FastAPI passes those through its own body
    parsing, where anything else would become a 400.
    """

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


STATUS: dict[type[BaseException], int] = {
    NotAuthenticated: 401,
    NotAllowed: 403,
    BatchTooLarge: 413,
    UnsupportedMediaType: 415,
    SeriesNotFound: 404,
    ModelNotFound: 404,
    RunNotFound: 404,
    InvalidInput: 422,
    Conflict: 409,
    StorageUnavailable: 503,
    SourceError: 502,
    ConfigError: 500,
    ForecasterError: 500,
    sa_exc.OperationalError: 503,  # connection refused/lost, SQLite locked past its busy timeout
    sa_exc.InterfaceError: 503,
    sa_exc.DisconnectionError: 503,
    sa_exc.TimeoutError: 503,  # the pool had no connection to give in time
    sa_exc.IntegrityError: 409,  # a concurrent writer took the same key first
}

# Stable, machine-readable problem types (RFC 9457 ``type``); clients switch on these.
TYPES: dict[type[BaseException], str] = {
    NotAuthenticated: "not-authenticated",
    NotAllowed: "forbidden",
    BatchTooLarge: "batch-too-large",
    UnsupportedMediaType: "unsupported-media-type",
    SeriesNotFound: "series-not-found",
    ModelNotFound: "model-not-found",
    RunNotFound: "run-not-found",
    InvalidInput: "invalid-input",
    Conflict: "conflict",
    StorageUnavailable: "storage-unavailable",
    SourceError: "source-error",
    ConfigError: "config-error",
}

BODY_TOO_LARGE = "urn:forecaster:problem:body-too-large"
CLIENT_GONE = "forecaster.client_gone"  # scope key: the client left before the answer (metrics count a 499)
STORAGE_DETAIL = "the database is unavailable; try again shortly (the server log has the reason)"
INTERNAL_DETAIL = "an unexpected error occurred; the server log has the details"


def status_for(exc: BaseException) -> int:
    """The HTTP status of ``exc``: the first class along its MRO that ``STATUS`` names; else 500."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def _type_for(exc: BaseException) -> str:
    for cls in type(exc).__mro__:
        if cls in TYPES:
            return f"urn:forecaster:problem:{TYPES[cls]}"
    return "about:blank"


def problem(status: int, detail: str, *, type_: str = "about:blank", title: str | None = None,
            headers: Mapping[str, str] | None = None, **extra: Any) -> Response:
    """A ``problem+json`` response with ``status``, ``detail`` and any extension members."""
    body = {"type": type_, "title": title or _phrase(status), "status": status, "detail": detail, **extra}
    return Response(json.dumps(body, default=str), status_code=status, media_type=PROBLEM_JSON,
                    headers=dict(headers or {}))


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# ---------------------------------------------------------------- handlers


def error_response(exc: BaseException) -> Response:
    """The problem answer to one of our errors: its status, stable type and ``str(exc)`` as the detail."""
    status = status_for(exc)
    headers = {"WWW-Authenticate": 'APIKey header="X-API-Key"'} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": "5"}
    return problem(status, str(exc), type_=_type_for(exc), headers=headers)


async def _forecaster_error(request: Request, exc: Exception) -> Response:
    if status_for(exc) >= 500:
        log_event("api.error", level=logging.ERROR, exc_info=True, path=request.url.path,
                  error=f"{type(exc).__name__}: {exc}")
    return error_response(exc)


async def _storage_error(request: Request, exc: Exception) -> Response:
    # The driver's text can hold host names and user names: it goes to the log, not to the client.
    log_event("api.storage_unavailable", level=logging.ERROR, path=request.url.path,
              error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return problem(503, STORAGE_DETAIL, type_="urn:forecaster:problem:storage-unavailable",
                   headers={"Retry-After": "5"})


async def _integrity_error(request: Request, exc: Exception) -> Response:
    log_event("api.write_conflict", level=logging.WARNING, path=request.url.path, error=type(exc).__name__)
    return problem(409, "a concurrent write to the same rows won; retry the request",
                   type_="urn:forecaster:problem:conflict")


def _describe_loc(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "request"


def describe_validation_errors(errors: Sequence[Mapping[str, Any]], *, limit: int = 5) -> str:
    """One line per error naming the field and the value sent, e.g.
    ``body.windows[0][3] = 'abc': Input should be a valid number``."""
    lines = []
    for err in errors[:limit]:
        where = _describe_loc(err.get("loc", ()))
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "missing":
            lines.append(f"{where} is missing")
        elif err.get("type") == "json_invalid":
            lines.append(f"{where}: body is not valid JSON ({(err.get('ctx') or {}).get('error', msg)})")
        elif "input" in err and not isinstance(err["input"], (dict, list)):
            shown = repr(err["input"])
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            lines.append(f"{where} = {shown}: {msg}")
        else:
            lines.append(f"{where}: {msg}")
    if len(errors) > limit:
        lines.append(f"... and {len(errors) - limit} more")
    return "; ".join(lines)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    shown = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors[:20]]
    return problem(422, describe_validation_errors(errors), type_="urn:forecaster:problem:invalid-input",
                   errors=shown)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc, AnsweredEarly):
        return exc.response
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.method} {request.url.path} (see /docs)"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path} (see /docs)"
    return problem(exc.status_code, detail, headers=exc.headers)


def install(app: FastAPI) -> None:
    """Register the problem handlers on ``app`` (the catch-all is ``CatchAllMiddleware``)."""
    app.add_exception_handler(ForecasterError, _forecaster_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for cls in (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError, sa_exc.TimeoutError):
        app.add_exception_handler(cls, _storage_error)
    app.add_exception_handler(sa_exc.IntegrityError, _integrity_error)


class CatchAllMiddleware:
    """Turn any exception that escaped the handlers into a generic 500 problem.

    Starlette's own last-resort handler re-raises after answering, which logs
    the traceback a second time; this one logs it once and keeps the body free
    of code details. If the response had already started there is nothing to
    send, and the exception propagates to the server. A client that left
    mid-body (``ClientDisconnect``) is no error: a DEBUG line, and nothing sent.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except ClientDisconnect:  # nobody to answer, and not the server's fault
            scope[CLIENT_GONE] = True
            log_event("api.client_disconnected", level=logging.DEBUG, method=scope.get("method"),
                      path=scope.get("path"))
        except Exception as exc:
            if started:
                raise
            log_event("api.unhandled", level=logging.ERROR, exc_info=True, method=scope.get("method"),
                      path=scope.get("path"), error=type(exc).__name__)
            response = problem(500, INTERNAL_DETAIL, type_="urn:forecaster:problem:internal")
            await response(scope, receive, send)
