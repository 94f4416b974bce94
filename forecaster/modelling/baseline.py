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


def baseline_path(values: np.ndarray, season: int | None, level: float, h: int,
                  tail: int = BASELINE_TAIL) -> tuple[str, np.ndarray, list[float | None]]:
    """(method, path (h,), half-width per step) of the better of naive and seasonal naive for h steps.

    One step is ``better_baseline``. For paths both are judged by their mean absolute error over
    every step on the last ``tail`` values (each step k's errors: the value k steps after each
    origin against what the baseline said there), and each step's half-width is the split-conformal
    quantile of its own k-step errors (None when too few), so the band widens as the errors do.
    Seasonal naive competes only with more than two seasons of recent values.
    """
    if h == 1:
        method, value, half = better_baseline(values, season, level, tail)
        return method, np.asarray([value]), [half]
    from forecaster.modelling.paths import seasonal_offsets

    v = np.asarray(values, dtype=np.float64)
    recent = v[-tail:]
    n = len(recent)

    def errors(offsets: np.ndarray, first: int) -> list[np.ndarray]:
        """Per step k: recent[o + k - 1] - recent[o + offset_k] over origins o from ``first``."""
        out = []
        for k in range(h):
            o = np.arange(first, n - k)
            out.append(recent[o + k] - recent[o + offsets[k]] if len(o) else np.empty(0))
        return out

    naive_offsets = np.full(h, -1)
    method, errs = "naive", errors(naive_offsets, 1)
    if season and n > 2 * season:
        seasonal = errors(seasonal_offsets(h, season), season * int(np.ceil(h / season)))
        naive_same = errors(naive_offsets, season * int(np.ceil(h / season)))
        mean = [float(np.mean(np.abs(e))) if len(e) else np.inf for e in seasonal]
        mean_naive = [float(np.mean(np.abs(e))) if len(e) else np.inf for e in naive_same]
        if np.mean(mean) < np.mean(mean_naive):
            method, errs = "seasonal_naive", seasonal
    at = np.asarray([len(v)])
    if method == "seasonal_naive" and season:
        from forecaster.modelling.paths import seasonal_naive_paths

        path = seasonal_naive_paths(v, at, h, season)[0]
    else:
        path = np.repeat(v[-1], h)
    return method, path, [residual_halfwidth(e, level) for e in errs]
