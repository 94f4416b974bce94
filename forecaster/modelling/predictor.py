"""A stored model served: raw values in, one-step forecasts or h-step paths out (``Predictor``).

Torch is imported only when a network is loaded or run, so the API can hold this module cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from forecaster.errors import InvalidInput
from forecaster.modelling.windows import (
    Scaler,
    calendar_columns,
    calendar_features,
    denormalise,
    last_windows,
    normalise,
    window_calendar,
)

if TYPE_CHECKING:
    from forecaster.modelling.network import RecurrentForecaster

FORMAT = 1  # bump when the stored hyperparameters' meaning changes


class Predictor:
    """A trained model plus everything needed to turn raw values into a forecast."""

    def __init__(self, hyperparameters: dict[str, Any], scaler: Scaler, model: RecurrentForecaster | None):
        self.hp, self.scaler = hyperparameters, scaler
        self.model = model.eval() if model is not None else None  # None: inputs only (a fleet runs the model)
        self.columns = tuple(hyperparameters.get("calendar_columns", ()))

    @classmethod
    def from_artifact(cls, hyperparameters: dict[str, Any], scaler: dict[str, Any], weights: bytes) -> Predictor:
        """Rebuild from the stored JSON and safetensors bytes (no pickle), on the CPU.

        Raises:
            ValueError: if the stored parts do not fit together or this code.
        """
        # torch loads here, not at import
        from forecaster.modelling.network import from_artifact

        hp = hyperparameters
        cls._check(hp)
        return cls(hp, Scaler.from_dict(scaler), from_artifact(hp, weights))

    @classmethod
    def inputs_only(cls, hyperparameters: dict[str, Any], scaler: dict[str, Any]) -> Predictor:
        """A Predictor without its network: it builds inputs (``next_inputs``) and reads outputs
        (``from_outputs``) for a batched pass that runs many models at once (``forecaster.modelling.fleet.recurrence``).

        Raises:
            ValueError: if the stored parts do not fit this code.
        """
        cls._check(hyperparameters)
        return cls(hyperparameters, Scaler.from_dict(scaler), None)

    @staticmethod
    def _check(hp: dict[str, Any]) -> None:
        if hp.get("format") != FORMAT:
            raise ValueError(f"model format {hp.get('format')!r} is not {FORMAT}")
        if tuple(hp.get("calendar_columns", ())) not in ((), calendar_columns(hp["frequency"])):
            raise ValueError(f"calendar columns {hp['calendar_columns']} do not match {hp['frequency']}")

    @property
    def window(self) -> int:
        """Steps of history one forecast needs."""
        return int(self.hp["window"])

    @property
    def horizon(self) -> int:
        """Steps of the path one forward pass forecasts (versions from before paths: 1)."""
        return int(self.hp.get("horizon", 1))

    def predict(self, windows: np.ndarray, last_ts: Any = None) -> np.ndarray:
        """One-step forecasts (B,) for raw value windows (B, L): step 1 of ``predict_paths``."""
        return self.predict_paths(windows, last_ts)[:, 0]

    def predict_paths(self, windows: np.ndarray, last_ts: Any = None) -> np.ndarray:
        """Paths (B, h) for raw value windows (B, L), in one batched pass (h = ``horizon``).

        Args:
            windows: (B, L) raw values, oldest first, L = ``self.window``.
            last_ts: (B,) timestamps of each window's last value; needed only by
                models with calendar features.

        Raises:
            InvalidInput: on a wrong shape, non-finite values or missing timestamps.
        """
        w = np.asarray(windows, dtype=np.float64)
        if w.ndim != 2 or w.shape[1] != self.window or not np.isfinite(w).all():
            raise InvalidInput(f"windows must be finite, shaped (batch, {self.window}); got {w.shape}")
        feats = None
        if self.columns:
            if last_ts is None or len(last_ts) != len(w):
                raise InvalidInput("this model uses calendar features: send each window's last timestamp")
            try:
                feats = window_calendar(last_ts, self.window, self.hp["frequency"])
            except (TypeError, ValueError) as exc:
                raise InvalidInput(f"last_ts are not timestamps: {exc}") from None
        return self._forward_paths(w, feats)

    def predict_rolling(self, ts: pd.DatetimeIndex, values: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Rolling-origin one-step forecasts of steps start..stop-1 from the true history.

        Step t is forecast from ``values[t-L:t]`` (and their real timestamps);
        ``stop`` may be ``len(values) + 1`` to include the step after the end.
        """
        return self._forward_paths(*self._rolling(ts, values, start, stop))[:, 0]

    def predict_rolling_paths(self, ts: pd.DatetimeIndex, values: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """Paths (len(origins), h) made at each origin o from the true history ``values[:o]``:
        row i forecasts ``values[o_i : o_i + h]``. Origins must be at least L."""
        o = np.asarray(origins, dtype=np.int64)
        if len(o) == 0:
            return np.empty((0, self.horizon))
        start, stop = int(o.min()), int(o.max()) + 1
        w, feats = self._rolling(ts, values, start, stop)  # every origin in between: views, cheap
        pick = o - start
        return self._forward_paths(w[pick], None if feats is None else feats[pick])

    def _rolling(self, ts: pd.DatetimeIndex, values: np.ndarray, start: int,
                 stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        w = last_windows(np.asarray(values, dtype=np.float64), self.window, start, stop)  # (B, L)
        feats = None
        if self.columns:
            f = calendar_features(ts[start - self.window : stop - 1], self.hp["frequency"])  # (B+L-1, C)
            feats = np.lib.stride_tricks.sliding_window_view(f, self.window, axis=0).transpose(0, 2, 1)
        return w, feats

    def predict_next(self, ts: pd.DatetimeIndex, values: np.ndarray) -> float:
        """Forecast of the step after the series' end.

        Raises:
            InvalidInput: if the series is shorter than the window.
        """
        if len(values) < self.window:
            raise InvalidInput(f"window {self.window} needs {self.window} values; {len(values)} given")
        return float(self.predict_path_next(ts, values)[0])

    def predict_path_next(self, ts: pd.DatetimeIndex, values: np.ndarray) -> np.ndarray:
        """The path (h,) of the steps after the series' end.

        Raises:
            InvalidInput: if the series is shorter than the window.
        """
        if len(values) < self.window:
            raise InvalidInput(f"window {self.window} needs {self.window} values; {len(values)} given")
        path: np.ndarray = self._forward_paths(*self._rolling(ts, values, len(values), len(values) + 1))[0]
        return path

    def next_inputs(self, ts: pd.DatetimeIndex, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's input for the step after the series' end and the raw window it came from:
        (Xn (1, L, F) float32, w (1, L)); ``from_outputs`` turns the network's output back into a value.

        Raises:
            InvalidInput: if the series is shorter than the window.
        """
        if len(values) < self.window:
            raise InvalidInput(f"window {self.window} needs {self.window} values; {len(values)} given")
        w, feats = self._rolling(ts, values, len(values), len(values) + 1)
        return self._inputs(w, feats)[0], w

    def from_outputs(self, yn: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Forecasts (B,) or paths (B, h) from the network's outputs yn (B,) or (B, h) on the raw windows w (B, L)."""
        loc, scale = self.scaler.stats(w)
        return denormalise(yn, w[:, -1], loc, scale, self.hp["target"])

    def _inputs(self, w: np.ndarray, feats: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        X = w[:, :, None] if feats is None else np.concatenate([w[:, :, None], feats], axis=2)
        Xn, _, loc, scale = normalise(X, None, self.scaler, self.hp["target"])
        return Xn, loc, scale

    def _forward_paths(self, w: np.ndarray, feats: np.ndarray | None) -> np.ndarray:
        """Paths (B, h) of raw windows w (B, L)."""
        import torch

        if self.model is None:
            raise ValueError("this Predictor has no network (inputs_only): run the model elsewhere")
        Xn, loc, scale = self._inputs(w, feats)
        with torch.inference_mode():
            yn = self.model(torch.from_numpy(Xn)).numpy()  # (B,) or (B, h)
        out = denormalise(yn, w[:, -1], loc, scale, self.hp["target"])
        return out[:, None] if out.ndim == 1 else out
