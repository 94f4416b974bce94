"""The training loop: determinism, early stopping, divergence, devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forecaster.errors import TrainingDiverged, TrainingError
from forecaster.modelling.network import ModelConfig, RecurrentForecaster, to_artifact
from forecaster.modelling.training import Splits, TrainConfig, fit, pick_device, set_seed
from forecaster.modelling.windows import Scaler, make_windows, normalise

CPU = TrainConfig(epochs=4, batch_size=32, patience=10, device="cpu")


def sine_splits(n: int = 300, window: int = 16) -> Splits:
    rng = np.random.default_rng(0)
    v = np.sin(2 * np.pi * np.arange(n) / 24) + 0.1 * rng.normal(size=n)
    X, y = make_windows(v, window)
    Xn, yn, _, _ = normalise(X, y, Scaler.fit(v[:200]), "value")
    return Splits(Xn[:200], yn[:200], Xn[200:], yn[200:])  # type: ignore[arg-type]


def trained(seed: int, cfg: TrainConfig = CPU, cell: str = "lstm") -> tuple[bytes, object]:
    set_seed(seed)
    model = RecurrentForecaster(ModelConfig(cell=cell, hidden_size=8))  # type: ignore[arg-type]
    result = fit(model, sine_splits(), TrainConfig(**{**cfg.__dict__, "seed": seed}))
    return to_artifact(model), result


def test_same_seed_gives_bit_identical_weights_on_cpu():
    a, ra = trained(seed=7)
    b, rb = trained(seed=7)
    assert a == b
    assert ra.best_val_loss == rb.best_val_loss  # type: ignore[attr-defined]


def test_a_different_seed_gives_different_weights():
    assert trained(seed=7)[0] != trained(seed=8)[0]


def test_fit_keeps_the_best_weights_and_stops_early():
    data = sine_splits()
    set_seed(0)
    model = RecurrentForecaster(ModelConfig(hidden_size=8))
    seen: list[tuple[int, int, float]] = []
    cfg = TrainConfig(epochs=200, lr=0.05, patience=2, batch_size=16, device="cpu")
    result = fit(model, data, cfg, progress=lambda e, n, v: seen.append((e, n, v)))
    assert result.epochs_run < 200 and result.epochs_run == len(seen)
    assert [e for e, _, _ in seen] == list(range(1, result.epochs_run + 1))
    assert result.best_val_loss == min(v for _, _, v in seen)
    assert result.epochs_run - result.best_epoch == 2  # stopped after `patience` stale epochs
    with torch.no_grad():  # the model holds the best epoch's weights, not the last
        val = torch.nn.functional.l1_loss(model(torch.as_tensor(data.x_val)), torch.as_tensor(data.y_val))
    assert val.item() == pytest.approx(result.best_val_loss, rel=1e-5)
    assert result.device == "cpu" and result.duration_s > 0


@pytest.mark.parametrize("loss", ["mae", "huber", "mse"])
@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_every_cell_and_loss_learns(cell, loss):
    data = sine_splits()
    set_seed(0)
    model = RecurrentForecaster(ModelConfig(cell=cell, hidden_size=8))  # type: ignore[arg-type]
    with torch.no_grad():
        before = torch.nn.functional.l1_loss(model(torch.as_tensor(data.x_val)), torch.as_tensor(data.y_val))
    fit(model, data, TrainConfig(epochs=8, lr=0.01, batch_size=32, loss=loss, device="cpu"))
    with torch.no_grad():
        after = torch.nn.functional.l1_loss(model(torch.as_tensor(data.x_val)), torch.as_tensor(data.y_val))
    assert after < 0.7 * before


def test_nan_loss_raises_training_diverged_naming_the_epoch():
    d = sine_splits()
    y = d.y_train.copy()
    y[5] = np.nan
    model = RecurrentForecaster(ModelConfig(hidden_size=4))
    with pytest.raises(TrainingDiverged, match="at epoch 1 of 4"):
        fit(model, Splits(d.x_train, y, d.x_val, d.y_val), CPU)


def test_empty_validation_is_refused():
    d = sine_splits()
    with pytest.raises(ValueError, match="validation"):
        fit(RecurrentForecaster(ModelConfig()), Splits(d.x_train, d.y_train, d.x_val[:0], d.y_val[:0]), CPU)


def test_pick_device_prefers_cuda_then_mps_then_cpu():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert pick_device("auto").type == expected
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="'cuda' is not available"):
            pick_device("cuda")
