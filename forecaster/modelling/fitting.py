"""One series end to end, as a pure function of (data, spec, seed): split, fit, score, package; the predictor; the gate.

``train_series`` validates the series, splits it by time, fits the network, and
scores it on the holdout with rolling-origin one-step forecasts (every holdout
step predicted from the true preceding values, through the same ``Predictor``
that serves it later) against the naive, seasonal naive and current champion
forecasts. No database, no HTTP. Torch is imported only when a model is trained
or loaded, so importing this module (e.g. for ``gate``) stays cheap.

Defaults by frequency, used when the ModelSpec leaves them None (holdout is
capped at 20 % of the series; validation is 15 % of the windows, at least the
holdout and at most 500, see ``validation_size``):

    frequency             window               holdout           max training windows
    sub-hourly (5min..)   2 days, <= 288 steps 7 days of steps   8000
    hourly .. 12h         2 days (1h: 48)      7 days (1h: 168)  8000
    daily, business day   30                   60                8000
    weekly                26                   26                8000
    monthly, other        24                   12                8000
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from forecaster.config.settings import ModelSpec, season_length
from forecaster.errors import InvalidInput, NotEnoughData
from forecaster.modelling.scoring import conformal_halfwidth, coverage, metrics_block, naive_scale, rolling_naive
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

if TYPE_CHECKING:
    from forecaster.modelling.network import RecurrentForecaster

FORMAT = 1  # bump when the stored hyperparameters' meaning changes
DEFAULT_MAX_TRAIN = 8000  # training windows (4000 -> 8000 with hidden 64: Greensboro MASE 0.840 -> 0.731)
_DAY = pd.Timedelta(days=1)


def frequency_defaults(freq: str) -> tuple[int, int]:
    """(window, holdout) steps for a pandas frequency alias (see the module table)."""
    offset = pd.tseries.frequencies.to_offset(freq)
    code = offset.rule_code.upper()
    if code in ("B", "C"):
        return 30, 60
    try:
        step = pd.Timedelta(offset)
    except (ValueError, TypeError):  # calendar offsets
        return (26, 26) if code.startswith("W") else (24, 12)
    if step == _DAY:
        return 30, 60
    if step < _DAY:
        per_day = max(int(_DAY / step), 1)
        return min(2 * per_day, 288), 7 * per_day
    return 24, 12


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
        from forecaster.modelling.network import from_artifact  # torch loads here, not at import

        hp = hyperparameters
        cls._check(hp)
        return cls(hp, Scaler.from_dict(scaler), from_artifact(hp, weights))

    @classmethod
    def inputs_only(cls, hyperparameters: dict[str, Any], scaler: dict[str, Any]) -> Predictor:
        """A Predictor without its network: it builds inputs (``next_inputs``) and reads outputs
        (``from_outputs``) for a batched pass that runs many models at once (``forecaster.modelling.fleet``).

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

    def predict(self, windows: np.ndarray, last_ts: Any = None) -> np.ndarray:
        """One-step forecasts (B,) for raw value windows (B, L), in one batched pass.

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
        return self._forward(w, feats)

    def predict_rolling(self, ts: pd.DatetimeIndex, values: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Rolling-origin one-step forecasts of steps start..stop-1 from the true history.

        Step t is forecast from ``values[t-L:t]`` (and their real timestamps);
        ``stop`` may be ``len(values) + 1`` to include the step after the end.
        """
        return self._forward(*self._rolling(ts, values, start, stop))

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
        return float(self.predict_rolling(ts, values, len(values), len(values) + 1)[0])

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
        """Forecasts (B,) from the network's outputs yn (B,) on the raw windows w (B, L)."""
        loc, scale = self.scaler.stats(w)
        return denormalise(yn, w[:, -1], loc, scale, self.hp["target"])

    def _inputs(self, w: np.ndarray, feats: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        X = w[:, :, None] if feats is None else np.concatenate([w[:, :, None], feats], axis=2)
        Xn, _, loc, scale = normalise(X, None, self.scaler, self.hp["target"])
        return Xn, loc, scale

    def _forward(self, w: np.ndarray, feats: np.ndarray | None) -> np.ndarray:
        import torch

        if self.model is None:
            raise ValueError("this Predictor has no network (inputs_only): run the model elsewhere")
        Xn, loc, scale = self._inputs(w, feats)
        with torch.inference_mode():
            yn = self.model(torch.from_numpy(Xn)).numpy()  # (B,)
        return denormalise(yn, w[:, -1], loc, scale, self.hp["target"])


@dataclass(frozen=True)
class TrainOutcome:
    hyperparameters: dict[str, Any]
    scaler: dict[str, Any]
    weights: bytes
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    predictor: Predictor


def _validate(ts: pd.DatetimeIndex, values: np.ndarray) -> tuple[pd.DatetimeIndex, np.ndarray]:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or len(ts) != len(v):
        raise InvalidInput(f"{len(ts)} timestamps for values shaped {v.shape}")
    if not isinstance(ts, pd.DatetimeIndex) or ts.tz is None:
        raise InvalidInput("timestamps must be a timezone-aware (UTC) DatetimeIndex")
    if not ts.is_monotonic_increasing or not ts.is_unique:
        raise InvalidInput("timestamps must be strictly increasing")
    bad = np.flatnonzero(~np.isfinite(v))
    if len(bad):
        raise InvalidInput(f"{len(bad)} values are NaN or infinite (first at {ts[bad[0]].isoformat()})")
    return ts.tz_convert("UTC"), v


def _holdout_size(n: int, window: int, hold_default: int) -> int:
    """Holdout (= validation = minimum training) windows for n observations.

    Raises:
        NotEnoughData: naming the smallest series length that would do.
    """
    def size(k: int) -> tuple[int, bool]:
        hold = min(hold_default, k // 5)  # at most 20 % of the series
        return hold, hold >= 1 and k - window >= 3 * hold

    hold, ok = size(n)
    if not ok:
        need = next(k for k in range(n + 1, window + 3 * hold_default + 6) if size(k)[1])
        h = size(need)[0]
        raise NotEnoughData(f"window {window} + training {h} + validation {h} + holdout {h} "
                            f"needs at least {need} observations; {n} given")
    return hold


def validation_size(m: int, hold: int) -> int:
    """Validation windows: 15 % of the m windows, at least the holdout, at most 500.

    The ladder chooses the serving candidate on this stretch (forecaster/modelling/selection.py),
    so it must be long enough for the choice to mean something: at the holdout's
    length a monthly series chose on 12 values, a weekly one on 26.
    """
    return max(hold, min(500, round(0.15 * m)))


GAP_STEPS = 20  # a hole longer than this many typical steps (and than GAP_MIN) splits a series
GAP_MIN = pd.Timedelta(days=14)


def recent_segment(ts: pd.DatetimeIndex, values: np.ndarray) -> tuple[pd.DatetimeIndex, np.ndarray, int]:
    """The part of a series after its last long gap, and how many older points were dropped.

    Windows that straddle a hole of months or years (an offline snapshot from
    2010 followed by live data from today, a sensor down for weeks) teach the
    model a jump that never happens. Weekends, holidays and a missing DST hour
    are far shorter than the threshold: max(20 typical steps, 14 days).
    """
    if len(ts) < 3:
        return ts, values, 0
    gaps = np.diff(ts.as_unit("ns").asi8)  # ns
    limit = max(GAP_STEPS * float(np.median(gaps)), float(GAP_MIN.value))
    long = np.flatnonzero(gaps > limit)
    if long.size == 0:
        return ts, values, 0
    start = int(long[-1]) + 1
    return ts[start:], values[start:], start


@dataclass(frozen=True)
class Prepared:
    """One series made ready to fit: validated, split by time, windowed and scaled (``prepare``).

    Everything ``fit`` and ``score`` need; a fleet fits many of these at once.
    """

    ts: pd.DatetimeIndex
    values: np.ndarray
    frequency: str
    spec: ModelSpec
    window: int
    hold: int
    columns: tuple[str, ...]
    train: slice
    val: slice
    holdout: slice
    max_train: int
    scale: float  # naive MASE scale of the training values
    scaler: Scaler
    x_train: np.ndarray  # (m, L, F) float32, normalised
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray

    @property
    def input_size(self) -> int:
        """Features per step (the value and any extra input channels)."""
        return int(self.x_train.shape[2])

    def model_config(self) -> Any:
        """The network's shape (a ``forecaster.modelling.network.ModelConfig``)."""
        from forecaster.modelling.network import ModelConfig

        s = self.spec
        return ModelConfig(s.cell, self.input_size, s.hidden_size, s.num_layers, s.dropout)

    def train_config(self) -> Any:
        """The training loop's settings (a ``forecaster.modelling.training.TrainConfig``)."""
        from forecaster.modelling.training import TrainConfig

        s = self.spec
        return TrainConfig(lr=s.lr, batch_size=s.batch_size, epochs=s.epochs, patience=s.patience,
                           grad_clip=s.grad_clip, loss=s.loss, seed=s.seed, device=s.device, amp=s.amp)

    def splits(self) -> Any:
        """The normalised training and validation arrays (a ``forecaster.modelling.training.Splits``)."""
        from forecaster.modelling.training import Splits

        return Splits(self.x_train, self.y_train, self.x_val, self.y_val)

    @property
    def fleet_key(self) -> tuple[Any, ...]:
        """Series with equal keys can be trained together as one fleet (same shape and step settings)."""
        s = self.spec
        return (s.cell, self.window, self.input_size, s.hidden_size, s.num_layers, s.dropout, s.loss,
                s.batch_size, s.device, s.amp)


def prepare(ts: pd.DatetimeIndex, values: np.ndarray, *, frequency: str, spec: ModelSpec) -> Prepared:
    """Validate, split by time, window and scale one series (the first phase of ``train_series``).

    Raises:
        InvalidInput: on non-finite values, bad timestamps or a constant series.
        NotEnoughData: if the series is too short, naming the numbers.
    """
    ts, v = _validate(ts, values)
    n = len(v)
    win_default, hold_default = frequency_defaults(frequency)
    L = spec.window or win_default
    hold = _holdout_size(n, L, hold_default)
    columns = calendar_columns(frequency) if spec.calendar else ()
    X, y = make_windows(v, L, calendar_features(ts, frequency) if columns else None)  # views
    train, val, holdout = time_split(len(y), val=validation_size(len(y), hold), holdout=hold)
    max_train = spec.max_train_points or DEFAULT_MAX_TRAIN
    train = slice(max(train.start, train.stop - max_train), train.stop)  # most recent only
    train_values = v[train.start : train.stop + L]  # every value the training windows touch
    scale = naive_scale(train_values)
    if scale == 0:
        raise InvalidInput(f"values are constant ({v[train.start]}) over the training range; "
                           "MASE is undefined and the naive forecast is exact")
    scaler = Scaler.fit(train_values, spec.normalise)
    xt, yt, _, _ = normalise(X[train], y[train], scaler, spec.target)
    xv, yv, _, _ = normalise(X[val], y[val], scaler, spec.target)
    return Prepared(ts, v, frequency, spec, L, hold, tuple(columns), train, val, holdout, max_train, scale,
                    scaler, xt, yt, xv, yv)  # type: ignore[arg-type]


def fit_one(prep: Prepared, progress: Callable[[int, int, float], None] | None = None) -> tuple[Any, Any]:
    """Fit one network on a prepared series (the per-series path): (model on the CPU, TrainResult).

    Raises:
        TrainingDiverged: if the loss became NaN.
    """
    from forecaster.modelling.network import RecurrentForecaster
    from forecaster.modelling.training import fit, set_seed

    set_seed(prep.spec.seed)  # the initial weights come from this seed too
    model = RecurrentForecaster(prep.model_config())
    result = fit(model, prep.splits(), prep.train_config(), progress)
    return model.cpu(), result


def fit_many(preps: list[Prepared], progress: list[Callable[[int, int, float], None] | None] | None = None,
             *, max_size: int | None = None) -> list[tuple[Any, Any, Exception | None]]:
    """Fit the networks of prepared series with equal ``fleet_key`` as one fleet (``forecaster.modelling.fleet``).

    Returns one (model or None, TrainResult or None, error or None) per series, in order; a
    member whose loss diverged has its TrainingDiverged as the error and the others are unaffected.
    """
    from forecaster.modelling.fleet.training import Member, fit_fleet
    from forecaster.modelling.network import RecurrentForecaster

    if not preps:
        return []
    keys = {p.fleet_key for p in preps}
    if len(keys) > 1:
        raise ValueError(f"fit_many needs one fleet_key; got {len(keys)}")
    config = preps[0].model_config()
    members = [Member(p.splits(), p.train_config(), progress=(progress or [None] * len(preps))[i])
               for i, p in enumerate(preps)]
    out: list[tuple[Any, Any, Exception | None]] = []
    for r in fit_fleet(config, members, max_size=max_size):
        if r.error is not None or r.state_dict is None:
            out.append((None, None, r.error))
            continue
        model = RecurrentForecaster(config)
        model.load_state_dict(r.state_dict)
        out.append((model.eval(), r.result, None))
    return out


def score(prep: Prepared, model: RecurrentForecaster, result: Any, champion: Predictor | None = None) -> TrainOutcome:
    """Score a fitted network on the holdout against the baselines and the champion, and package it."""
    import torch

    from forecaster.modelling.network import to_artifact

    spec, ts, v, L, hold, columns = prep.spec, prep.ts, prep.values, prep.window, prep.hold, prep.columns
    n, train, val, holdout, scale, max_train = len(v), prep.train, prep.val, prep.holdout, prep.scale, prep.max_train
    frequency = prep.frequency
    mcfg = prep.model_config()
    hp: dict[str, Any] = {
        "format": FORMAT, **mcfg.to_dict(), "window": L, "target": spec.target,
        "normalise": spec.normalise, "calendar": bool(columns), "calendar_columns": list(columns),
        "frequency": frequency, "loss": spec.loss, "lr": spec.lr, "batch_size": spec.batch_size,
        "epochs": spec.epochs, "patience": spec.patience, "grad_clip": spec.grad_clip,
        "seed": spec.seed, "max_train_points": max_train, "holdout": hold, "validation": val.stop - val.start,
        "interval_level": spec.interval_level,
    }
    predictor = Predictor(hp, prep.scaler, model)
    # Positions (indices into v) of the first validation and holdout targets.
    p_val, p_hold = val.start + L, holdout.start + L
    y_val, y_hold = v[p_val:p_hold], v[p_hold:]
    val_pred = predictor.predict_rolling(ts, v, p_val, p_hold)
    hold_pred = predictor.predict_rolling(ts, v, p_hold, n)
    halfwidth = conformal_halfwidth(y_val - val_pred, spec.interval_level)
    season = season_length(frequency)
    champ = None
    if champion is not None and p_hold >= champion.window:
        champ = metrics_block(y_hold, champion.predict_rolling(ts, v, p_hold, n), scale)
    metrics = {
        "model": metrics_block(y_hold, hold_pred, scale),
        "naive": metrics_block(y_hold, rolling_naive(v, p_hold), scale),
        "seasonal_naive": (metrics_block(y_hold, rolling_naive(v, p_hold, season), scale)
                           if season and season > 1 and p_hold >= season else None),
        "champion": champ,
        "interval": {"level": spec.interval_level, "halfwidth": halfwidth,
                     "coverage": coverage(y_hold, hold_pred, halfwidth)},
    }
    # The ladder (forecaster/modelling/selection.py): statistical candidates and combinations
    # compete with the model on validation; the winner serves with an ACI interval.
    from forecaster.modelling.selection import ladder

    lad = ladder(ts, v, p_val=p_val, p_hold=p_hold, season=season, scale=scale,
                 model_forecasts=np.concatenate([val_pred, hold_pred]), level=spec.interval_level,
                 statistical=tuple(spec.candidates))
    metrics.update(lad.metrics)
    hp["serving"] = {"members": list(lad.choice.members), "method": lad.choice.method,
                     "label": lad.choice.label, "fitted": lad.stored}

    def span(a: int, b: int) -> list[str]:
        return [ts[a].isoformat(), ts[b].isoformat()]

    digest = hashlib.sha256(v.tobytes())
    digest.update(np.asarray(ts.as_unit("ns").asi8, dtype=np.int64).tobytes())
    lineage = {
        "train": span(train.start, train.stop - 1 + L), "val": span(p_val, p_hold - 1),
        "holdout": span(p_hold, n - 1), "row_count": n,
        "train_windows": train.stop - train.start, "val_windows": val.stop - val.start, "holdout_windows": hold,
        "data_hash": digest.hexdigest(), "seed": spec.seed, "torch_version": torch.__version__,
        "device": result.device, "duration_s": result.duration_s, "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
    }
    return TrainOutcome(hp, prep.scaler.to_dict(), to_artifact(model), metrics, lineage, predictor)


def train_series(
    ts: pd.DatetimeIndex,
    values: np.ndarray,
    *,
    frequency: str,
    spec: ModelSpec,
    champion: Predictor | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainOutcome:
    """Train, evaluate and package a model for one series: ``prepare``, ``fit_one``, ``score``.

    Args:
        ts: (n,) UTC timestamps, strictly increasing.
        values: (n,) observations.
        frequency: pandas alias of the series' step ("1h", "1B", ...).
        spec: hyperparameters; None fields take the frequency defaults.
        champion: the serving model, re-scored on this holdout for the gate.
        progress: called as progress(epoch, epochs, val_loss).

    Raises:
        InvalidInput: on non-finite values, bad timestamps or a constant series.
        NotEnoughData: if the series is too short, naming the numbers.
        TrainingDiverged: if the loss became NaN.
    """
    prep = prepare(ts, values, frequency=frequency, spec=spec)
    model, result = fit_one(prep, progress)
    return score(prep, model, result, champion)


def gate(metrics: dict[str, Any], champion_version: int | None = None) -> tuple[bool, str]:
    """Promote only if what serves beats every baseline present on the holdout.

    What serves is the candidate the ladder chose on validation (``metrics["served"]``,
    e.g. "AutoETS" or "mean of recurrent model + AutoARIMA"); older versions without
    a ladder are judged by the model alone. The holdout only decides promote or fall
    back to the baseline: it never chose among the candidates.

    Returns:
        (promote, reason), the reason naming the numbers, e.g.
        "model MASE 0.820 < naive 1.000, seasonal naive 1.310, champion v3 0.900".
    """
    served = metrics.get("served")
    if served and set(served.get("members", ())) <= {"naive", "seasonal_naive"}:
        # Validation chose a baseline: no version is needed for that, the fallback serves it.
        _, why = gate({k: x for k, x in metrics.items() if k != "served"}, champion_version)
        return False, f"{why}; validation chose {served.get('label')}: the baseline fallback serves it"
    who = "model" if not served or served.get("method") == "model" else served.get("label", "served")
    model = float((served or metrics["model"])["mase"])
    rivals = [("naive", float(metrics["naive"]["mase"]))]
    if metrics.get("seasonal_naive"):
        rivals.append(("seasonal naive", float(metrics["seasonal_naive"]["mase"])))
    if metrics.get("champion"):
        name = "champion" if champion_version is None else f"champion v{champion_version}"
        rivals.append((name, float(metrics["champion"]["mase"])))
    rivals = [r for r in rivals if r[0] != who]

    def fmt(xs: list[tuple[str, float]]) -> str:
        return ", ".join(f"{k} {x:.3f}" for k, x in xs)

    lost = [r for r in rivals if not model < r[1]]  # NaN loses too
    if not lost:
        return True, f"{who} MASE {model:.3f} < {fmt(rivals)}"
    won = [r for r in rivals if r not in lost]
    return False, f"{who} MASE {model:.3f} does not beat {fmt(lost)}" + (f" (beats {fmt(won)})" if won else "")
