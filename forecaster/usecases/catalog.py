"""The series catalogue as users browse it: summaries and observation pages (reads only).

    list_series(session, settings) -> list[SeriesSummary]
    series_summary(session, settings, key) -> SeriesSummary
    observations_page(session, series_key=, start=, end=, limit=, cursor=) -> ObservationsPage

Plain functions of a session returning frozen dataclasses; the API routes are
thin adapters over them. Pushing and deleting observations are use cases:
forecaster/usecases/observations.py.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from forecaster.config.settings import Settings
from forecaster.store.tables import Alias, ModelVersion, Observation, Series
from forecaster.errors import InvalidInput, SeriesNotFound
from forecaster.usecases.ingest import find_series
from forecaster.store.registry import CHAMPION

MAX_PAGE = 10_000


# ---------------------------------------------------------------- series


@dataclass(frozen=True)
class SeriesSummary:
    key: str
    source: str
    frequency: str
    unit: str | None
    params: dict[str, Any]
    last_observation_ts: dt.datetime | None
    observation_count: int
    champion_version: int | None
    champion_model_version_id: int | None
    configured: bool


def _summaries(session: Session, settings: Settings, key: str | None = None) -> list[SeriesSummary]:
    stats = (
        select(Observation.series_id, func.count().label("n"), func.max(Observation.ts).label("last_ts"))
        .group_by(Observation.series_id)
    )
    if key is not None:
        stats = stats.join(Series, Series.id == Observation.series_id).where(Series.key == key)
    agg = stats.subquery()
    q = (
        select(Series, agg.c.n, agg.c.last_ts, ModelVersion.version, ModelVersion.id)
        .outerjoin(agg, agg.c.series_id == Series.id)
        .outerjoin(Alias, (Alias.series_id == Series.id) & (Alias.name == CHAMPION))
        .outerjoin(ModelVersion, ModelVersion.id == Alias.model_version_id)
        .order_by(Series.key)
    )
    if key is not None:
        q = q.where(Series.key == key)
    configured = {s.key for s in settings.series}
    out = [
        SeriesSummary(s.key, s.source, s.frequency, s.unit, dict(s.params or {}), last_ts, int(n or 0),
                      version, mv_id, s.key in configured)
        for s, n, last_ts, version, mv_id in session.execute(q)
    ]
    seen = {s.key for s in out}
    # Configured but never synced (no ingest has run yet): listed, with nothing stored.
    for spec in settings.series:
        if spec.key not in seen and (key is None or spec.key == key):
            out.append(SeriesSummary(spec.key, spec.source, spec.frequency, spec.unit, dict(spec.params),
                                     None, 0, None, None, True))
    return sorted(out, key=lambda s: s.key)


def list_series(session: Session, settings: Settings) -> list[SeriesSummary]:
    """Every series in the database or the config, by key, with its count, last ts and champion."""
    return _summaries(session, settings)


def series_summary(session: Session, settings: Settings, key: str) -> SeriesSummary:
    """One series' summary.

    Raises:
        SeriesNotFound: neither stored nor configured, naming the key.
    """
    found = _summaries(session, settings, key)
    if not found:
        raise SeriesNotFound(f"no series {key!r}")
    return found[0]


# ---------------------------------------------------------------- observations


@dataclass(frozen=True)
class ObservationsPage:
    series_key: str
    rows: list[tuple[dt.datetime, float]]
    next_cursor: str | None


def encode_cursor(ts: dt.datetime) -> str:
    """An opaque cursor for 'after ``ts``' (URL-safe base64 of the ISO time)."""
    return base64.urlsafe_b64encode(ts.astimezone(dt.timezone.utc).isoformat().encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dt.datetime:
    """The timestamp inside a cursor.

    Raises:
        InvalidInput: the cursor did not come from ``encode_cursor``.
    """
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts = dt.datetime.fromisoformat(text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput(f"cursor {cursor!r} is not one this API gave out; pass next_cursor unchanged") from None
    if ts.tzinfo is None:
        raise InvalidInput(f"cursor {cursor!r} is not one this API gave out; pass next_cursor unchanged")
    return ts


def _utc(name: str, t: dt.datetime | None) -> dt.datetime | None:
    """``t`` in UTC (None stays None).

    Raises:
        InvalidInput: ``t`` falls outside year 1..9999 in UTC (9999-12-31T23:00-05:00).
    """
    if t is None:
        return None
    try:
        return t.astimezone(dt.timezone.utc)
    except OverflowError:
        raise InvalidInput(f"{name} {t.isoformat()} is outside the representable range of times") from None


def observations_page(
    session: Session,
    *,
    series_key: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    limit: int = 1000,
    cursor: str | None = None,
) -> ObservationsPage:
    """Observations with ``start <= ts <= end``, oldest first, ``limit`` at most, after ``cursor``.

    Keyset paging on the (series_id, ts) primary key: each page is one index
    range scan, however deep into the series it is.

    Raises:
        SeriesNotFound: naming the key.
        InvalidInput: a bad cursor or limit, or ``end`` before ``start``.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit {limit} is outside 1..{MAX_PAGE}")
    start, end = _utc("start", start), _utc("end", end)
    if start is not None and end is not None and end < start:
        raise InvalidInput(f"end {end.isoformat()} is before start {start.isoformat()}")
    series = find_series(session, series_key)
    if series is None:
        raise SeriesNotFound(f"no series {series_key!r}")
    q = select(Observation.ts, Observation.value).where(Observation.series_id == series.id)
    if start is not None:
        q = q.where(Observation.ts >= start)
    if end is not None:
        q = q.where(Observation.ts <= end)
    if cursor is not None:
        q = q.where(Observation.ts > decode_cursor(cursor))
    rows = [(t, v) for t, v in session.execute(q.order_by(Observation.ts).limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return ObservationsPage(series_key, rows, encode_cursor(rows[-1][0]) if more else None)
