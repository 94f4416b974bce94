"""Live accuracy: how the forecasts we stored did once their actuals arrived.

Per series and per forecaster (a model version, or a baseline method), over the
most recent ``window`` targets with an actual: count, MAE, MASE and interval
coverage, at step 1 of the forecast paths (the flat figures, what drift is judged
on) and at every step (``by_step``). Live MASE divides the forecaster's MAE by the
naive forecast's MAE on the same targets (the last observation at each path's
origin, which is what the naive forecast said at the time), so 1.0 means "no better
than repeating the last value". A champion whose step-1 live MASE is above 1 over
at least ``min_actuals`` actuals is drifting.

One SQL query (``forecaster.store.forecasts.recent_scored``) fetches the rows
for one series or for all of them (for a scrape: only the steps it shows), so a
Prometheus scrape stays cheap.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, load_only

from forecaster.config.settings import Settings
from forecaster.store import forecasts, registry
from forecaster.store.series import series_by_key, series_by_keys
from forecaster.store.tables import ModelVersion, Series


@dataclass(frozen=True)
class StepAccuracy:
    """Live accuracy of one forecaster at one step of its paths."""

    step: int
    count: int
    mae: float | None
    mase: float | None  # MAE / the naive forecast's made at the same origins, on the same targets
    coverage: float | None


@dataclass(frozen=True)
class AccuracyRow:
    """Live accuracy of one forecaster (a model version, or a baseline) on one series: the flat
    figures are step 1 of its paths (what a one-step service scored), ``by_step`` every step."""

    method: str  # model / naive / seasonal_naive
    model_version: int | None
    model_version_id: int | None
    count: int  # targets with an actual, at most the window
    mae: float | None
    mase: float | None  # None when no naive reference exists or the naive MAE is 0
    coverage: float | None  # share of actuals inside the stored interval; None without intervals
    first_target: dt.datetime | None
    last_target: dt.datetime | None
    first_made_at: dt.datetime | None  # when the oldest forecast in the window was made
    by_step: tuple[StepAccuracy, ...] = ()  # each step with actuals, step 1 first


@dataclass(frozen=True)
class SeriesAccuracy:
    """Live accuracy of every forecaster that served a series, and the drift verdict."""

    series_key: str
    window: int
    min_actuals: int
    rows: list[AccuracyRow]  # most recent last target first
    champion_version: int | None
    serving: AccuracyRow | None  # the champion's row, or the latest baseline's when no model serves
    drifting: bool
    reason: str

    @property
    def champion_live_mase(self) -> float | None:
        """The champion's live MASE (None without a champion or its actuals)."""
        if self.champion_version is None or self.serving is None:
            return None
        return self.serving.mase


# ---------------------------------------------------------------- summaries


def summarise(
    actual: np.ndarray, value: np.ndarray, previous: np.ndarray, lower: np.ndarray, upper: np.ndarray,
) -> tuple[float | None, float | None, float | None]:
    """(MAE, live MASE, coverage) of forecasts ``value`` against ``actual``; pure numpy.

    ``previous`` holds the naive forecast of each target (NaN where unknown);
    MASE uses only targets that have one. ``lower``/``upper`` are NaN where a
    forecast carried no interval; coverage uses only those that did.
    """
    if actual.size == 0:
        return None, None, None
    err = np.abs(actual - value)
    known = ~np.isnan(previous)
    mase = None
    if known.any():
        naive_mae = float(np.mean(np.abs(actual[known] - previous[known])))
        if naive_mae > 0:
            mase = float(np.mean(err[known])) / naive_mae
    with_iv = ~(np.isnan(lower) | np.isnan(upper))
    coverage = None
    if with_iv.any():
        a = actual[with_iv]
        coverage = float(np.mean((lower[with_iv] <= a) & (a <= upper[with_iv])))
    return float(np.mean(err)), mase, coverage


def _summary(rows: list[Any]) -> tuple[float | None, float | None, float | None]:
    def column(i: int) -> np.ndarray:
        return np.array([np.nan if r[i] is None else r[i] for r in rows], dtype=np.float64)

    return summarise(column(8), column(5), column(9), column(6), column(7))


def _row(method: str, mv_id: int | None, versions: dict[int, int], rows: list[Any]) -> AccuracyRow | None:
    """The forecaster's row: its step-1 figures (None without step-1 actuals) and every step's."""
    by: dict[int, list[Any]] = {}
    for r in rows:
        by.setdefault(int(r[10]), []).append(r)
    first = by.get(1)
    if not first:
        return None
    mae, mase, coverage = _summary(first)
    steps = tuple(StepAccuracy(k, len(by[k]), *_summary(by[k])) for k in sorted(by))
    return AccuracyRow(
        method=method, model_version=versions.get(mv_id) if mv_id is not None else None, model_version_id=mv_id,
        count=len(first), mae=mae, mase=mase, coverage=coverage,
        first_target=min(r[3] for r in first), last_target=max(r[3] for r in first),
        first_made_at=min(r[4] for r in first), by_step=steps,
    )


