"""Forecast paths in the modelling layer: windows, candidates' paths, per-step scores and intervals, the gate.

On the bundled real series (forecaster/snapshots): S&P 500 closes (a near random walk on XNYS
trading days) and the Niño 1+2 monthly sea temperature (seasonal).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecaster.config.settings import ModelSpec
from forecaster.modelling import paths
from forecaster.modelling.baseline import baseline_path, better_baseline
from forecaster.modelling.fitting import train_series
from forecaster.modelling.gate import gate
from forecaster.modelling.intervals import ACIState, start_steps, walk, walk_paths
from forecaster.modelling.preparation import prepare
from forecaster.modelling.scoring import metrics_block, rolling_naive
from forecaster.modelling.windows import make_windows
from forecaster.usecases.forecasting import next_targets

SNAPSHOTS = Path(__file__).resolve().parents[1] / "forecaster" / "snapshots"
FAST = dict(hidden_size=8, epochs=2, batch_size=64, candidates=())


def snapshot(name: str, tail: int) -> tuple[pd.DatetimeIndex, np.ndarray]:
    df = pd.read_csv(SNAPSHOTS / f"{name}.csv")
    return pd.DatetimeIndex(pd.to_datetime(df["ts"], utc=True))[-tail:], df["value"].to_numpy(np.float64)[-tail:]


def test_a_window_s_path_target_is_the_h_values_after_it_and_one_step_is_unchanged():
    v = np.arange(20.0)
    X, y = make_windows(v, 4, horizon=3)
    assert X.shape == (14, 4, 1) and y.shape == (14, 3)
    assert X[5, :, 0].tolist() == [5, 6, 7, 8] and y[5].tolist() == [9, 10, 11]
    X1, y1 = make_windows(v, 4)
    assert y1.shape == (16,) and np.array_equal(X1[:14], X)


def test_no_training_target_reaches_validation_and_no_validation_target_the_holdout():
    ts, v = snapshot("sp500_daily_close", 900)
    prep = prepare(ts, v, frequency="1B", spec=ModelSpec(**FAST), horizon=5)
    p_val, p_hold = prep.val.start + prep.window, prep.holdout.start + prep.window
    last_train_target = prep.train.start + len(prep.y_train) - 1 + prep.window + 4
    last_val_target = prep.val.start + len(prep.y_val) - 1 + prep.window + 4
    assert last_train_target == p_val - 1 and last_val_target == p_hold - 1
    # The targets are the real values (normalised back): window i's path is v[i + L : i + L + 5].
    i = prep.train.start
    raw = v[i + prep.window : i + prep.window + 5]
    w = v[i : i + prep.window]
    centre, spread = w.mean(), max(w.std(), 0.01 * prep.scaler.std)
    np.testing.assert_allclose(prep.y_train[0], (raw - centre) / spread, rtol=1e-5)


def test_seasonal_naive_repeats_the_last_season_and_naive_the_last_value():
    v = np.arange(30.0)
    at = np.array([24])
    assert paths.seasonal_naive_paths(v, at, 14, 12)[0].tolist() == [12.0 + k % 12 for k in range(14)]
    assert paths.naive_paths(v, at, 3)[0].tolist() == [23.0, 23.0, 23.0]
    assert paths.actual_paths(v, at, 3)[0].tolist() == [24.0, 25.0, 26.0]


def test_origins_cover_the_stretch_and_one_step_uses_every_position():
    assert paths.origins(100, 110, 1).tolist() == list(range(100, 110))
    o = paths.origins(100, 600, 24)
    assert o[-1] == 600 - 24 and o[0] >= 100 and len(o) <= paths.MAX_ORIGINS + 1
    assert len(paths.origins(100, 110, 24)) == 0


def test_delayed_aci_per_step_is_walk_for_one_step_and_waits_for_each_actual():
    rng = np.random.default_rng(3)
    r = rng.normal(size=(200, 1))
    start = ACIState.start(rng.normal(size=100), 0.9)
    widths, end = walk_paths([start], np.arange(200), r)
    w1, e1 = walk(start, r[:, 0])
    assert np.array_equal(widths[:, 0], w1) and end[0] == e1
    # Step 3 of the path made at origin 10 targets position 12: it must not move step 3's state
    # before origin 13 (an error arrives only with its actual).
    r3 = np.zeros((20, 3))
    r3[10, 2] = 1e6  # a huge step-3 miss at origin 10
    states = start_steps(np.ones((50, 3)), 0.9, window=4)  # the last 4 errors set the width
    widths, _ = walk_paths(states, np.arange(20), r3)
    assert widths[12, 2] == widths[11, 2] == 0 and widths[13, 2] == 1e6


def test_baseline_intervals_widen_with_the_step_on_a_random_walk_and_one_step_is_unchanged():
    _, v = snapshot("sp500_daily_close", 2000)
    method, path, halves = baseline_path(v, None, 0.9, 5)
    assert method == "naive" and path.tolist() == [v[-1]] * 5
    assert all(h is not None for h in halves)
    assert halves[4] > 1.6 * halves[0] and halves == sorted(halves)  # ~sqrt(k) growth of k-step changes
    one = baseline_path(v, None, 0.9, 1)
    assert (one[0], float(one[1][0]), one[2][0]) == better_baseline(v, None, 0.9)


def test_trading_day_paths_skip_the_exchange_s_holidays():
    friday = dt.datetime(2018, 12, 28, tzinfo=dt.UTC)
    days = next_targets(friday, "1B", "XNYS", 5)
    assert [d.date().isoformat() for d in days] == ["2018-12-31", "2019-01-02", "2019-01-03", "2019-01-04",
                                                     "2019-01-07"]
    assert next_targets(friday, "1h", None, 3)[2] == friday + dt.timedelta(hours=3)


def test_one_step_scores_are_the_one_step_service_s_figures():
    ts, v = snapshot("sp500_daily_close", 700)
    out = train_series(ts, v, frequency="1B", spec=ModelSpec(**FAST))
    hold = int(out.hyperparameters["holdout"])
    p_hold = len(v) - hold
    rolled = out.predictor.predict_rolling(ts, v, p_hold, len(v))
    scale = metrics_block(v[p_hold:], rolled, 1.0)["mae"] / out.metrics["model"]["mase"]
    for name, pred in (("model", rolled), ("naive", rolling_naive(v, p_hold))):
        expected = metrics_block(v[p_hold:], pred, scale)
        got = {k: out.metrics[name][k] for k in expected}
        assert got == pytest.approx(expected, rel=1e-12)
        assert out.metrics[name]["mase_steps"] == [out.metrics[name]["mase"]]
    assert out.predictor.horizon == 1 and out.predictor.predict_path_next(ts, v).shape == (1,)
    assert float(out.predictor.predict_path_next(ts, v)[0]) == out.predictor.predict_next(ts, v)


def test_a_path_model_is_judged_per_step_with_per_step_intervals_on_real_monthly_data():
    ts, v = snapshot("nino12_sst_monthly", 733)
    out = train_series(ts, v, frequency="1MS", spec=ModelSpec(**{**FAST, "candidates": ("ets_seasonal",)}),
                       horizon=12)
    m = out.metrics
    assert out.predictor.horizon == 12 and out.predictor.predict_path_next(ts, v).shape == (12,)
    for name in ("model", "naive", "seasonal_naive", "served"):
        assert len(m[name]["mase_steps"]) == 12 and len(m[name]["mase_folds"]) == paths.FOLDS
        assert m[name]["mase"] == pytest.approx(np.mean(m[name]["mase_steps"]))
    assert m["naive"]["mase_steps"][11] > m["naive"]["mase_steps"][0]  # a path gets harder with the step
    assert len(out.hyperparameters["serving"]["aci_steps"]) == 12
    assert len(m["served_interval"]["coverage_steps"]) == 12
    # Seasonal naive's path is the last year repeated; the model's holdout is judged on >= 4 paths.
    assert out.lineage["origins"]["holdout"] >= 4 * 1 and out.lineage["horizon"] == 12


def block(mase: float, folds: list[float]) -> dict[str, float | list[float]]:
    return {"mase": mase, "mase_folds": folds}


def test_the_gate_calls_a_loss_within_the_folds_noise_a_tie_but_not_a_consistent_one():
    noisy = {"model": block(0.082, [0.06, 0.11, 0.07, 0.09]), "naive": block(0.5, [0.5] * 4),
             "seasonal_naive": block(0.079, [0.09, 0.07, 0.09, 0.066])}
    ok, why = gate(noisy)
    assert ok and "ties seasonal naive 0.079 within the folds' noise" in why
    steady = {**noisy, "seasonal_naive": block(0.079, [0.059, 0.108, 0.068, 0.087])}
    ok, why = gate(steady)
    assert not ok and "does not beat seasonal naive 0.079" in why
    # Against the champion a tie keeps the champion.
    champ = {**noisy, "seasonal_naive": None, "champion": block(0.081, [0.07, 0.1, 0.06, 0.1])}
    ok, why = gate(champ, 3)
    assert not ok and "champion v3 0.081" in why


def test_a_series_whose_horizon_changed_is_trained_again_and_serves_the_new_path(tmp_path: Path) -> None:
    from forecaster.config.loading import load_settings
    from forecaster.store import migrate
    from forecaster.store.tables import make_engine, make_sessionmaker
    from forecaster.usecases.forecasting import get_forecast
    from forecaster.usecases.ingest import ingest_series
    from forecaster.usecases.retrain import needs_training, retrain_series

    def config(horizon: int) -> object:
        (tmp_path / "forecaster.toml").write_text(
            f'database_url = "sqlite:///{tmp_path / "f.db"}"\n[[series]]\nkey = "sine:h"\nsource = "sine"\n'
            f'frequency = "1h"\nhorizon = {horizon}\nparams = {{ length = 600, seed = 2 }}\n'
            'model = { hidden_size = 8, epochs = 2, candidates = [] }\n')
        return load_settings(tmp_path / "forecaster.toml")

    s = config(1)
    engine = make_engine(s.database_url)
    migrate.upgrade(engine)
    sm = make_sessionmaker(engine)
    assert ingest_series(sm, s, s.series[0]).ok
    retrain_series(sm, s.series[0])
    assert needs_training(sm, s) == []
    s = config(6)
    assert needs_training(sm, s) == ["sine:h"]
    report = retrain_series(sm, s.series[0])
    assert report.metrics is not None and len(report.metrics["served"]["mase_steps"]) == 6
    assert needs_training(sm, s) == []
    with sm() as session:
        f = get_forecast(session, series_key="sine:h")
    assert f.target_ts is not None
    engine.dispose()


def test_a_path_choice_needing_the_model_must_win_by_more_than_the_folds_noise():
    from forecaster.modelling.selection import choose

    y = np.zeros((80, 4))
    theta = np.ones((80, 4))  # off by 1 everywhere
    by_fold = np.repeat([0.5, 1.4, 0.6, 1.45], 20)[:, None] * np.ones((1, 4))  # 0.9875 on average: luck
    noisy = {"theta": theta, "model": by_fold}
    assert choose(noisy, y)[0].members == ("theta",)
    steady = {"theta": theta, "model": np.full((80, 4), 0.5)}  # better on every fold
    assert choose(steady, y)[0].members == ("model",)
    one_step = {k: v[:, :1] for k, v in noisy.items()}  # one step: the lowest validation MAE, as always
    assert choose(one_step, y[:, :1])[0].members == ("model",)


def test_the_fast_aci_walk_states_what_one_update_at_a_time_states() -> None:
    """walk/walk_paths keep the scores sorted for speed: every width and the end state must be those
    of ACIState.update called once per actual (NaN skipped, the window rolling over)."""
    from forecaster.modelling.intervals import ACIState, walk, walk_paths

    rng = np.random.default_rng(3)
    r = rng.standard_t(3, size=(400, 3)) * np.where(np.arange(400) > 200, 3.0, 1.0)[:, None]  # a volatility shift
    r[17, 1] = np.nan
    start = [ACIState.start(rng.normal(size=300), 0.9, window=120) for _ in range(3)]
    at = np.arange(400) * 2  # origins two positions apart: step 3's errors wait for their actual
    widths, end = walk_paths(start, at, r)
    for k in range(3):
        state, pending = start[k], []
        for i, o in enumerate(at):
            while pending and pending[0][0] < o:
                state = state.update(pending.pop(0)[1])
            assert widths[i, k] == state.halfwidth
            pending.append((o + k, r[i, k]))
        for _, res in pending:
            state = state.update(res)
        assert end[k] == state
    one, last = walk(start[0], r[:, 0])
    state = start[0]
    for i, x in enumerate(r[:, 0]):
        assert one[i] == state.halfwidth
        state = state.update(x)
    assert last == state


def test_a_statistical_candidate_is_judged_by_the_fit_before_each_stretch_and_the_holdout_s_fit_serves():
    from forecaster.modelling import candidates as cands

    ts, v = snapshot("nino12_sst_monthly", 733)
    out = train_series(ts, v, frequency="1MS", spec=ModelSpec(**{**FAST, "candidates": ("ets_seasonal",)}),
                       horizon=12)
    hp, m = out.hyperparameters, out.metrics
    p_hold = len(v) - int(hp["holdout"])
    p_val = p_hold - int(hp["validation"])
    stored = hp["serving"]["fitted"]["ets_seasonal"]
    assert stored["fit_stop"] == p_hold  # what serves was fitted on everything before the holdout
    o_val, o_hold = paths.origins(p_val, p_hold, 12), paths.origins(p_hold, len(v), 12)
    # Validation (the choice) saw a fit that stopped before validation, never one that saw it.
    before_val = cands.fit_one("ets_seasonal", v, p_val, 12)
    val_mae = np.mean(np.abs(paths.actual_paths(v, o_val, 12) - cands.run_paths(before_val, v, o_val, 12)))
    assert m["candidates"]["ets_seasonal"]["val"]["mae"] == pytest.approx(val_mae, rel=1e-9)
    # The holdout (the gate) judged the stored fit itself.
    served = cands.run_paths(cands.Fitted.from_dict(stored), v, o_hold, 12)
    hold_mae = np.mean(np.abs(paths.actual_paths(v, o_hold, 12) - served))
    assert m["candidates"]["ets_seasonal"]["holdout"]["mae"] == pytest.approx(hold_mae, rel=1e-9)
