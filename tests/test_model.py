"""The recurrent network and its pickle-free artifact."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from forecaster.modelling.network import ModelConfig, RecurrentForecaster, from_artifact, to_artifact


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_forecaster_maps_a_batch_of_windows_to_one_value_each(cell):
    torch.manual_seed(0)
    model = RecurrentForecaster(ModelConfig(cell=cell, input_size=3, hidden_size=8, num_layers=2, dropout=0.1))
    assert model(torch.randn(5, 12, 3)).shape == (5,)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_artifact_round_trip_gives_the_same_forecasts(cell):
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, input_size=2, hidden_size=8)
    model = RecurrentForecaster(cfg).eval()
    blob = to_artifact(model)
    config = json.loads(json.dumps(cfg.to_dict()))  # stored as JSON
    again = from_artifact(config, blob)
    x = torch.randn(4, 10, 2)
    with torch.inference_mode():
        assert torch.equal(model(x), again(x))
    assert not again.training


def test_artifact_is_safetensors_not_a_pickle():
    blob = to_artifact(RecurrentForecaster(ModelConfig(hidden_size=4)))
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + header_len])
    assert {"rnn.weight_ih_l0", "head.weight"} <= header.keys()
    assert b"\x80\x04" not in blob[:2] and b"torch._utils" not in blob


def test_weights_that_do_not_fit_the_config_are_refused():
    blob = to_artifact(RecurrentForecaster(ModelConfig(hidden_size=4)))
    with pytest.raises(ValueError, match="do not fit"):
        from_artifact({"cell": "lstm", "input_size": 1, "hidden_size": 8}, blob)
    with pytest.raises(ValueError, match="do not fit"):
        from_artifact({"cell": "lstm", "hidden_size": 4}, b"not safetensors")


def test_unknown_cell_is_named():
    with pytest.raises(ValueError, match="'transformer'"):
        ModelConfig.from_dict({"cell": "transformer"})


def test_stored_config_may_carry_extra_keys():
    cfg = ModelConfig.from_dict({"cell": "gru", "hidden_size": 5, "window": 48, "target": "delta"})
    assert cfg == ModelConfig(cell="gru", hidden_size=5)
