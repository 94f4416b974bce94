"""Model versions: list, inspect, predict from client windows, promote and roll back (admin)."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from typing import Any

import numpy as np
import orjson
import simdjson
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import TypeAdapter
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import (
    MAX_ID,
    AdminDep,
    AppState,
    IdPath,
    SessionDep,
    SessionMakerDep,
    StateDep,
    json_declared,
    parse_json,
    require_json,
)
from api.problems import AnsweredEarly, BatchTooLarge, error_response, status_for
from api.routes import problems
from api.schemas import ChampionOut, ModelVersionList, ModelVersionOut, PredictIn, PredictOut, PromoteIn
from forecaster.errors import ForecasterError, InvalidInput
from forecaster.usecases import models

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/series/{key}/models", response_model=ModelVersionList, responses=problems(404))
def list_models(key: str, session: SessionDep) -> ModelVersionList:
    """Every model version of a series, newest first, with metrics, lineage and status."""
    versions = models.list_versions(session, series_key=key)
    return ModelVersionList(series_key=key, versions=[ModelVersionOut.from_domain(v) for v in versions])


@router.get("/models/{model_version_id}", response_model=ModelVersionOut, responses=problems(404))
def read_model(model_version_id: IdPath, session: SessionDep) -> ModelVersionOut:
    """One model version by its id: metrics, lineage, status, hyperparameters (never the weights)."""
    return ModelVersionOut.from_domain(models.get_version(session, model_version_id=model_version_id))


_predict_in = TypeAdapter(PredictIn)
_PREDICT_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": PredictIn.model_json_schema()}}}}


@router.post("/models/{model_version_id}/predict", response_model=PredictOut,
             responses=problems(404, 413, 415, 422), openapi_extra=_PREDICT_BODY)
async def predict(model_version_id: IdPath, request: Request, state: StateDep) -> Response:
    """Paths (and their first steps) for windows the client sends, in one batched forward pass on the CPU.

    Each window holds the model's `window` most recent raw values, oldest first; NaN and
    infinity are refused. The common body (windows only, up to ~512 KB) is parsed by
    simdjson on the event loop (~0.2 ms for 256 windows); anything else, and every
    forward pass, runs on the API's torch thread, where pydantic's validation names
    what is wrong.
    """
    require_json(request)  # the common body seldom gets here: PredictFastPath answers it before routing
    raw = await request.body()
    if len(raw) <= LOOP_PARSE_BYTES:  # parsed here, while the body is in this core's cache
        fast = _fast_windows(raw)
        if fast is not None:
            out = await state.predictors.submit(_run_predict, state, model_version_id, fast, None)
        else:  # not the common body: the full validation names what is wrong
            out = await state.predictors.submit(_predict, state, model_version_id, raw, False)
    else:
        out = await state.predictors.submit(_predict, state, model_version_id, raw)
    return Response(out, media_type="application/json")  # bytes built on the torch thread (``_answer``)


# ~512 windows of 48 values parse in < 0.5 ms on the event loop; larger bodies parse on the torch thread
LOOP_PARSE_BYTES = 512 * 1024


def _fast_windows(raw: bytes) -> np.ndarray | None:
    """The (batch, window) array of the common body ``{"windows": [[...], ...]}``, parsed by simdjson
    straight into doubles (no Python float per value: ~2x faster than orjson + numpy on 256 windows),
    or None when the body is anything else (last_ts, ragged, nested deeper, non-finite, odd types,
    invalid JSON): the full validation then answers, with its exact messages."""
    try:
        doc = simdjson.Parser().parse(raw)  # a parser per body: one holds only its latest document
        if not isinstance(doc, simdjson.Object) or set(doc.keys()) - {"windows", "last_ts"} \
                or doc.get("last_ts") is not None:
            return None
        windows = doc["windows"]
        if not isinstance(windows, simdjson.Array):
            return None
        rows = len(windows)
        if rows == 0:
            return None
        lengths = set()
        for row in windows:
            if not isinstance(row, simdjson.Array):  # a number in place of a row
                return None
            lengths.add(len(row))
        if len(lengths) != 1 or _brackets(raw) != rows + 1:  # ragged, or an array nested in a row
            return None
        values = np.frombuffer(windows.as_buffer(of_type="d"), dtype=np.float64).reshape(rows, lengths.pop())
    except (ValueError, TypeError, RuntimeError, KeyError):  # simdjson: NUMBER_ERROR, INCORRECT_TYPE, ...
        return None
    if values.shape[1] == 0 or not np.isfinite(values).all():
        return None
    return values


def _brackets(raw: bytes) -> int:
    """How many ``[`` the body holds (numpy's vectorised compare: ~6 us for 128 KB, bytes.count ~35 us)."""
    return int(np.count_nonzero(np.frombuffer(raw, dtype=np.uint8) == ord("[")))


def _model_for(state: AppState, model_version_id: int, batch: int) -> Any:
    """The loaded model for a batch of ``batch`` windows (refused past api.max_predict_batch)."""
    limit = state.settings.api.max_predict_batch
    if batch > limit:
        raise BatchTooLarge(f"{batch} windows in one request; at most {limit} (api.max_predict_batch): "
                            "split the batch")
    model = state.predictors.cached(model_version_id)  # no session for a hit (~5 us)
    if model is not None:
        return model
    with state.sm() as session:
        return state.predictors.get(session, model_version_id)


def _predict(state: AppState, model_version_id: int, raw: bytes, try_fast: bool = True) -> bytes:
    fast = _fast_windows(raw) if try_fast else None
    if fast is not None:
        return _run_predict(state, model_version_id, fast, None)
    body = parse_json(_predict_in, raw)
    batch = len(body.windows)
    model = _model_for(state, model_version_id, batch)
    window = model.window
    bad = next((i for i, w in enumerate(body.windows) if len(w) != window), None)
    if bad is not None:
        raise InvalidInput(
            f"windows[{bad}] has {len(body.windows[bad])} values; model {model_version_id} "
            f"({model.series_key} v{model.version}) takes windows of exactly {window} values: "
            f"send shape ({batch}, {window})"
        )
    values = np.fromiter(itertools.chain.from_iterable(body.windows), dtype=np.float64, count=batch * window)
    values = values.reshape(batch, window)
    finite = np.isfinite(values)
    if not finite.all():
        i, j = np.argwhere(~finite)[0]
        raise InvalidInput(f"windows[{i}][{j}] = {values[i, j]}: values must be finite numbers "
                           "(NaN and infinity are refused)")
    last_ts = None
    if body.last_ts is not None:
        if len(body.last_ts) != batch:
            raise InvalidInput(f"last_ts has {len(body.last_ts)} timestamps for {batch} windows; send one per window")
        last_ts = np.asarray([t.astimezone(dt.UTC) for t in body.last_ts])
    return _run_predict(state, model_version_id, values, last_ts)


def _run_predict(state: AppState, model_version_id: int, values: np.ndarray, last_ts: Any) -> bytes:
    """Check the batch against the model and run it: values (batch, window), finite. Returns the
    ``PredictOut`` JSON."""
    batch = values.shape[0]
    model = _model_for(state, model_version_id, batch)
    window = model.window
    if values.shape[1] != window:
        raise InvalidInput(
            f"windows[0] has {values.shape[1]} values; model {model_version_id} "
            f"({model.series_key} v{model.version}) takes windows of exactly {window} values: "
            f"send shape ({batch}, {window})"
        )
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow shows as a non-finite forecast, refused below
        paths = model.predictor.predict_paths(values, last_ts)  # (B, h), one forward pass
    if not np.isfinite(paths).all():  # e.g. values near 1e308: the model's arithmetic overflows; JSON has no inf/NaN
        bad_rows = np.flatnonzero(~np.isfinite(paths).all(axis=1))
        shown = ", ".join(f"windows[{i}]" for i in bad_rows[:5]) + (" ..." if bad_rows.size > 5 else "")
        raise InvalidInput(
            f"{shown}: the forecast is not a finite number (largest value sent: {np.abs(values).max():.6g}); "
            f"model {model_version_id} ({model.series_key} v{model.version}) cannot work at that magnitude: "
            "send values on the series' own scale"
        )
    state.metrics.predictions.inc(batch)
    return _answer(PredictOut.model_construct(
        model_version_id=model_version_id, series_key=model.series_key, version=model.version, window=window,
        horizon=paths.shape[1], predictions=[], paths=[]), np.asarray(paths, dtype=np.float64))


def _answer(head: PredictOut, paths: np.ndarray) -> bytes:
    """``head`` with its ``predictions`` and ``paths`` taken from ``paths`` (B, h), as JSON bytes.

    orjson writes the float64 arrays straight from numpy, with the same shortest round-trip digits
    as pydantic: 256 windows x 24 steps in ~0.1 ms where ``tolist``, the model and its dump took
    ~0.5 ms (the fields are the model's, so the schema and the answer cannot drift apart)."""
    fields = head.model_dump()
    fields["predictions"] = np.ascontiguousarray(paths[:, 0])
    fields["paths"] = np.ascontiguousarray(paths)
    return orjson.dumps(fields, option=orjson.OPT_SERIALIZE_NUMPY)


QUIET_S = 0.05  # no request but predicts for this long: the event loop may run a small pass itself
_PREDICT_ROUTE = next(r for r in router.routes if isinstance(r, APIRoute) and r.endpoint is predict)
_PREFIX, _SUFFIX = f"{router.prefix}/models/", "/predict"
_OK_HEADERS = (b"content-type", b"application/json")


class PredictFastPath:
    """``POST /v1/models/{id}/predict`` with the common body answered before FastAPI routes it.

    The answer is the route's own (``_run_predict``, the same bytes and headers); only the
    framework's routing, parameter solving and request objects are skipped (~0.1 ms of a
    256-window request). The pass runs on the torch thread, or right here when the loop serves
    predicts only (``_alone``), the model is loaded and the batch small (``PredictorCache.run_here``):
    the two hand-offs then saved were ~1 ms of a 256-window request on a machine whose idle
    CPUs wake slowly (bench/results/api.md). The body is read here, through BodyGuard's
    cap for the route, and parsed by ``_fast_windows``. The errors of the run itself (404,
    413, 422: ``ForecasterError`` below 500) are answered with the problem the route's
    handler would send. Anything else - a body the fast parse declines (the full
    validation names what is wrong), one over ``LOOP_PARSE_BYTES``, a content type or an
    id the route would refuse, any other error - goes on to the route with the body
    replayed, so its answer is exactly the route's. The request is counted and timed under
    the route's template.
    """

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app, self.state = app, state

    def _alone(self) -> bool:
        """Whether the event loop serves predicts only: no other request in flight, and none but predicts in
        the last ``QUIET_S``. Then a pass may run right here (no hand-off to wait for); otherwise it goes to
        the torch thread so that the loop stays free for the rest. Measured (2 cores, wrk: GETs at 8
        connections beside predicts of 256 windows at 1): running every lone pass here cut the GETs from
        ~6,000 to ~2,500 a second (p50 1.1 -> 3.8 ms) while the predicts went 100 -> 240 a second."""
        metrics = self.state.metrics
        return metrics.in_flight <= 1 and time.monotonic() - metrics.other_at > QUIET_S

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        model_version_id = _predict_target(scope) if scope["type"] == "http" and scope["method"] == "POST" else None
        if model_version_id is None or not json_declared(scope["headers"]):
            await self.app(scope, receive, send)
            return
        scope["route"] = _PREDICT_ROUTE  # BodyGuard's cap for the route, and the metrics' route label
        try:
            raw = await _read_body(receive)
        except AnsweredEarly as exc:  # over the cap: BodyGuard's 413, sent as the route's handler sends it
            await exc.response(scope, receive, send)
            return
        fast = _fast_windows(raw) if len(raw) <= LOOP_PARSE_BYTES else None
        if fast is not None:
            try:
                if self._alone() and self.state.predictors.run_here(model_version_id, len(fast)):
                    out = _run_predict(self.state, model_version_id, fast, None)
                else:
                    out = await self.state.predictors.submit(_run_predict, self.state, model_version_id, fast, None)
            except ForecasterError as exc:
                if status_for(exc) < 500:  # the route's handler answers just this (and logs only a 5xx)
                    await error_response(exc)(scope, receive, send)
                    return
            except Exception:  # noqa: BLE001 - the route runs it again, and its handlers answer (e.g. a 503)
                pass
            else:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", str(len(out)).encode()), _OK_HEADERS]})
                await send({"type": "http.response.body", "body": out})
                return
        await self.app(scope, _replay(raw, receive), send)


def _predict_target(scope: Scope) -> int | None:
    """The model_version_id of a request to the predict route, or None (another route, or an id
    the route's validation would refuse or read otherwise, e.g. ``007``)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    if not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
        return None
    text = path[len(_PREFIX) : -len(_SUFFIX)]
    if not (text.isascii() and text.isdigit()) or text[0] == "0" or len(text) > 19 or int(text) > MAX_ID:
        return None
    return int(text)


async def _read_body(receive: Receive) -> bytes:
    """The whole request body, as ``Request.body`` reads it (ClientDisconnect if the client left)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(raw: bytes, receive: Receive) -> Receive:
    """``receive`` with the body already read handed out first, in one message."""
    pending: list[Message] = [{"type": "http.request", "body": raw, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


@router.post("/series/{key}/promote", response_model=ChampionOut, dependencies=[AdminDep],
             responses=problems(401, 403, 404, 409, 422))
def promote(key: str, body: PromoteIn, sm: SessionMakerDep) -> ChampionOut:
    """Serve `version` from now on (admin); the answer says what the gate said of it.

    A version the gate rejected needs `"force": true` (else 409, naming the gate's verdict).
    The alias, its history and the stored forecast move in one transaction.
    """
    change = models.promote_version(sm, series_key=key, version=body.version, force=body.force)
    return ChampionOut.from_domain(change.champion, change.forecast)


@router.post("/series/{key}/baseline", response_model=ChampionOut, dependencies=[AdminDep],
             responses=problems(401, 403, 404))
def serve_baseline(key: str, sm: SessionMakerDep) -> ChampionOut:
    """Put the series back on its baseline (naive or seasonal naive, whichever did better recently) (admin).

    The champion version is retired; a rollback returns to it, and a later retrain whose
    version passes the gate is promoted as usual. Nothing moves if the baseline already serves.
    """
    change = models.serve_baseline(sm, series_key=key)
    return ChampionOut.from_domain(change.champion, change.forecast)


@router.post("/series/{key}/rollback", response_model=ChampionOut, dependencies=[AdminDep],
             responses=problems(401, 403, 404, 409))
def rollback(key: str, sm: SessionMakerDep) -> ChampionOut:
    """Serve again what served before the last move: an earlier version, or the baseline (admin).

    Each rollback goes one step further back; past the first recorded move the baseline serves.
    The alias, its history and the stored forecast move in one transaction.
    """
    change = models.rollback(sm, series_key=key)
    return ChampionOut.from_domain(change.champion, change.forecast)
