"""Series and their stored observations (reads). Pushing and deleting: api/routes/observations.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from api.deps import SessionDep, SettingsDep
from api.routes import problems
from api.schemas import ObservationOut, ObservationPage, SeriesList, SeriesOut
from forecaster.usecases import catalog as queries

router = APIRouter(prefix="/v1", tags=["series"])


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
