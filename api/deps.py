"""Route dependencies: the app's settings, a read session, the sessionmaker, the admin check.

    SettingsDep      the Settings the app was built with
    SessionDep       a read-only Session for one request (never commits; closed after)
    SessionMakerDep  the sessionmaker, for routes that write (``write_session(sm)``)
    StateDep         everything the app holds (work queue, caches, metrics)
    require_admin    the ``X-API-Key`` check, as ``dependencies=[Depends(require_admin)]``
    parse_json       a raw JSON body validated in one pass (for bodies too big for ``json.loads``)
    IdPath           a database id in the path: 1 .. 2**63-1 (past that: 422, never a driver overflow)
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Path, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.forecast_cache import ForecastCache
from api.metrics import ApiMetrics
from api.predictors import PredictorCache
from api.problems import NotAllowed, NotAuthenticated, UnsupportedMediaType
from forecaster.config.settings import Settings
from forecaster.errors import ForecasterError, InvalidInput
from forecaster.usecases.queue import WorkQueue

API_KEY_HEADER = "X-API-Key"
MAX_ID = 2**63 - 1  # the largest id a database integer (SQLite, PostgreSQL bigint) can hold
T = TypeVar("T")
IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="A numeric id (1 to 2^63-1).")]


@dataclass
class AppState:
    """What one app instance holds for its lifetime (built by ``create_app``)."""

    settings: Settings
    engine: Engine
    sm: sessionmaker[Session]
    queue: WorkQueue  # where triggered job runs go: workers (PostgreSQL) or a thread here (SQLite)
    predictors: PredictorCache
    forecasts: ForecastCache
    metrics: ApiMetrics


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.forecaster
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


async def get_sessionmaker(state: StateDep) -> sessionmaker[Session]:
    return state.sm


def get_session(state: StateDep) -> Iterator[Session]:
    """A session for one request's reads; closed (and its connection returned) afterwards.

    A plain (sync) generator: FastAPI runs it on the threadpool, so returning the
    connection (a rollback, a round trip on PostgreSQL) never blocks the event loop.
    """
    with state.sm() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionMakerDep = Annotated[sessionmaker[Session], Depends(get_sessionmaker)]
SessionDep = Annotated[Session, Depends(get_session)]

_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                        description="One of the keys in the config's `api_keys`.")


def admin_refusal(keys: Sequence[str], key: str | None) -> ForecasterError | None:
    """Why ``key`` may not use the admin endpoints, or None when it is one of ``keys``.

    Every configured key is compared (constant time each), so the time taken
    does not tell which key came close. Also used before a body is read (api/limits.py).
    """
    if not keys:
        return NotAllowed("admin endpoints are disabled: no api_keys are configured; add "
                          "api_keys = [\"...\"] to the config file or set FORECASTER_API_KEYS='[\"...\"]'")
    if not key:
        return NotAuthenticated(f"this endpoint needs an admin key: send it in the {API_KEY_HEADER} header")
    sent = key.encode()
    matched = False
    for k in keys:
        matched |= hmac.compare_digest(sent, k.encode())
    if not matched:
        return NotAllowed(f"the {API_KEY_HEADER} sent is not one of the configured api_keys")
    return None


async def require_admin(state: StateDep, key: Annotated[str | None, Security(_api_key)]) -> None:
    """Let the request through only with one of ``settings.api_keys`` in ``X-API-Key``.

    Raises:
        NotAllowed: no keys are configured (403, saying how to configure one), or the key is wrong.
        NotAuthenticated: no key was sent (401).
    """
    refusal = admin_refusal(state.settings.api_keys, key)
    if refusal is not None:
        raise refusal


AdminDep = Depends(require_admin)


def parse_json(validator: TypeAdapter[T], raw: bytes) -> T:
    """Parse and validate a JSON body in one pass (pydantic's parser: several times faster
    than ``json.loads`` on number-heavy bodies).

    Raises:
        InvalidInput: the body is empty.
        RequestValidationError: invalid JSON or a bad field, located under ``body``.
    """
    if not raw.strip():
        raise InvalidInput("the body is empty: send JSON (see /docs for this endpoint's shape)")
    try:
        return validator.validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def _is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def require_json(request: Request) -> None:
    """Refuse a body that is not declared as JSON (415, naming the type sent)."""
    media = _media_type(request.headers.get("content-type", ""))
    if not _is_json(media):
        raise UnsupportedMediaType(f"content-type {media or 'none'!r} is not read here: send application/json")


def json_declared(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether raw ASGI ``headers`` declare a JSON body, as ``require_json`` decides it (the first
    ``content-type`` header)."""
    value = next((v for k, v in headers if k == b"content-type"), b"")
    return _is_json(_media_type(value.decode("latin-1")))
