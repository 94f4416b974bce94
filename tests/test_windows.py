"""Windows, calendar features, splits and normalisation (pure numpy)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from forecaster.modelling.windows import (
    Scaler,
    calendar_columns,
    calendar_features,
    denormalise,
    last_windows,
    make_windows,
    normalise,
    time_split,
    window_calendar,
)

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


def loop_windows(values, window, features=None):
    """The obvious Python loop that make_windows must agree with."""
    xs, ys = [], []
    for i in range(len(values) - window):
        cols = [values[i : i + window, None]]
        if features is not None:
            cols.append(features[i : i + window])
        xs.append(np.concatenate(cols, axis=1))
        ys.append(values[i + window])
    return np.array(xs), np.array(ys)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=st.integers(3, 80), n_features=st.integers(0, 3))
def test_make_windows_matches_a_python_loop(data, n, n_features):
    window = data.draw(st.integers(1, n - 1))
    values = data.draw(arrays(np.float64, n, elements=finite))
    features = data.draw(arrays(np.float64, (n, n_features), elements=finite)) if n_features else None
    X, y = make_windows(values, window, features)
    Xl, yl = loop_windows(values, window, features)
    assert X.shape == (n - window, window, 1 + n_features)
    np.testing.assert_array_equal(X, Xl)
    np.testing.assert_array_equal(y, yl)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n=st.integers(3, 60))
def test_last_windows_are_the_windows_before_each_position(data, n):
    window = data.draw(st.integers(1, n - 1))
    start = data.draw(st.integers(window, n))
    stop = data.draw(st.integers(start, n + 1))
    values = data.draw(arrays(np.float64, n, elements=finite))
    w = last_windows(values, window, start, stop)
    assert w.shape == (stop - start, window)
    for row, t in zip(w, range(start, stop)):
        np.testing.assert_array_equal(row, values[t - window : t])


def test_windows_are_views_until_the_tensor_is_made():
    values = np.arange(1000.0)
    X, y = make_windows(values, 48)
    assert np.shares_memory(X, values) and np.shares_memory(y, values)
    assert not X.flags.writeable  # a view must not be written through by accident
    X2, _ = make_windows(values, 48, np.ones((1000, 4)))
    root = X2
    while getattr(root, "base", None) is not None:
        root = root.base
    assert not X2.flags.owndata and root.nbytes == 1000 * 5 * 8  # one (n, 1+F) stack, not m*L
    Xn, _, _, _ = normalise(X, y, Scaler.fit(values), "value")
    assert not np.shares_memory(Xn, values) and Xn.dtype == np.float32


def test_make_windows_refuses_a_series_no_longer_than_the_window():
    with pytest.raises(ValueError, match="longer than window 5"):
        make_windows(np.arange(5.0), 5)


@given(m=st.integers(3, 500), val=st.integers(0, 100), hold=st.integers(0, 100))
def test_time_split_is_ordered_disjoint_and_complete(m, val, hold):
    if m - val - hold < 1:
        with pytest.raises(ValueError):
            time_split(m, val=val, holdout=hold)
        return
    tr, va, ho = time_split(m, val=val, holdout=hold)
    idx = np.arange(m)
    assert np.array_equal(np.concatenate([idx[tr], idx[va], idx[ho]]), idx)
    assert len(idx[va]) == val and len(idx[ho]) == hold and tr.start == 0


def test_time_split_accepts_fractions():
    tr, va, ho = time_split(100, val=0.1, holdout=0.2)
    assert (tr, va, ho) == (slice(0, 70), slice(70, 80), slice(80, 100))


def test_calendar_columns_depend_on_frequency():
    assert calendar_columns("1h") == ("day_sin", "day_cos", "week_sin", "week_cos")
    assert calendar_columns("30min") == calendar_columns("1h")
    assert calendar_columns("1D") == ("week_sin", "week_cos")
    assert calendar_columns("1B") == ("week_sin", "week_cos")
    assert calendar_columns("1W") == () and calendar_columns("1MS") == ()


def test_calendar_features_encode_hour_and_weekday():
    ts = pd.DatetimeIndex(["2024-01-01T00:00Z", "2024-01-01T06:00Z", "2024-01-03T12:00Z"])  # Mon
    f = calendar_features(ts, "1h")
    assert f.shape == (3, 4)
    np.testing.assert_allclose(f[0], [0, 1, 0, 1], atol=1e-12)  # midnight, Monday 00:00
    np.testing.assert_allclose(f[1, :2], [1, 0], atol=1e-12)  # 06:00 is a quarter day
    np.testing.assert_allclose(f[2, 2:], [np.sin(2 * np.pi * 2.5 / 7), np.cos(2 * np.pi * 2.5 / 7)])
    assert calendar_features(ts, "1W").shape == (3, 0)


@pytest.mark.parametrize("freq", ["1h", "15min", "1D", "1B"])
def test_window_calendar_rebuilds_the_real_timestamps(freq):
    ts = pd.date_range("2024-03-04", periods=200, freq=freq, tz="UTC")  # no holidays
    full = calendar_features(ts, freq)
    last = ts[[20, 57, 199]]
    got = window_calendar(np.asarray(last), 21, freq)
    for row, end in zip(got, [20, 57, 199]):
        np.testing.assert_allclose(row, full[end - 20 : end + 1], atol=1e-9)


@pytest.mark.parametrize("kind", ["window", "global"])
@pytest.mark.parametrize("target", ["value", "delta"])
def test_normalise_is_undone_by_denormalise(kind, target):
    rng = np.random.default_rng(0)
    values = 1000 + np.cumsum(rng.normal(size=300))
    X, y = make_windows(values, 12)
    scaler = Scaler.fit(values[:200], kind)
    Xn, yn, loc, scale = normalise(X, y, scaler, target)
    np.testing.assert_allclose(denormalise(yn, X[:, -1, 0], loc, scale, target), y, rtol=1e-6)
    if kind == "window":  # each window centred and scaled by its own statistics
        np.testing.assert_allclose(Xn[:, :, 0].mean(axis=1), 0, atol=1e-4)
        np.testing.assert_allclose(Xn[:, :, 0].std(axis=1), 1, atol=1e-4)


def test_window_scale_has_a_floor_for_flat_windows():
    values = np.r_[np.zeros(20), np.arange(20.0)]
    scaler = Scaler.fit(values)
    X, y = make_windows(values, 5)
    Xn, yn, _, scale = normalise(X, y, scaler, "value")
    assert np.isfinite(Xn).all() and np.isfinite(yn).all()
    assert scale.min() == pytest.approx(0.01 * np.std(values))


def test_global_scaler_is_fit_on_train_only_and_round_trips():
    scaler = Scaler.fit(np.array([1.0, 2.0, 3.0]), "global")
    assert (scaler.mean, scaler.std) == (2.0, pytest.approx(np.std([1.0, 2.0, 3.0])))
    assert Scaler.from_dict(scaler.to_dict()) == scaler
