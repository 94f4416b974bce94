"""Metrics, naive baselines and conformal intervals against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from forecaster.modelling.scoring import (
    conformal_halfwidth,
    coverage,
    mae,
    mase,
    metrics_block,
    naive_scale,
    rolling_naive,
    rmse,
    smape,
)
from forecaster.modelling.baseline import better_baseline, naive_next, seasonal_naive_next

Y = np.array([1.0, 2.0, 4.0, 0.0])
YHAT = np.array([2.0, 2.0, 1.0, 0.0])  # errors 1, 0, 3, 0


def test_metrics_match_hand_computed_values():
    assert mae(Y, YHAT) == 1.0  # (1 + 0 + 3 + 0) / 4
    assert rmse(Y, YHAT) == math.sqrt(10 / 4)  # (1 + 0 + 9 + 0) / 4
    assert mase(Y, YHAT, 0.5) == 2.0
    # 2|e| / (|y| + |yhat|): 2/3, 0, 6/5, and 0/0 -> 0
    assert smape(Y, YHAT) == pytest.approx(100 * (2 / 3 + 6 / 5) / 4)
    assert metrics_block(Y, YHAT, 0.5) == {"mae": 1.0, "rmse": math.sqrt(2.5), "mase": 2.0,
                                           "smape": pytest.approx(46.666666)}


def test_mase_refuses_a_zero_scale():
    with pytest.raises(ValueError, match="positive"):
        mase(Y, YHAT, 0.0)


def test_naive_scale_is_the_in_sample_naive_mae():
    v = np.array([1.0, 3.0, 2.0, 6.0, 5.0])
    assert naive_scale(v) == (2 + 1 + 4 + 1) / 4
    assert naive_scale(v, season=2) == (1 + 3 + 3) / 3
    with pytest.raises(ValueError):
        naive_scale(v, season=5)


def test_rolling_naive_forecasts_each_step_from_the_true_past():
    v = np.arange(10.0) ** 2
    np.testing.assert_array_equal(rolling_naive(v, 7), [36.0, 49.0, 64.0])  # last value
    np.testing.assert_array_equal(rolling_naive(v, 7, season=3), [16.0, 25.0, 36.0])
    with pytest.raises(ValueError):
        rolling_naive(v, 2, season=3)
    assert naive_next(v) == 81.0 and seasonal_naive_next(v, 3) == 49.0
    with pytest.raises(ValueError, match="needs 11 values"):
        seasonal_naive_next(v, 11)


def test_the_better_baseline_is_judged_on_the_same_targets_and_calibrated_on_its_own_errors():
    season = np.tile([0.0, 10.0, 0.0, -10.0], 10)  # seasonal naive is exact; naive is off by 10 each step
    assert better_baseline(season, 4, 0.9) == ("seasonal_naive", 0.0, 0.0)
    ramp = np.arange(12.0)  # naive is off by 1, seasonal naive by 4
    assert better_baseline(ramp, 4, 0.9) == ("naive", 11.0, 1.0)
    assert better_baseline(ramp[:5], 4, 0.9) == ("naive", 4.0, None)  # 4 errors: too few for an interval
    assert better_baseline(season, None, 0.9)[0] == "naive"  # no season: only naive competes


def test_conformal_halfwidth_is_the_finite_sample_quantile():
    r = np.arange(1.0, 11.0)  # |residuals| 1..10, n = 10
    assert conformal_halfwidth(r, 0.9) == 10.0  # rank ceil(11 * 0.9) = 10
    assert conformal_halfwidth(-r, 0.5) == 6.0  # rank ceil(5.5) = 6, signs ignored
    assert conformal_halfwidth(r[:3], 0.9) == 3.0  # rank 4 > n: the largest
    with pytest.raises(ValueError):
        conformal_halfwidth(np.array([]), 0.9)


@pytest.mark.parametrize("level", [0.5, 0.8, 0.9, 0.95])
def test_conformal_interval_covers_about_level_on_iid_residuals(level):
    rng = np.random.default_rng(42)
    calibration, test = rng.standard_t(4, 2000), rng.standard_t(4, 20000)
    half = conformal_halfwidth(calibration, level)
    assert coverage(test, np.zeros_like(test), half) == pytest.approx(level, abs=0.02)
