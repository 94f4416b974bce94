"""Series, their observations, and pushing observations (admin)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime, TypeAdapter

from forecaster import catalog as queries
from api.deps import AdminDep, AppState, SessionDep, SettingsDep, StateDep, parse_json
from api.problems import UnsupportedMediaType
from api.routes import problems
from api.schemas import ForecastOut, ObservationIn, ObservationOut, ObservationPage, PushOut, SeriesList, SeriesOut
from forecaster.errors import InvalidInput

router = APIRouter(prefix="/v1", tags=["series"])
_observations = TypeAdapter(list[ObservationIn])
_CSV_EXAMPLE = "ts,value\n2024-01-01T00:00:00Z,1.5\n2024-01-01T01:00:00Z,1.7\n"
_PUSH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A JSON list of {ts, value}, or CSV with the header `ts,value`. Timestamps need a UTC offset.",
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": ObservationIn.model_json_schema()},
                "example": [{"ts": "2024-01-01T00:00:00Z", "value": 1.5}, {"ts": "2024-01-01T01:00:00Z", "value": 1.7}],
            },
            "text/csv": {"schema": {"type": "string"}, "example": _CSV_EXAMPLE},
        },
    }
}


def _summary_out(s: queries.SeriesSummary) -> SeriesOut:
    return SeriesOut(key=s.key, source=s.source, frequency=s.frequency, unit=s.unit, params=s.params,
                     last_observation_ts=s.last_observation_ts, observation_count=s.observation_count,
                     champion_version=s.champion_version, champion_model_version_id=s.champion_model_version_id,
                     configured=s.configured)


@router.get("/series", response_model=SeriesList, responses=problems())
def list_series(session: SessionDep, settings: SettingsDep) -> SeriesList:
    """Every series (stored or configured): source, frequency, unit, last observation, count, champion."""
    return SeriesList(series=[_summary_out(s) for s in queries.list_series(session, settings)])


@router.get("/series/{key}", response_model=SeriesOut, responses=problems(404))
def read_series(key: str, session: SessionDep, settings: SettingsDep) -> SeriesOut:
    """One series. Keys hold `:`, `^` and `,`; URL-encode them (`yfinance:%5EGSPC:close`) or send them as they are."""
    return _summary_out(queries.series_summary(session, settings, key))


@router.get("/series/{key}/observations", response_model=ObservationPage, responses=problems(404, 422))
def read_observations(
    key: str,
    session: SessionDep,
    start: Annotated[AwareDatetime | None, Query(description="Only ts >= start (with a UTC offset).")] = None,
    end: Annotated[AwareDatetime | None, Query(description="Only ts <= end (with a UTC offset).")] = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_PAGE, description="Rows per page.")] = 1000,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> ObservationPage:
    """Stored observations, oldest first, a page at a time (keyset paging on ts)."""
    page = queries.observations_page(session, series_key=key, start=start, end=end, limit=limit, cursor=cursor)
    return ObservationPage(series_key=page.series_key, next_cursor=page.next_cursor,
                           observations=[ObservationOut(ts=t, value=v) for t, v in page.rows])


def _parse_rows(media: str, body: bytes) -> list[tuple[dt.datetime, float | None]]:
    """The pushed rows, from a JSON list or a ts,value CSV body (two media types: parsed here)."""
    if not body.strip():
        raise InvalidInput("the body is empty: send a JSON list of {\"ts\", \"value\"} or CSV with the header ts,value")
    if media == "text/csv":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"the CSV body is not UTF-8 (byte {exc.start})") from None
        return list(queries.parse_csv_observations(text))
    if media == "application/json" or media.endswith("+json"):
        return [(r.ts, r.value) for r in parse_json(_observations, body)]
    raise UnsupportedMediaType(f"content-type {media or 'none'!r} is not read here: "
                               "send application/json (a list of {ts, value}) or text/csv (header ts,value)")


def _push(state: AppState, key: str, media: str, body: bytes, frequency: str | None) -> queries.PushResult:
    frame = queries.rows_to_frame(_parse_rows(media, body))
    return queries.push_observations(state.sm, state.settings, series_key=key, frame=frame, frequency=frequency)


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
    """Push observations (admin): upserted, then the stored forecast is refreshed, in one transaction.

    A timestamp already stored with the same value counts as unchanged, with another value as
    updated. Rows whose value is NaN, infinite or empty are dropped and counted as rejected.
    """
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    result = await run_in_threadpool(_push, state, key, media, body, frequency)  # parsing a big push is CPU work
    return PushOut(series_key=result.series_key, created=result.created, new=result.counts.new,
                   updated=result.counts.updated, unchanged=result.counts.unchanged, rejected=result.rejected,
                   notes=list(result.notes), ingest_run_id=result.ingest_run_id,
                   forecast=ForecastOut.from_domain(result.forecast) if result.forecast is not None else None)
