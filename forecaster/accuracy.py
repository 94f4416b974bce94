"""Live accuracy: how the forecasts we stored did once their actuals arrived.

Per series and per model version, over the most recent forecasts with an
actual: count, MAE, MASE (against the naive forecast of the same targets, so
1.0 means "no better than repeating the last value") and interval coverage.
A champion whose live MASE drifts above 1 over the last N actuals is flagged.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from forecaster.db import Forecast, ModelVersion, Observation, Series
from forecaster.errors import SeriesNotFound


@dataclass(frozen=True)
class AccuracyRow:
    """Live accuracy of one forecaster (a model version, or a baseline) on one series."""

    method: str  # model / naive / seasonal_naive
    model_version: int | None
    model_version_id: int | None
    count: int
    mae: float | None
    mase: float | None
    coverage: float | None
    first_target: dt.datetime | None
    last_target: dt.datetime | None


@dataclass(frozen=True)
class SeriesAccuracy:
    series_key: str
    window: int
    rows: list[AccuracyRow]
    champion_live_mase: float | None
    drifting: bool
    reason: str


def _previous_values(session: Session, series: Series, targets: list[dt.datetime]) -> dict[dt.datetime, float]:
    """For each target timestamp, the observation one step before it (the naive forecast)."""
    offset = pd.tseries.frequencies.to_offset(series.frequency)
    before = {t: (pd.Timestamp(t) - offset).to_pydatetime() for t in targets}
    found: dict[dt.datetime, float] = {}
    wanted = sorted(set(before.values()))
    for i in range(0, len(wanted), 500):
        found.update(session.execute(
            select(Observation.ts, Observation.value)
            .where(Observation.series_id == series.id, Observation.ts.in_(wanted[i:i + 500]))
        ).all())
    return {t: found[p] for t, p in before.items() if p in found}


def _summarise(fs: list[Forecast], prev: dict[dt.datetime, float]) -> tuple[int, float | None, float | None, float | None]:
    actual = np.array([f.actual for f in fs], dtype=float)
    pred = np.array([f.value for f in fs], dtype=float)
    err = np.abs(actual - pred)
    mae = float(err.mean()) if err.size else None
    naive = np.array([abs(f.actual - prev[f.target_ts]) for f in fs if f.target_ts in prev], dtype=float)
    model_on_same = np.array([abs(f.actual - f.value) for f in fs if f.target_ts in prev], dtype=float)
    mase = None
    if naive.size and naive.mean() > 0:
        mase = float(model_on_same.mean() / naive.mean())
    with_iv = [f for f in fs if f.lower is not None and f.upper is not None]
    coverage = (float(np.mean([f.lower <= f.actual <= f.upper for f in with_iv]))  # type: ignore[operator]
                if with_iv else None)
    return len(fs), mae, mase, coverage


def series_accuracy(session: Session, *, series_key: str, window: int = 100, min_count: int = 10) -> SeriesAccuracy:
    """Live accuracy of every forecaster that served this series, over its last
    ``window`` forecasts with actuals; drift flag for the current champion.

    Raises:
        SeriesNotFound: naming the key.
    """
    from forecaster.registry import champion_of

    series = session.scalar(select(Series).where(Series.key == series_key))
    if series is None:
        raise SeriesNotFound(f"no series {series_key!r}")
    fs = list(session.scalars(
        select(Forecast)
        .where(Forecast.series_id == series.id, Forecast.actual.is_not(None))
        .order_by(Forecast.target_ts.desc(), Forecast.id.desc())
    ))
    # One forecast per (forecaster, target): the latest made before the actual.
    seen: set[tuple[int | None, str, dt.datetime]] = set()
    groups: dict[tuple[int | None, str], list[Forecast]] = {}
    for f in fs:
        k = (f.model_version_id, f.method, f.target_ts)
        if k in seen:
            continue
        seen.add(k)
        g = groups.setdefault((f.model_version_id, f.method), [])
        if len(g) < window:
            g.append(f)
    prev = _previous_values(session, series, sorted({f.target_ts for g in groups.values() for f in g}))
    versions = {mv.id: mv.version for mv in session.scalars(
        select(ModelVersion).where(ModelVersion.series_id == series.id))}
    rows = []
    for (mv_id, method), g in groups.items():
        count, mae, mase, cov = _summarise(g, prev)
        rows.append(AccuracyRow(method, versions.get(mv_id) if mv_id else None, mv_id, count, mae, mase, cov,
                                min(f.target_ts for f in g), max(f.target_ts for f in g)))
    rows.sort(key=lambda r: r.last_target or dt.datetime.min.replace(tzinfo=dt.timezone.utc), reverse=True)
    champ = champion_of(session, series.id)
    live = next((r for r in rows if champ is not None and r.model_version_id == champ.id), None)
    drifting, reason = False, "no champion" if champ is None else "not enough actuals yet"
    if live is not None and live.mase is not None and live.count >= min_count:
        drifting = live.mase > 1.0
        reason = (f"v{live.model_version} live MASE {live.mase:.2f} over the last {live.count} actuals "
                  f"{'is above' if drifting else 'is below'} naive (1.00)")
    elif live is not None:
        reason = f"v{live.model_version} has {live.count} actuals; drift is judged from {min_count}"
    return SeriesAccuracy(series_key, window, rows, live.mase if live else None, drifting, reason)
