"""Rolling-origin h-step paths: origins, the baselines' paths, per-step scores and folds; pure numpy.

A path made at origin ``o`` (a position in the series) forecasts ``values[o : o + h]`` from
``values[:o]`` alone. A stretch ``[start, stop)`` is judged on the origins whose whole path lies in
it: every position for one-step forecasts (h = 1, cheap and what the one-step service always did),
else at most about ``MAX_ORIGINS`` evenly strided ones, the last path ending at the stretch's end
(a statistical candidate is run once per origin).

Scores: MAE, RMSE, sMAPE and MASE over every origin and step (MASE's scale is the in-sample
one-step naive MAE of the training range, as everywhere), MASE per step (``mase_steps``, step 1
first), and MASE per fold (``mase_folds``): the origins cut into ``FOLDS`` consecutive runs, so
that the gate can tell a consistent win from one stretch's luck (forecaster/modelling/gate.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from forecaster.modelling.scoring import metrics_block

MAX_ORIGINS = 80  # origins per stretch for h > 1
FOLDS = 4  # consecutive runs of origins the gate compares fold by fold


def origins(start: int, stop: int, h: int) -> np.ndarray:
    """Origins in ``[start, stop)`` whose path of ``h`` steps ends before ``stop``, oldest first.

    Every one when h = 1; else evenly strided (stride ceil(count / MAX_ORIGINS)), the last one
    always included. Empty when the stretch is shorter than h.
    """
    last = stop - h
    if last < start:
        return np.empty(0, dtype=np.int64)
    if h == 1:
        return np.arange(start, last + 1, dtype=np.int64)
    stride = max(1, math.ceil((last - start + 1) / MAX_ORIGINS))
    return np.arange(last, start - 1, -stride, dtype=np.int64)[::-1].copy()


def actual_paths(values: np.ndarray, at: np.ndarray, h: int) -> np.ndarray:
    """(len(at), h): ``values[o : o + h]`` for each origin o."""
    v = np.asarray(values, dtype=np.float64)
    out: np.ndarray = sliding_window_view(v, h)[np.asarray(at, dtype=np.int64)]
    return out


def naive_paths(values: np.ndarray, at: np.ndarray, h: int) -> np.ndarray:
    """(len(at), h): the last value before each origin, repeated."""
    v = np.asarray(values, dtype=np.float64)
    return np.repeat(v[np.asarray(at, dtype=np.int64) - 1][:, None], h, axis=1)


def seasonal_offsets(h: int, season: int) -> np.ndarray:
    """(h,) offsets from the origin of the value each step repeats: step k (1-based) takes the value one
    whole number of seasons back, ``k - 1 - season * ceil(k / season)`` (the last season, repeated)."""
    k = np.arange(1, h + 1)
    out: np.ndarray = k - 1 - season * np.ceil(k / season).astype(np.int64)
    return out


def seasonal_naive_paths(values: np.ndarray, at: np.ndarray, h: int, season: int) -> np.ndarray:
    """(len(at), h): the last season before each origin, repeated. Origins must be at least ``season``."""
    v = np.asarray(values, dtype=np.float64)
    o = np.asarray(at, dtype=np.int64)
    if len(o) and int(o.min()) < season:
        raise ValueError(f"seasonal naive with season {season} needs history before origin {int(o.min())}")
    out: np.ndarray = v[o[:, None] + seasonal_offsets(h, season)[None, :]]
    return out


def fold_slices(n: int, folds: int = FOLDS) -> list[slice]:
    """``folds`` consecutive, near-equal runs of n origins (fewer when n is smaller)."""
    k = max(1, min(folds, n))
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def path_block(y: np.ndarray, yhat: np.ndarray, scale: float) -> dict[str, Any]:
    """Scores of paths ``yhat`` (n, h) against actuals ``y`` (n, h): ``metrics_block`` over every origin
    and step, plus ``mase_steps`` (h,) and ``mase_folds`` (one per fold of origins)."""
    y = np.asarray(y, dtype=np.float64)
    yhat = np.asarray(yhat, dtype=np.float64)
    block: dict[str, Any] = dict(metrics_block(y.ravel(), yhat.ravel(), scale))
    err = np.abs(y - yhat)
    block["mase_steps"] = [float(x) for x in err.mean(axis=0) / scale]
    block["mase_folds"] = [float(err[f].mean() / scale) for f in fold_slices(len(y))]
    return block


def step_coverage(residuals: np.ndarray, halfwidths: np.ndarray) -> tuple[float, list[float]]:
    """(overall, per step) share of residuals (n, h) inside their half-widths (n, h)."""
    inside = np.abs(np.asarray(residuals, dtype=np.float64)) <= np.asarray(halfwidths)
    if inside.size == 0:
        return math.nan, []
    return float(inside.mean()), [float(x) for x in inside.mean(axis=0)]
