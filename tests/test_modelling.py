"""train_series end to end on small synthetic series, the Predictor, and the gate."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from forecaster.config.settings import ModelSpec
from forecaster.errors import InvalidInput, NotEnoughData
from forecaster.modelling.fitting import TrainOutcome, train_series
from forecaster.modelling.gate import gate
from forecaster.modelling.predictor import Predictor
from forecaster.modelling.preparation import frequency_defaults

FAST = dict(hidden_size=16, epochs=25, batch_size=32, lr=0.01, patience=5, device="cpu",
            candidates=())  # statistical candidates: tests/test_candidates.py


def sine(n: int = 600, period: float = 24, noise: float = 0.1, seed: int = 1, level: float = 0.0):
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")
    return ts, level + np.sin(2 * np.pi * np.arange(n) / period) + noise * rng.normal(size=n)


@pytest.fixture(scope="module")
def lstm() -> TrainOutcome:
    ts, v = sine()
    return train_series(ts, v, frequency="1h", spec=ModelSpec(**FAST))


def test_lstm_beats_naive_on_a_noisy_sine(lstm):
    m = lstm.metrics
    assert m["model"]["mase"] < 0.8 * m["naive"]["mase"]
    assert m["seasonal_naive"] is not None and m["champion"] is None
    assert json.loads(json.dumps(m, allow_nan=False)) == m  # strict JSON, as stored


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_gru_and_rnn_cells_train_too(cell):
    ts, v = sine()
    out = train_series(ts, v, frequency="1h", spec=ModelSpec(cell=cell, **FAST))
    assert out.hyperparameters["cell"] == cell
    assert out.metrics["model"]["mase"] < 0.8 * out.metrics["naive"]["mase"]


def test_outcome_holds_everything_needed_to_rebuild_and_trace(lstm):
    hp, lin = lstm.hyperparameters, lstm.lineage
    assert {"cell", "window", "target", "normalise", "hidden_size", "num_layers", "dropout",
            "input_size", "frequency", "calendar"} <= hp.keys()
    assert hp["window"] == 48 and hp["holdout"] == 120  # 1h default 48; holdout 168 capped at 20 %
    json.dumps([hp, lstm.scaler, lin], allow_nan=False)
    assert lin["row_count"] == 600 and len(lin["data_hash"]) == 64
    assert lin["train"][1] < lin["val"][0] <= lin["val"][1] < lin["holdout"][0]  # time order, no overlap
    assert lin["holdout"][1] == "2024-01-25T23:00:00+00:00"
    assert lin["epochs_run"] >= lin["best_epoch"] >= 1 and lin["device"] == "cpu"
    assert lstm.weights[:8] != b"\x80\x04"  # safetensors, not a pickle


def test_interval_covers_about_its_level(lstm):
    interval = lstm.metrics["interval"]
    assert interval["level"] == 0.9 and interval["halfwidth"] > 0
    assert 0.75 <= interval["coverage"] <= 1.0  # 120 holdout steps: binomial noise


def test_predictor_rebuilt_from_json_and_bytes_predicts_the_same(lstm):
    hp = json.loads(json.dumps(lstm.hyperparameters))
    scaler = json.loads(json.dumps(lstm.scaler))
    again = Predictor.from_artifact(hp, scaler, lstm.weights)
    ts, v = sine()
    assert again.window == 48
    rolled = again.predict_rolling(ts, v, 500, 600)
    windows = np.lib.stride_tricks.sliding_window_view(v[452:599], 48)  # the same 100 windows
    np.testing.assert_allclose(again.predict(windows), rolled, rtol=1e-12)
    np.testing.assert_allclose(lstm.predictor.predict(windows), rolled, rtol=1e-12)
    nxt = again.predict_next(ts, v)
    assert np.isfinite(nxt) and abs(nxt - np.sin(2 * np.pi * 600 / 24)) < 0.4


def test_predict_refuses_bad_windows(lstm):
    with pytest.raises(InvalidInput, match=r"\(batch, 48\)"):
        lstm.predictor.predict(np.zeros((2, 47)))
    with pytest.raises(InvalidInput):
        lstm.predictor.predict(np.full((1, 48), np.nan))


def test_same_seed_retrains_to_the_same_bytes(lstm):
    ts, v = sine()
    again = train_series(ts, v, frequency="1h", spec=ModelSpec(**FAST))
    assert again.weights == lstm.weights and again.lineage["data_hash"] == lstm.lineage["data_hash"]


def test_champion_is_rescored_on_the_new_holdout(lstm):
    ts, v = sine()
    out = train_series(ts, v, frequency="1h", spec=ModelSpec(**{**FAST, "epochs": 1}),
                       champion=lstm.predictor)
    assert out.metrics["champion_model"] == lstm.metrics["model"]  # same data: same holdout, same score
    promote, reason = gate(out.metrics, champion_version=3)
    m = out.metrics  # what serves must beat the re-scored champion too
    assert "champion v3" in reason and promote == (m["served"]["mase"] < m["champion"]["mase"])


def test_calendar_and_delta_and_global_variants_train():
    ts, v = sine(n=400, level=100.0)
    spec = ModelSpec(calendar=True, target="delta", normalise="global", window=24, **{**FAST, "epochs": 3})
    out = train_series(ts, v, frequency="1h", spec=spec)
    assert out.hyperparameters["input_size"] == 5 and out.scaler["kind"] == "global"
    p = out.predictor
    rolled = p.predict_rolling(ts, v, 350, 400)
    windows = np.lib.stride_tricks.sliding_window_view(v[326:399], 24)
    np.testing.assert_allclose(p.predict(windows, last_ts=ts[349:399]), rolled, rtol=1e-9)
    with pytest.raises(InvalidInput, match="timestamp"):
        p.predict(windows)


def test_an_untrained_model_is_rejected_by_the_gate():
    ts, v = sine()
    out = train_series(ts, v, frequency="1h", spec=ModelSpec(**{**FAST, "epochs": 1, "lr": 1e-9}))
    promote, reason = gate(out.metrics)
    assert not promote and reason.startswith("model MASE") and "does not beat naive" in reason


def test_max_train_points_keeps_the_most_recent_windows():
    ts, v = sine()
    out = train_series(ts, v, frequency="1h", spec=ModelSpec(max_train_points=100, **{**FAST, "epochs": 1}))
    assert out.lineage["train_windows"] == 100
    assert out.lineage["train"][0] == ts[600 - 240 - 100 - 48].isoformat()


def test_non_finite_values_are_invalid_input():
    ts, v = sine()
    v[10] = np.nan
    with pytest.raises(InvalidInput, match="1 values are NaN or infinite.*2024-01-01T10:00"):
        train_series(ts, v, frequency="1h", spec=ModelSpec(**FAST))


def test_a_short_series_names_the_numbers():
    ts, v = sine(n=100)
    with pytest.raises(NotEnoughData) as exc:
        train_series(ts, v, frequency="1h", spec=ModelSpec(**FAST))
    assert str(exc.value) == ("window 48 + training 22 + validation 22 + holdout 22 "
                              "needs at least 114 observations; 100 given")
    ts, v = sine(n=114)  # the stated minimum is enough
    train_series(ts, v, frequency="1h", spec=ModelSpec(**{**FAST, "epochs": 1}))


def test_bad_timestamps_and_constant_series_are_invalid_input():
    ts, v = sine(n=300)
    with pytest.raises(InvalidInput, match="UTC"):
        train_series(ts.tz_localize(None), v, frequency="1h", spec=ModelSpec(**FAST))
    with pytest.raises(InvalidInput, match="increasing"):
        train_series(ts[::-1], v, frequency="1h", spec=ModelSpec(**FAST))
    with pytest.raises(InvalidInput, match="constant"):
        train_series(ts, np.ones(300), frequency="1h", spec=ModelSpec(**FAST))


@pytest.mark.parametrize(("freq", "expected"), [
    ("5min", (288, 2016)), ("30min", (96, 336)), ("1h", (48, 168)), ("1D", (30, 60)),
    ("1B", (30, 60)), ("1W", (26, 26)), ("1MS", (24, 12)),
])
def test_frequency_defaults(freq, expected):
    assert frequency_defaults(freq) == expected


def block(mase: float) -> dict[str, float]:
    return {"mae": mase, "rmse": mase, "mase": mase, "smape": 1.0}


def test_gate_promotes_only_a_model_that_beats_every_rival():
    m = {"model": block(0.82), "naive": block(1.0), "seasonal_naive": block(1.31), "champion": block(0.9)}
    assert gate(m, champion_version=3) == (
        True, "model MASE 0.820 < naive 1.000, seasonal naive 1.310, champion v3 0.900")
    assert gate({**m, "champion": block(0.7)}) == (
        False, "model MASE 0.820 does not beat champion 0.700 (beats naive 1.000, seasonal naive 1.310)")
    assert gate({**m, "seasonal_naive": None, "champion": None}) == (True, "model MASE 0.820 < naive 1.000")
    assert not gate({**m, "model": block(float("nan"))})[0]
    assert not gate({**m, "model": block(1.0)})[0]  # a tie is not a win


def test_importing_the_pipeline_does_not_load_torch():
    code = "import sys, forecaster.modelling.fitting; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_training_uses_only_the_data_after_the_last_long_gap():
    from forecaster.modelling.preparation import recent_segment

    old = pd.date_range("2010-01-01", periods=500, freq="h", tz="UTC")
    new = pd.date_range("2026-01-01", periods=300, freq="h", tz="UTC")
    ts = old.append(new)
    values = np.arange(800, dtype=float)
    seg_ts, seg_v, dropped = recent_segment(ts, values)
    assert dropped == 500 and seg_ts[0] == new[0] and seg_v[0] == 500.0
    days = pd.bdate_range("2024-01-01", periods=300, tz="UTC").delete([50, 51, 52])  # a long weekend is no gap
    assert recent_segment(days, np.zeros(len(days)))[2] == 0