def _verdict(key: str, window: int, min_actuals: int, rows: list[AccuracyRow],
             champion: tuple[int, int] | None) -> SeriesAccuracy:
    """Pick the serving row and judge drift (``champion`` is (model_version_id, version) or None)."""
    if champion is not None:
        serving = next((r for r in rows if r.model_version_id == champion[0]), None)
        version = champion[1]
        if serving is None:
            reason, drifting = f"v{version} has no actuals yet; drift is judged from {min_actuals}", False
        elif serving.mase is None or serving.count < min_actuals:
            drifting = False
            reason = f"v{version} has {serving.count} actuals; drift is judged from {min_actuals}"
        else:
            drifting = serving.mase > 1.0
            reason = (f"v{version} live MASE {serving.mase:.3f} over the last {serving.count} actuals is "
                      f"{'above' if drifting else 'below'} naive (1.000)")
        return SeriesAccuracy(key, window, min_actuals, rows, version, serving, drifting, reason)
    serving = next((r for r in rows if r.model_version_id is None and r.method != "model"), None)
    return SeriesAccuracy(key, window, min_actuals, rows, None, serving, False,
                          "no champion: a baseline serves, so there is no model to drift")


def _accuracy(session: Session, series: Iterable[Series], window: int, min_actuals: int,
              steps: Collection[int] | None = None) -> dict[str, SeriesAccuracy]:
    by_id = {s.id: s for s in series}
    if not by_id:
        return {}
    ids = list(by_id)
    raw = forecasts.recent_scored(session, ids, window, steps)
    versions = registry.version_numbers(session, ids)
    champions = {sid: (c.model_version_id, c.version) for sid, c in registry.champions(session, ids).items()}
    groups: dict[int, dict[tuple[int | None, str], list[Any]]] = {sid: {} for sid in ids}
    for r in raw:
        groups[r[0]].setdefault((r[1], r[2]), []).append(r)
    out = {}
    for sid, series_groups in groups.items():
        found = [_row(method, mv_id, versions, g) for (mv_id, method), g in series_groups.items()]
        rows = [r for r in found if r is not None]
        rows.sort(key=lambda r: (r.last_target, r.model_version or 0), reverse=True)
        out[by_id[sid].key] = _verdict(by_id[sid].key, window, min_actuals, rows, champions.get(sid))
    return out


# ---------------------------------------------------------------- public


def series_accuracy(session: Session, *, series_key: str, window: int = 100, min_actuals: int = 20) -> SeriesAccuracy:
    """Live accuracy of every forecaster that served this series, over its last
    ``window`` targets with actuals; the drift verdict for the current champion.

    Raises:
        SeriesNotFound: naming the key.
    """
    series = series_by_key(session, series_key)
    return _accuracy(session, [series], window, min_actuals)[series_key]


def all_accuracy(session: Session, *, window: int = 100, min_actuals: int = 20,
                 steps: Collection[int] | None = None) -> dict[str, SeriesAccuracy]:
    """``series_accuracy`` of every stored series, by key, in one query for the forecasts (``steps``:
    only those steps of the paths; None: every step)."""
    return _accuracy(session, series_by_keys(session), window, min_actuals, steps)


def last_step(series: Series) -> int:
    """The step a series' paths end at: its configured horizon, else its frequency's default."""
    from forecaster.calendar.frequency import default_horizon

    return int(series.horizon) if series.horizon else default_horizon(series.frequency)


def horizons(session: Session) -> dict[str, int]:
    """Series key -> the last step of its paths (``last_step``), for every stored series."""
    return {s.key: last_step(s) for s in series_by_keys(session)}


def drifting_series(session: Session, settings: Settings) -> list[str]:
    """Keys of configured series whose champion drifts and that a retrain has not answered yet.

    Drift is judged with ``settings.monitoring`` (``accuracy_window`` actuals,
    verdict from ``drift_min_actuals``). A series is left out while any version
    of it was trained after the oldest forecast in the champion's window was
    made: that retrain already saw this evidence (and the gate kept the
    champion, or the new one has no window yet). So a persistent drift triggers
    at most one retrain per window of fresh actuals, not one per ingest.
    Reads only.
    """
    m = settings.monitoring
    configured = [s.key for s in settings.series]
    series = series_by_keys(session, configured)
    id_of = {s.key: s.id for s in series}
    due = []
    for key, acc in _accuracy(session, series, m.accuracy_window, m.drift_min_actuals, steps=(1,)).items():
        if not acc.drifting or acc.serving is None or acc.serving.first_made_at is None:
            continue
        newest = registry.latest_version(session, id_of[key], load_only(ModelVersion.created_at))
        if newest is not None and newest.created_at > acc.serving.first_made_at:
            continue
        due.append(key)
    return sorted(due)

