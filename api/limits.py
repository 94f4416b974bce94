"""Request bodies: the admin key is checked before a body is read, and each route's body is capped.

``BodyGuard`` (ASGI middleware) decides when the routed request first asks for its
body (FastAPI reads a declared body before it solves dependencies such as the key
check, so that is the last moment before anything is read):

- on an admin route (one that depends on ``require_admin``) without a valid key,
  the answer is 401/403 and not a byte of the body is read;
- a body over the route's cap is refused with a 413 problem naming the cap (``limit``):
  at once when Content-Length announces it, else as soon as the counted bytes of a
  chunked body pass it. Nothing over a cap is ever buffered or parsed.

GET and HEAD requests, and routes that read no body, are not touched.

Caps (``body_caps``), each about what the route can need, never above ``max_bytes``:

    POST /v1/forecast                       1000 series keys (ForecastManyIn)
    POST /v1/jobs/ingest, /v1/jobs/train    10000 series keys (JobTriggerIn)
    POST /v1/series/{key}/promote           4 KiB
    POST /v1/models/{id}/predict            api.max_predict_batch windows of the longest window
    POST /v1/series/{key}/observations      max_bytes (64 MiB: ~1.5M CSV rows)
    any other route                         64 KiB
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from annotated_types import MaxLen
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import API_KEY_HEADER, admin_refusal, require_admin
from api.problems import BODY_TOO_LARGE, AnsweredEarly, error_response, problem
from api.schemas import ForecastManyIn, JobTriggerIn
from forecaster.config.settings import Settings

KEY_BYTES = 200 + 16  # a series key (<= 200 ASCII characters) quoted, its comma and some whitespace
VALUE_BYTES = 26  # a float at full precision (-2.2250738585072014e-308) and its ", "
TIMESTAMP_BYTES = 40  # "2024-01-01T00:00:00.000000+00:00", quoted, with its ", "
LONGEST_DEFAULT_WINDOW = 288  # forecaster/modelling/fitting.py: no frequency's default window is longer
ENVELOPE_BYTES = 4096  # braces, field names, whitespace around the lists
SMALL_BODY_BYTES = 4096  # a promote body ({"version": 3, "force": true})
DEFAULT_BODY_BYTES = 64 * 1024  # routes that read no body
_KEY_HEADER = API_KEY_HEADER.lower().encode()  # ASGI header names are lower case


@dataclass(frozen=True)
class BodyCap:
    """The most a route's body may hold, and what that room is for (said in the 413)."""

    bytes: int
    room_for: str


def _max_items(model: type[BaseModel], field: str) -> int:
    """The ``max_length`` a pydantic model declares for one of its list fields."""
    return next(m.max_length for m in model.model_fields[field].metadata if isinstance(m, MaxLen))


def longest_window(settings: Settings) -> int:
    """The longest window a model of a configured (or pushed) series can take."""
    explicit = [s.model.window for s in settings.series if s.model.window is not None]
    return max([LONGEST_DEFAULT_WINDOW, *explicit])


def body_caps(settings: Settings, max_bytes: int) -> dict[str, BodyCap]:
    """Each body-reading route's cap, by route template (see the module table)."""
    forecast_keys, job_keys = _max_items(ForecastManyIn, "keys"), _max_items(JobTriggerIn, "keys")
    batch, window = settings.api.max_predict_batch, longest_window(settings)
    caps = {
        "/v1/forecast": BodyCap(forecast_keys * KEY_BYTES + ENVELOPE_BYTES, f"{forecast_keys} series keys"),
        "/v1/jobs/ingest": BodyCap(job_keys * KEY_BYTES + ENVELOPE_BYTES, f"{job_keys} series keys"),
        "/v1/jobs/train": BodyCap(job_keys * KEY_BYTES + ENVELOPE_BYTES, f"{job_keys} series keys"),
        "/v1/series/{key}/promote": BodyCap(SMALL_BODY_BYTES, "a version and a force flag"),
        "/v1/models/{model_version_id}/predict": BodyCap(
            batch * (window * VALUE_BYTES + TIMESTAMP_BYTES) + ENVELOPE_BYTES,
            f"api.max_predict_batch = {batch} windows of up to {window} values"),
        "/v1/series/{key}/observations": BodyCap(max_bytes, "about 1.5 million CSV rows"),
    }
    return {path: cap if cap.bytes <= max_bytes else BodyCap(max_bytes, "the server's largest body")
            for path, cap in caps.items()}


def _needs_admin(dependant: Dependant) -> bool:
    return any(d.call is require_admin or _needs_admin(d) for d in dependant.dependencies)


class BodyGuard:
    """The key check before any body, and each route's body cap while it streams (see the module doc)."""

    def __init__(self, app: ASGIApp, caps: dict[str, BodyCap], api_keys: Sequence[str]) -> None:
        self.app = app
        self.caps = caps
        self.api_keys = api_keys
        self._admin: dict[str, bool] = {}  # by route template: whether it needs the key

    def _admit(self, scope: Scope) -> tuple[int, Callable[[], AnsweredEarly]]:
        """This request's cap and the 413 past it (built only when sent); raises the refusal when no
        byte is to be read (an admin route without a valid key, or a Content-Length over the cap)."""
        route = scope.get("route")  # set by routing, which is done when a body is first asked for
        template = route.path if isinstance(route, APIRoute) else scope["path"]
        if isinstance(route, APIRoute):
            admin = self._admin.get(template)
            if admin is None:
                admin = self._admin[template] = _needs_admin(route.dependant)
            if admin:
                sent = next((v.decode("latin-1") for k, v in scope["headers"] if k == _KEY_HEADER), None)
                refusal = admin_refusal(self.api_keys, sent)
                if refusal is not None:
                    raise AnsweredEarly(error_response(refusal))
        cap = self.caps.get(template, BodyCap(DEFAULT_BODY_BYTES, "no body"))

        def too_large() -> AnsweredEarly:
            detail = (f"the request body is over {cap.bytes} bytes, the most {scope['method']} {template} takes "
                      f"(room for {cap.room_for}): split it into smaller requests")
            return AnsweredEarly(problem(413, detail, type_=BODY_TOO_LARGE, limit=cap.bytes))

        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > cap.bytes:
            raise too_large()
        return cap.bytes, too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):  # no route reads their bodies
            await self.app(scope, receive, send)
            return
        admitted: tuple[int, Callable[[], AnsweredEarly]] | None = None  # decided when the body is first asked for
        seen = 0

        async def guarded() -> Message:
            nonlocal admitted, seen
            if admitted is None:
                admitted = self._admit(scope)
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > admitted[0]:
                    raise admitted[1]()
            return message

        await self.app(scope, guarded, send)
