"""The baselines that serve while no model passed the gate: naive and seasonal naive; pure numpy.

Naive repeats the last value; seasonal naive the value one season before the
next step. The better of the two on the recent past serves, with a
split-conformal interval from its own one-step errors there.
"""

from __future__ import annotations

import numpy as np

from forecaster.modelling.scoring import conformal_halfwidth

BASELINE_TAIL = 500  # recent steps used to pick and calibrate a baseline
MIN_RESIDUALS = 5  # fewer one-step errors than this calibrate no interval


def naive_next(values: np.ndarray) -> float:
    """Next-step naive forecast: the last value."""
    return float(values[-1])


def seasonal_naive_next(values: np.ndarray, season: int) -> float:
    """Next-step seasonal naive forecast: the value one season before the next step.

    Raises:
        ValueError: if the series is shorter than one season.
    """
    if len(values) < season:
        raise ValueError(f"seasonal naive needs {season} values, got {len(values)}")
    return float(values[-season])


def residual_halfwidth(residuals: np.ndarray, level: float) -> float | None:
    """The split-conformal half-width of one-step errors at ``level``; None below ``MIN_RESIDUALS`` finite ones."""
    residuals = residuals[np.isfinite(residuals)]
    return conformal_halfwidth(residuals, level) if residuals.size >= MIN_RESIDUALS else None


def better_baseline(values: np.ndarray, season: int | None, level: float,
                    tail: int = BASELINE_TAIL) -> tuple[str, float, float | None]:
    """(method, next value, half-width): the better of naive and seasonal naive over the last ``tail``
    values, judged by mean absolute one-step error on the same targets, and the split-conformal
    half-width of its errors there (None when too few).

    Seasonal naive competes only with more than two seasons of recent values.
    """
    recent = values[-tail:]
    naive_err = recent[1:] - recent[:-1]
    method, err = "naive", naive_err
    if season and recent.size > 2 * season:
        seasonal_err = recent[season:] - recent[:-season]
        if np.mean(np.abs(seasonal_err)) < np.mean(np.abs(naive_err[season - 1:])):
            method, err = "seasonal_naive", seasonal_err
    value = seasonal_naive_next(values, season) if method == "seasonal_naive" and season else naive_next(values)
    return method, value, residual_halfwidth(err, level)
