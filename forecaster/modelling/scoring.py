"""Forecast accuracy, rolling naive references and split-conformal intervals: pure numpy.

The baselines that serve (naive, seasonal naive) are in forecaster/modelling/baseline.py.

Every metric compares one-step forecasts ``yhat`` with actuals ``y`` (both (n,)).
MASE divides the MAE by ``naive_scale``: the in-sample one-step naive MAE on the
training range, so MASE 1.0 means "as good as last value on the training data".
sMAPE is in percent, 0..200; a step where actual and forecast are both 0 counts 0.
"""

from __future__ import annotations

import math

import numpy as np


def mae(y: np.ndarray, yhat: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(np.asarray(y) - np.asarray(yhat))))


def rmse(y: np.ndarray, yhat: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean(np.square(np.asarray(y) - np.asarray(yhat)))))


def mase(y: np.ndarray, yhat: np.ndarray, scale: float) -> float:
    """Mean absolute scaled error: MAE / ``scale`` (see ``naive_scale``).

    Raises:
        ValueError: if ``scale`` is not positive (a constant training range).
    """
    if not scale > 0:
        raise ValueError(f"MASE scale must be positive, got {scale}")
    return mae(y, yhat) / scale


def smape(y: np.ndarray, yhat: np.ndarray) -> float:
    """Symmetric mean absolute percentage error, in percent (0..200)."""
    y, yhat = np.asarray(y, dtype=np.float64), np.asarray(yhat, dtype=np.float64)
    denom = np.abs(y) + np.abs(yhat)
    ratio = np.divide(2 * np.abs(y - yhat), denom, out=np.zeros_like(denom), where=denom > 0)
    return float(100 * np.mean(ratio))


def naive_scale(train_values: np.ndarray, season: int = 1) -> float:
    """In-sample MAE of the (seasonal) naive forecast on the training values.

    Raises:
        ValueError: if there are not more than ``season`` values.
    """
    v = np.asarray(train_values, dtype=np.float64)
    if len(v) <= season:
        raise ValueError(f"naive scale with season {season} needs more than {season} values")
    return float(np.mean(np.abs(v[season:] - v[:-season])))


def metrics_block(y: np.ndarray, yhat: np.ndarray, scale: float) -> dict[str, float]:
    """``{"mae", "rmse", "mase", "smape"}`` of one set of forecasts."""
    return {"mae": mae(y, yhat), "rmse": rmse(y, yhat), "mase": mase(y, yhat, scale),
            "smape": smape(y, yhat)}


# ---------------------------------------------------------------- rolling naive


def rolling_naive(values: np.ndarray, start: int, season: int = 1) -> np.ndarray:
    """Rolling-origin one-step (seasonal) naive forecasts of ``values[start:]``.

    The forecast of step t is ``values[t - season]`` (season 1: last value).

    Raises:
        ValueError: if ``start`` leaves less than one season of history.
    """
    if start < season:
        raise ValueError(f"seasonal naive with season {season} needs history before step {start}")
    return np.asarray(values[start - season : len(values) - season], dtype=np.float64)


# ---------------------------------------------------------------- intervals


def conformal_halfwidth(residuals: np.ndarray, level: float) -> float:
    """Split-conformal half-width of a symmetric interval at ``level`` (e.g. 0.9).

    ``residuals`` must come from data the model did not train on (validation).
    The half-width is the ceil((n + 1) * level) / n empirical quantile of
    |residuals| (the ceil((n+1)*level)-th smallest), which guarantees coverage of
    at least ``level`` for exchangeable data. With too few residuals for that
    rank, the largest one is used.

    Raises:
        ValueError: with no residuals, or a level outside (0, 1).
    """
    r = np.sort(np.abs(np.asarray(residuals, dtype=np.float64)))
    if len(r) == 0 or not 0 < level < 1:
        raise ValueError(f"need residuals and 0 < level < 1; got {len(r)} residuals, level {level}")
    rank = min(math.ceil((len(r) + 1) * level), len(r))  # 1-based
    return float(r[rank - 1])


def coverage(y: np.ndarray, yhat: np.ndarray, halfwidth: float) -> float:
    """Share of actuals inside ``yhat ± halfwidth``."""
    return float(np.mean(np.abs(np.asarray(y) - np.asarray(yhat)) <= halfwidth))
