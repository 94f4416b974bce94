"""Model versions: list, inspect, predict from client windows, promote and roll back (admin)."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import numpy as np
import orjson
import simdjson
from fastapi import APIRouter, Request, Response
from pydantic import TypeAdapter

from api.deps import AdminDep, AppState, IdPath, SessionDep, SessionMakerDep, StateDep, parse_json, require_json
from api.problems import BatchTooLarge
from api.routes import problems
from api.schemas import ChampionOut, ModelVersionList, ModelVersionOut, PredictIn, PredictOut, PromoteIn
from forecaster.errors import InvalidInput
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
    require_json(request)
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
        if len(lengths) != 1 or raw.count(b"[") != rows + 1:  # ragged, or an array nested in a row
            return None
        values = np.frombuffer(windows.as_buffer(of_type="d"), dtype=np.float64).reshape(rows, lengths.pop())
    except (ValueError, TypeError, RuntimeError, KeyError):  # simdjson: NUMBER_ERROR, INCORRECT_TYPE, ...
        return None
    if values.shape[1] == 0 or not np.isfinite(values).all():
        return None
    return values


def _model_for(state: AppState, model_version_id: int, batch: int) -> Any:
    """The loaded model for a batch of ``batch`` windows (refused past api.max_predict_batch)."""
    limit = state.settings.api.max_predict_batch
    if batch > limit:
        raise BatchTooLarge(f"{batch} windows in one request; at most {limit} (api.max_predict_batch): "
                            "split the batch")
    with state.sm() as session:  # opens a connection only when the model is not cached yet
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
    ok = np.isfinite(paths).all(axis=1)
    if not ok.all():  # e.g. values near 1e308: the model's arithmetic overflows; JSON has no inf/NaN
        bad_rows = np.flatnonzero(~ok)
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
