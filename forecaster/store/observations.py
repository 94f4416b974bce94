"""Stored observations: upsert, read, page, delete, and the actuals they give stored forecasts.

Timestamps go in aware and come back aware UTC (``tables.UTCDateTime``), also
from aggregates. Every write runs inside the caller's transaction.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
from sqlalchemy import CursorResult, Table, and_, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from forecaster.errors import InvalidInput
from forecaster.store.tables import Forecast, Observation, ObservationCount, Series, aware, utcnow

INSERT_CHUNK = 5000  # rows per INSERT statement


@dataclass(frozen=True)
class UpsertCounts:
    new: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def changed(self) -> int:
        return self.new + self.updated


# ---------------------------------------------------------------- write


def _insert(dialect: str) -> Any:
    return (postgresql if dialect == "postgresql" else sqlite).insert(Observation)


def upsert(session: Session, series: Series, frame: pd.DataFrame) -> UpsertCounts:
    """Insert new timestamps, update changed values, leave equal ones alone.

    ``frame`` is tidy (``ts`` aware UTC, unique, sorted; ``value`` finite float),
    as ``sources.tidy_frame`` returns it. Never deletes. Forecasts whose target
    timestamps arrive get their actual and error filled in.

    Raises:
        InvalidInput: the frame is not tidy.
    """
    if frame.empty:
        return UpsertCounts()
    ts = pd.DatetimeIndex(frame["ts"])
    if ts.tz is None:
        raise InvalidInput(f"{series.key}: timestamps must be timezone-aware")
    if not ts.is_unique:
        raise InvalidInput(f"{series.key}: duplicate timestamps in one batch")
    stamps = [t.to_pydatetime() for t in ts.tz_convert("UTC")]
    values = [float(v) for v in frame["value"].to_numpy(dtype="float64")]
    lo, hi = min(stamps), max(stamps)
    rows = session.execute(
        select(Observation.ts, Observation.value).where(
            Observation.series_id == series.id, Observation.ts >= lo, Observation.ts <= hi
        )
    )
    existing = {t: v for t, v in rows}
    now = utcnow()
    new_rows, changed = [], []
    for t, v in zip(stamps, values, strict=True):
        old = existing.get(t)
        if old is None:
            new_rows.append({"series_id": series.id, "ts": t, "value": v, "ingested_at": now})
        elif old != v:
            changed.append({"b_ts": t, "b_value": v})
    dialect = session.get_bind().dialect.name
    for start in range(0, len(new_rows), INSERT_CHUNK):
        stmt = _insert(dialect)
        # A concurrent writer may have added the same timestamp since we looked:
        # take the newer value rather than failing the whole series.
        stmt = stmt.on_conflict_do_update(
            index_elements=["series_id", "ts"], set_={"value": stmt.excluded.value, "ingested_at": now}
        )
        session.execute(stmt, new_rows[start:start + INSERT_CHUNK])
    if changed:
        session.connection().execute(
            update(cast(Table, Observation.__table__))  # Core: one executemany of (ts, value)
            .where(and_(Observation.series_id == series.id, Observation.ts == bindparam("b_ts")))
            .values(value=bindparam("b_value"), ingested_at=now),
            changed,
        )
    if new_rows or changed:
        fill_actuals(session, series.id, lo, hi)
    return UpsertCounts(new=len(new_rows), updated=len(changed), unchanged=len(stamps) - len(new_rows) - len(changed))


def fill_actuals(session: Session, series_id: int, lo: dt.datetime, hi: dt.datetime) -> int:
    """Record actual and error on stored forecasts whose target lies in [lo, hi]."""
    obs = (
        select(Observation.value)
        .where(Observation.series_id == Forecast.series_id, Observation.ts == Forecast.target_ts)
        .scalar_subquery()
    )
    result = cast(CursorResult[Any], session.execute(
        update(Forecast)
        .where(
            Forecast.series_id == series_id,
            Forecast.target_ts >= lo,
            Forecast.target_ts <= hi,
            select(Observation.ts)
            .where(Observation.series_id == Forecast.series_id, Observation.ts == Forecast.target_ts)
            .exists(),
        )
        .values(actual=obs, error=obs - Forecast.value)
        .execution_options(synchronize_session=False)
    ))
    return int(result.rowcount or 0)


def delete_range(session: Session, series_id: int, start: dt.datetime, end: dt.datetime) -> int:
    """Delete the observations with ``start <= ts <= end``; returns how many went."""
    in_range = (Observation.series_id == series_id) & (Observation.ts >= start) & (Observation.ts <= end)
    result = cast(CursorResult[Any], session.execute(delete(Observation).where(in_range)))
    return int(result.rowcount or 0)


# ---------------------------------------------------------------- read


def load_values(session: Session, series_id: int, *, tail: int | None = None,
                since: dt.datetime | None = None) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Stored observations, oldest first, optionally only the last ``tail`` / those at or after ``since``."""
    q = select(Observation.ts, Observation.value).where(Observation.series_id == series_id)
    if since is not None:
        q = q.where(Observation.ts >= since)
    if tail is not None:
        q = q.order_by(Observation.ts.desc()).limit(tail)
        rows = list(session.execute(q).all())[::-1]
    else:
        rows = list(session.execute(q.order_by(Observation.ts)).all())
    return _index([r[0] for r in rows]), np.asarray([r[1] for r in rows], dtype=np.float64)


