"""Series rows: found by key, created or brought up to date from the config.

Every other module reads a series row through these functions, so "the row for
this key" and its ``SeriesNotFound`` message are written once.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from forecaster.config.settings import SeriesSpec
from forecaster.errors import SeriesNotFound
from forecaster.store.tables import Series


def find_series(session: Session, key: str, *, lock: bool = False) -> Series | None:
    """The series row for ``key``, or None.

    ``lock`` takes the series' write lock (``lock_series``), so that two moves of
    the same series' champion queue instead of interleaving.
    """
    q = select(Series).where(Series.key == key)
    if lock and session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(key_share=True)
    return session.scalar(q)


def lock_series(session: Session, series_ids: list[int]) -> None:
    """Hold the write lock of these series until the caller's transaction ends.

    Every transaction that stores observations of a series or its forecast takes
    it before computing the forecast, so the one that computes last has seen every
    other's committed rows. PostgreSQL: ``SELECT ... FOR NO KEY UPDATE`` in id
    order (no deadlock between two lockers of several series), which does not wait
    on the key-share locks that inserting observations and forecasts takes on the
    series row. SQLite: nothing to do, a write transaction holds the database's
    one write lock from BEGIN IMMEDIATE.
    """
    if not series_ids or session.get_bind().dialect.name != "postgresql":
        return
    session.execute(select(Series.id).where(Series.id.in_(sorted(series_ids))).order_by(Series.id)
                    .with_for_update(key_share=True))


def series_by_key(session: Session, key: str, *, lock: bool = False) -> Series:
    """The series row for ``key``.

    Raises:
        SeriesNotFound: naming the key.
    """
    row = find_series(session, key, lock=lock)
    if row is None:
        raise SeriesNotFound(f"no series {key!r}")
    return row


def series_by_ids(session: Session, ids: list[int]) -> list[Series]:
    """The rows of these ids (any order)."""
    return list(session.scalars(select(Series).where(Series.id.in_(ids))))


def series_by_keys(session: Session, keys: list[str] | None = None) -> list[Series]:
    """The stored rows of these keys (all when None), by key."""
    q = select(Series).order_by(Series.key)
    if keys is not None:
        q = q.where(Series.key.in_(keys))
    return list(session.scalars(q))


def ids_by_key(session: Session, keys: list[str]) -> dict[str, int]:
    """``{key: id}`` of the stored series among ``keys``."""
    return {k: i for k, i in session.execute(select(Series.key, Series.id).where(Series.key.in_(keys)))}


def sync_series(session: Session, spec: SeriesSpec) -> Series:
    """Create the series row for ``spec`` or bring its source, params and frequency
    up to date with the config. Runs inside the caller's transaction."""
    row = find_series(session, spec.key)
    if row is None:
        row = Series(key=spec.key, source=spec.source, params=dict(spec.params),
                     frequency=spec.frequency, unit=spec.unit, calendar=spec.calendar, horizon=spec.steps)
        session.add(row)
        session.flush()
    else:
        row.source, row.params, row.frequency, row.unit = spec.source, dict(spec.params), spec.frequency, spec.unit
        row.calendar, row.horizon = spec.calendar, spec.steps
    return row
