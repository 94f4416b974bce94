"""Stored forecast paths: one row per step of each distinct path, with its actual once it arrives.

Writes run inside the caller's transaction. Actuals are filled in by
``store.observations`` when the observation of a target is stored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from forecaster.store.tables import Forecast, Observation, Series

SERVED_ORDER = (Forecast.target_ts.desc(), Forecast.id.desc())  # the served one first: made from the newest data


def latest(session: Session, series_id: int) -> Forecast | None:
    """The forecast a series serves: of the latest target (the one made from the newest
    observations), the last stored; a forecast stored later from older data never wins."""
    return session.scalar(select(Forecast).where(Forecast.series_id == series_id, Forecast.step == 1)
                          .order_by(*SERVED_ORDER).limit(1))


def store(session: Session, series: Series, *, model_version_id: int | None, method: str, target_ts: dt.datetime,
          value: float, lower: float | None, upper: float | None, level: float | None) -> Forecast:
    """Store a one-step forecast (a path of one step, origin unknown) through ``store_path``."""
    return store_path(session, series, model_version_id=model_version_id, method=method, origin_ts=None,
                      points=[(target_ts, value, lower, upper)], level=level)


PathRow = tuple[dt.datetime, float, float | None, float | None]  # (target_ts, value, lower, upper)


def store_path(session: Session, series: Series, *, model_version_id: int | None, method: str,
               origin_ts: dt.datetime | None, points: Sequence[PathRow], level: float | None) -> Forecast:
    """Store a path (step k = points[k - 1], all rows one ``made_at``); returns its step-1 row.

    Nothing is stored when the served path already says the same: its step 1 has the same target,
    maker (version and method) and value, and it has as many steps. A path of another length is
    stored (a changed horizon, or a served path that lost steps, is whole again).

    Raises:
        ValueError: no points, or a path of more than one step without its origin.
    """
    if not points or (origin_ts is None and len(points) > 1):
        raise ValueError(f"{series.key}: a forecast path needs at least one step, and its origin when it has "
                         f"more than one ({len(points)} steps, origin {origin_ts})")
    newest = latest(session, series.id)
    first = points[0]
    if (
        newest is not None
        and newest.target_ts == first[0]
        and newest.model_version_id == model_version_id
        and newest.method == method
        and newest.value == first[1]
        and len(path_rows(session, newest)) == len(points)
    ):
        return newest  # nothing new to say: keep one path per distinct forecast
    made = dt.datetime.now(dt.UTC)
    rows = [Forecast(series_id=series.id, model_version_id=model_version_id, method=method, target_ts=t, value=v,
                     lower=lo, upper=up, level=level, step=k, origin_ts=origin_ts, made_at=made)
            for k, (t, v, lo, up) in enumerate(points, start=1)]
    session.add_all(rows)
    session.flush()
    return rows[0]


def path_rows(session: Session, first: Forecast) -> list[Forecast]:
    """Every row of the path ``first`` (a step-1 row) belongs to, by step; ``[first]`` for a row from
    before paths (no origin)."""
    if first.origin_ts is None:
        return [first]
    rest = session.scalars(
        select(Forecast).where(Forecast.series_id == first.series_id, Forecast.target_ts > first.target_ts,
                               Forecast.step > 1, Forecast.origin_ts == first.origin_ts,
                               Forecast.made_at == first.made_at,
                               Forecast.model_version_id.is_(None) if first.model_version_id is None
                               else Forecast.model_version_id == first.model_version_id,
                               Forecast.method == first.method)
        .order_by(Forecast.step))
    return [first, *rest]


def since(session: Session, series_id: int, target_ts: dt.datetime, step: int = 1) -> list[Forecast]:
    """Stored forecasts of a series at one step of their paths whose target is at or after ``target_ts``,
    oldest first."""
    return list(session.scalars(select(Forecast).where(Forecast.series_id == series_id, Forecast.target_ts >= target_ts,
                                                       Forecast.step == step)
                                .order_by(Forecast.id)))


def latest_methods(session: Session, series_ids: list[int]) -> dict[int, str]:
    """Series id -> method of the forecast it serves (``latest``)."""
    rank = func.row_number().over(partition_by=Forecast.series_id, order_by=SERVED_ORDER).label("rank")
    ranked = (select(Forecast.series_id, Forecast.method, rank)
              .where(Forecast.series_id.in_(series_ids), Forecast.step == 1).subquery())  # as latest: step 1
    return {sid: method for sid, method in session.execute(
        select(ranked.c.series_id, ranked.c.method).where(ranked.c.rank == 1))}


def scored_errors(session: Session, model_version_id: int, limit: int,
                  step: int = 1) -> list[tuple[dt.datetime, float]]:
    """(target, actual - value) of a version's forecasts at ``step`` of their paths with an actual, oldest
    target first; the newest ``limit`` rows are read and the newest forecast of each target wins."""
    rows = session.execute(
        select(Forecast.target_ts, Forecast.value, Forecast.actual)
        .where(Forecast.model_version_id == model_version_id, Forecast.actual.is_not(None), Forecast.step == step)
        .order_by(Forecast.target_ts.desc(), Forecast.id.desc()).limit(limit)
    ).all()
    newest: dict[dt.datetime, float] = {}
    for target, value, actual in rows:
        if actual is not None:  # always: the query asks for it
            newest.setdefault(target, actual - value)
    return sorted(newest.items())


def clear_actuals(session: Session, series_id: int, start: dt.datetime, end: dt.datetime) -> None:
    """Forget actual and error of forecasts whose target lies in [start, end] (their observations went)."""
    session.execute(
        update(Forecast)
        .where(Forecast.series_id == series_id, Forecast.target_ts >= start, Forecast.target_ts <= end)
        .values(actual=None, error=None)
        .execution_options(synchronize_session=False)
    )


def drop_unscored(session: Session, series_id: int, *, after: dt.datetime | None) -> None:
    """Delete the forecasts without an actual made from data past the next step ``after``: every unscored
    row of a path whose step 1 targets a time past ``after`` (all unscored rows when None).

    A path made from observations that remain keeps its later steps, though they target times past
    ``after``: they are still the forecasts of those times, and the served path stays whole.
    """
    stale = (Forecast.series_id == series_id) & Forecast.actual.is_(None)
    if after is not None:
        first = aliased(Forecast)
        made_past = (select(first.id).where(first.series_id == Forecast.series_id, first.step == 1,
                                            first.origin_ts == Forecast.origin_ts, first.target_ts > after)
                     .correlate(Forecast).exists())  # a path's rows share its origin (None: from before paths)
        stale = stale & (((Forecast.step == 1) & (Forecast.target_ts > after))
                         | (Forecast.origin_ts.is_not(None) & made_past))
    session.execute(delete(Forecast).where(stale).execution_options(synchronize_session=False))


def recent_scored(session: Session, series_ids: Sequence[int] | None, window: int,
                  steps: Collection[int] | None = None) -> list[Any]:
    """Rows (series_id, model_version_id, method, target_ts, made_at, value, lower, upper, actual, previous, step).

    One forecast per (forecaster, target, step): the latest stored. Then the latest ``window``
    targets per forecaster and step (``steps``: only those steps; None: every step). ``previous``
    is the naive forecast of the target as it was when the path was made: the newest observation
    at or before the path's origin (rows from before paths, without an origin: the newest before
    the target), or None. One query, window functions, on SQLite and PostgreSQL alike.
    """
    f = Forecast
    dedupe = func.row_number().over(
        partition_by=(f.series_id, f.model_version_id, f.method, f.target_ts, f.step), order_by=f.id.desc())
    inner = select(f.series_id, f.model_version_id, f.method, f.target_ts, f.made_at, f.value, f.lower,
                   f.upper, f.actual, f.step, f.origin_ts, dedupe.label("dup")).where(f.actual.is_not(None))
    if series_ids is not None:
        inner = inner.where(f.series_id.in_(series_ids))
    if steps is not None:
        inner = inner.where(f.step.in_(sorted(steps)))
    s1 = inner.subquery()
    rank = func.row_number().over(
        partition_by=(s1.c.series_id, s1.c.model_version_id, s1.c.method, s1.c.step),
        order_by=s1.c.target_ts.desc())
    s2 = select(s1, rank.label("rank")).where(s1.c.dup == 1).subquery()
    previous = (
        select(Observation.value)
        .where(Observation.series_id == s2.c.series_id, Observation.ts < s2.c.target_ts,
               or_(s2.c.origin_ts.is_(None), Observation.ts <= s2.c.origin_ts))
        .order_by(Observation.ts.desc())
        .limit(1)
        .correlate(s2)
        .scalar_subquery()
    )
    q = select(s2.c.series_id, s2.c.model_version_id, s2.c.method, s2.c.target_ts, s2.c.made_at, s2.c.value,
               s2.c.lower, s2.c.upper, s2.c.actual, previous.label("previous"), s2.c.step).where(s2.c.rank <= window)
    return list(session.execute(q).all())


def scored_errors_by_step(session: Session, model_version_id: int, limit: int,
                          h: int) -> dict[int, list[tuple[dt.datetime, float]]]:
    """Step -> (target, actual - value) of a version's forecasts at that step with an actual, oldest target
    first, for steps 1..h; per step the newest ``limit`` targets, the newest forecast of each target wins."""
    rank = func.row_number().over(partition_by=Forecast.step,
                                  order_by=(Forecast.target_ts.desc(), Forecast.id.desc())).label("rank")
    inner = (select(Forecast.id, Forecast.step, Forecast.target_ts, Forecast.value, Forecast.actual, rank)
             .where(Forecast.model_version_id == model_version_id, Forecast.actual.is_not(None),
                    Forecast.step <= h).subquery())
    rows = session.execute(select(inner.c.step, inner.c.target_ts, inner.c.value, inner.c.actual, inner.c.id)
                           .where(inner.c.rank <= limit)).all()
    newest: dict[int, dict[dt.datetime, float]] = {}
    for step, target, value, actual, _ in sorted(rows, key=lambda r: (r[0], r[1], r[4]), reverse=True):
        if actual is not None:
            newest.setdefault(int(step), {}).setdefault(target, actual - value)
    return {k: sorted(v.items()) for k, v in newest.items()}

