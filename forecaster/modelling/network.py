"""The recurrent many-to-one forecaster and its pickle-free serialisation.

A window (B, L, F) goes through an LSTM, GRU or tanh RNN; the last hidden state
goes through one Linear layer to the (normalised) next ``horizon`` values: a direct
multi-horizon head, the whole path in one forward pass ((B,) when the horizon is 1,
else (B, h)).
Weights are stored as safetensors bytes of the ``state_dict``; the config as a
plain JSON-able dict. Nothing is ever unpickled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

_CELLS: dict[str, Callable[..., nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the network; ``asdict`` of it is what gets stored."""

    cell: Literal["lstm", "gru", "rnn"] = "lstm"
    input_size: int = 1  # features per step: the value + calendar columns
    hidden_size: int = 32
    num_layers: int = 1
    dropout: float = 0.0  # between recurrent layers; ignored with one layer
    horizon: int = 1  # outputs: one per step of the path (stored versions without it forecast one step)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build from a stored dict, ignoring keys that are not network shape.

        Raises:
            ValueError: if the cell is unknown.
        """
        cfg = cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        if cfg.cell not in _CELLS:
            raise ValueError(f"cell {cfg.cell!r} is not one of {', '.join(_CELLS)}")
        return cfg


class RecurrentForecaster(nn.Module):
    """x (B, L, F) -> next-step value (B,) with horizon 1, else the path (B, h)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.rnn = _CELLS[config.cell](
            input_size=config.input_size,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,  # torch warns otherwise
            batch_first=True,
        )
        self.head = nn.Linear(config.hidden_size, config.horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)  # (B, L, H)
        value: torch.Tensor = self.head(out[:, -1])  # (B, h)
        return value.squeeze(-1) if self.config.horizon == 1 else value


def to_artifact(model: nn.Module) -> bytes:
    """The model's weights as safetensors bytes (CPU, contiguous, no pickle)."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return st_save(state)


def from_artifact(config: dict[str, Any], weights: bytes) -> RecurrentForecaster:
    """Rebuild a model on the CPU, in eval mode, from its config dict and weights.

    Raises:
        ValueError: if the config is invalid or the weights do not fit it.
    """
    model = RecurrentForecaster(ModelConfig.from_dict(config))
    try:
        model.load_state_dict(st_load(weights))
    except (RuntimeError, SafetensorError) as exc:
        raise ValueError(f"weights do not fit the model config {config}: {exc}") from None
    return model.eval()