def _index(stamps: list[dt.datetime]) -> pd.DatetimeIndex:
    """A UTC index of stored timestamps: nanosecond resolution, or microseconds when a stamp lies past
    what nanoseconds hold (years before 1677 or after 2262: a row stored before validation existed),
    so that reading a damaged series never fails and its repair stays possible."""
    try:
        return pd.DatetimeIndex(stamps, tz="UTC") if stamps else pd.DatetimeIndex([], tz="UTC")
    except (pd.errors.OutOfBoundsDatetime, OverflowError):
        naive = np.array([s.astimezone(dt.UTC).replace(tzinfo=None) for s in stamps], dtype="datetime64[us]")
        return pd.DatetimeIndex(naive).tz_localize("UTC")


def latest_ts(session: Session, series_id: int) -> dt.datetime | None:
    """The newest stored timestamp of a series (None: nothing stored)."""
    return session.scalar(select(aware(func.max(Observation.ts))).where(Observation.series_id == series_id))


def first_ts(session: Session, series_id: int) -> dt.datetime | None:
    """The oldest stored timestamp of a series (None: nothing stored)."""
    return session.scalar(select(aware(func.min(Observation.ts))).where(Observation.series_id == series_id))


@dataclass(frozen=True)
class SeriesStats:
    count: int
    last_ts: dt.datetime | None


def _newest_ts() -> Any:
    """The newest observation of the outer query's series: one backward step on the (series_id, ts) key."""
    return aware(select(Observation.ts).where(Observation.series_id == Series.id)
                 .order_by(Observation.ts.desc()).limit(1).correlate(Series).scalar_subquery())


def stats(session: Session, series_ids: list[int] | None = None) -> dict[int, SeriesStats]:
    """Observation count and newest timestamp by series id (only series with observations).

    The count is ``observation_counts``', kept by the database on every insert and delete; the
    newest timestamp one index step per series: no read of a series' rows, however many.
    """
    q = (select(Series.id, ObservationCount.observations, _newest_ts())
         .join(ObservationCount, ObservationCount.series_id == Series.id).where(ObservationCount.observations > 0))
    if series_ids is not None:
        q = q.where(Series.id.in_(series_ids))
    return {sid: SeriesStats(int(n), last) for sid, n, last in session.execute(q)}


# ---------------------------------------------------------------- pages


@dataclass(frozen=True)
class ObservationsPage:
    series_key: str
    rows: list[tuple[dt.datetime, float]]
    next_cursor: str | None


def encode_cursor(ts: dt.datetime) -> str:
    """An opaque cursor for 'after ``ts``' (URL-safe base64 of the ISO time)."""
    return base64.urlsafe_b64encode(ts.astimezone(dt.UTC).isoformat().encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dt.datetime:
    """The (UTC) timestamp inside a cursor.

    Raises:
        InvalidInput: the cursor did not come from ``encode_cursor``: not base64 text of an ISO time
            with an offset, or a time that lies outside what UTC can hold (``0001-01-01T00:00+05:00``).
    """
    refused = InvalidInput(f"cursor {cursor!r} is not one this API gave out; pass next_cursor unchanged")
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        ts = dt.datetime.fromisoformat(raw.decode())
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise refused
        return ts.astimezone(dt.UTC)
    except (binascii.Error, UnicodeError, ValueError, OverflowError):
        raise refused from None


def page(session: Session, series: Series, *, start: dt.datetime | None, end: dt.datetime | None, limit: int,
         cursor: str | None) -> ObservationsPage:
    """Observations with ``start <= ts <= end``, oldest first, ``limit`` at most, after ``cursor``.

    Keyset paging on the (series_id, ts) primary key: each page is one index
    range scan, however deep into the series it is.

    Raises:
        InvalidInput: a bad cursor.
    """
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
    return ObservationsPage(series.key, rows, encode_cursor(rows[-1][0]) if more else None)


def newest_by_key(session: Session) -> list[tuple[str, dt.datetime]]:
    """(series key, newest observation ts) of every series with observations, by key (index steps, no scan)."""
    return [(k, ts) for k, ts in session.execute(
        select(Series.key, _newest_ts()).join(ObservationCount, ObservationCount.series_id == Series.id)
        .where(ObservationCount.observations > 0).order_by(Series.key))]
