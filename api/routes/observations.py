"""Writing observations (admin): push them, or delete a time range to repair a series."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime

from api.deps import AdminDep, AppState, StateDep
from api.problems import UnsupportedMediaType
from api.routes import problems
from api.schemas import DeleteObservationsOut, ForecastOut, ObservationIn, PushOut
from forecaster.errors import InvalidInput
from forecaster.usecases import observations as usecase

router = APIRouter(prefix="/v1", tags=["series"])
_CSV_EXAMPLE = "ts,value\n2024-01-01T00:00:00Z,1.5\n2024-01-01T01:00:00Z,1.7\n"
_PUSH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A JSON list of {ts, value}, or CSV with the header `ts,value`, read by the same rules: "
                       "`ts` is ISO-8601 extended text with a UTC offset (`2024-01-01T00:00:00Z`, "
                       "`2024-01-01T01:00+01:00`; no epoch numbers), `value` a finite number written as JSON "
                       "writes numbers (no booleans, null, empty cells or text). A timestamp sent twice: the last "
                       "row wins.",
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": ObservationIn.model_json_schema()},
                "example": [{"ts": "2024-01-01T00:00:00Z", "value": 1.5}, {"ts": "2024-01-01T01:00:00Z", "value": 1.7}],
            },
            "text/csv": {"schema": {"type": "string"}, "example": _CSV_EXAMPLE},
        },
    }
}


def _parse_rows(media: str, body: bytes) -> list[tuple[dt.datetime, float | None]]:
    """The pushed rows, from a JSON list or a ts,value CSV body (two media types: parsed here)."""
    if not body.strip():
        raise InvalidInput("the body is empty: send a JSON list of {\"ts\", \"value\"} or CSV with the header ts,value")
    if media == "text/csv":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"the CSV body is not valid UTF-8 text: byte {exc.start} "
                               f"({body[exc.start:exc.start + 1]!r}) cannot be decoded; send UTF-8") from None
        return list(usecase.parse_csv_observations(text))
    if media == "application/json" or media.endswith("+json"):
        return list(usecase.parse_json_observations(body))
    raise UnsupportedMediaType(f"content-type {media or 'none'!r} is not read here: "
                               "send application/json (a list of {ts, value}) or text/csv (header ts,value)")


def _push(state: AppState, key: str, media: str, body: bytes, frequency: str | None) -> usecase.PushResult:
    rows = _parse_rows(media, body)
    return usecase.push_observations(state.sm, state.settings, series_key=key, rows=rows, frequency=frequency)


@router.post("/series/{key}/observations", response_model=PushOut, dependencies=[AdminDep],
             responses=problems(401, 403, 404, 413, 415, 422), openapi_extra=_PUSH_BODY)
async def push_observations(
    key: str,
    request: Request,
    state: StateDep,
    frequency: Annotated[str | None, Query(
        description="Step of a new push series (5min, 1h, 1D, 1B, ...): needed only when this push creates it.",
    )] = None,
) -> PushOut:
    """Push observations (admin): checked, upserted, then the stored forecast is refreshed, in one transaction.

    JSON and CSV bodies are read by one set of rules: `ts` is ISO-8601 extended text with a UTC offset
    (`Z` or `+01:00`; epoch numbers, ISO basic and week dates are refused), `value` a finite number
    (booleans, null, empty cells, NaN and text are refused). Every row must be on the series' calendar,
    not in the future (beyond `observations.future_tolerance_s`) and within ±1e15. Any row that cannot be
    stored refuses the whole push (422 naming the row and the rule) and nothing is stored. A timestamp
    sent twice in one push: the last row wins, and the earlier ones count as rejected, with a note. A
    timestamp already stored with the same value counts as unchanged, with another value as updated.
    """
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    result = await run_in_threadpool(_push, state, key, media, body, frequency)  # parsing a big push is CPU work
    return PushOut(series_key=result.series_key, created=result.created, new=result.counts.new,
                   updated=result.counts.updated, unchanged=result.counts.unchanged, rejected=result.rejected,
                   notes=list(result.notes), ingest_run_id=result.ingest_run_id,
                   forecast=ForecastOut.from_domain(result.forecast) if result.forecast is not None else None)


@router.delete("/series/{key}/observations", response_model=DeleteObservationsOut, dependencies=[AdminDep],
               responses=problems(401, 403, 404, 422))
def delete_observations(
    key: str,
    state: StateDep,
    start: Annotated[AwareDatetime, Query(description="Delete ts >= start (with a UTC offset).")],
    end: Annotated[AwareDatetime, Query(description="Delete ts <= end (with a UTC offset).")],
) -> DeleteObservationsOut:
    """Delete observations in [start, end] (admin): the repair for rows that should never have got in.

    One transaction: forecasts whose target was deleted lose their actual and error (live accuracy
    follows), the stored forecast is recomputed, and the repair is recorded as an ingest run
    (source `delete`, with the row count).
    """
    result = usecase.delete_observations(state.sm, state.settings, series_key=key, start=start, end=end)
    return DeleteObservationsOut(series_key=result.series_key, deleted=result.deleted,
                                 ingest_run_id=result.ingest_run_id,
                                 forecast=ForecastOut.from_domain(result.forecast) if result.forecast else None)
