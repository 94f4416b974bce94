"""One series made ready to fit: validated, cut after its last long gap, split by time, windowed and scaled.

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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from forecaster.config.settings import ModelSpec
from forecaster.errors import InvalidInput, NotEnoughData
from forecaster.modelling.scoring import naive_scale
from forecaster.modelling.windows import (
    Scaler,
    calendar_columns,
    calendar_features,
    make_windows,
    normalise,
    time_split,
)

if TYPE_CHECKING:
    from forecaster.modelling.network import ModelConfig
    from forecaster.modelling.training import Splits, TrainConfig

DEFAULT_MAX_TRAIN = 8000  # training windows; with hidden 64, 8000 beat 4000 (Greensboro MASE 0.731 vs 0.840)
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


def _holdout_size(n: int, window: int, hold_default: int, horizon: int = 1) -> int:
    """Holdout (= validation = minimum training) windows for n observations.

    A path of h steps is judged on several origins: the holdout is at least 4 h steps where the
    series allows (at most 20 % of it), and never shorter than one path.

    Raises:
        NotEnoughData: naming the smallest series length that would do.
    """
    want = max(hold_default, 4 * horizon)

    def size(k: int) -> tuple[int, bool]:
        hold = min(want, k // 5)  # at most 20 % of the series
        return hold, hold >= horizon and k - window >= 3 * hold + horizon - 1

    hold, ok = size(n)
    if not ok:
        need = next(k for k in range(n + 1, window + 3 * want + 5 * horizon + 6) if size(k)[1])
        h = size(need)[0]
        what = "" if horizon == 1 else f" for paths of {horizon} steps"
        raise NotEnoughData(f"window {window} + training {h} + validation {h} + holdout {h}{what} "
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

    Everything ``fitting.fit_one`` and ``fitting.score`` need; a fleet fits many of these at once.
    """

    ts: pd.DatetimeIndex
    values: np.ndarray
    frequency: str
    spec: ModelSpec
    horizon: int  # steps of each path the network forecasts
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
    y_train: np.ndarray  # (m,), or (m, h) for paths
    x_val: np.ndarray
    y_val: np.ndarray
    # A warm start (``fitting.warm_start``): the champion's weights to begin from, and its version.
    init: dict[str, Any] | None = None
    warm_from: int | None = None

    @property
    def input_size(self) -> int:
        """Features per step (the value and any extra input channels)."""
        return int(self.x_train.shape[2])

    def model_config(self) -> ModelConfig:
        """The network's shape."""
        from forecaster.modelling.network import ModelConfig

        s = self.spec
        return ModelConfig(s.cell, self.input_size, s.hidden_size, s.num_layers, s.dropout, self.horizon)

    def train_config(self) -> TrainConfig:
        """The training loop's settings."""
        from forecaster.modelling.training import TrainConfig

        s = self.spec
        warm = self.init is not None  # a short budget from the champion's weights
        lr = (s.warm_lr or s.lr / 10) if warm else s.lr
        return TrainConfig(lr=lr, batch_size=s.batch_size, epochs=s.warm_epochs if warm else s.epochs,
                           patience=s.warm_patience if warm else s.patience, grad_clip=s.grad_clip, loss=s.loss,
                           seed=s.seed, device=s.device, amp=s.amp, warm=warm)

    def splits(self) -> Splits:
        """The normalised training and validation arrays; a warm start trains on the most recent
        ``spec.warm_windows`` training windows only (its champion learned the older ones)."""
        from forecaster.modelling.training import Splits

        k = self.spec.warm_windows
        if self.init is not None and k and len(self.y_train) > k:
            return Splits(self.x_train[-k:], self.y_train[-k:], self.x_val, self.y_val)
        return Splits(self.x_train, self.y_train, self.x_val, self.y_val)

    @property
    def fleet_key(self) -> tuple[str | int | float | bool, ...]:
        """Series with equal keys can be trained together as one fleet (same shape and step settings)."""
        s = self.spec
        return (s.cell, self.window, self.input_size, s.hidden_size, s.num_layers, s.dropout, s.loss,
                s.batch_size, s.device, s.amp, self.horizon)


def prepare(ts: pd.DatetimeIndex, values: np.ndarray, *, frequency: str, spec: ModelSpec,
            horizon: int = 1) -> Prepared:
    """Validate, split by time, window and scale one series (the first phase of ``fitting.train_series``).

    The splits are by target position, as for one step; with a horizon h > 1 the training and
    validation windows are those whose whole path of targets lies in their stretch (no training
    target reaches into validation, no validation target into the holdout).

    Raises:
        InvalidInput: on non-finite values, bad timestamps or a constant series.
        NotEnoughData: if the series is too short, naming the numbers.
    """
    ts, v = _validate(ts, values)
    n = len(v)
    win_default, hold_default = frequency_defaults(frequency)
    L = spec.window or win_default
    hold = _holdout_size(n, L, hold_default, horizon)
    columns = calendar_columns(frequency) if spec.calendar else ()
    feats = calendar_features(ts, frequency) if columns else None
    X, y = make_windows(v, L, feats)  # views
    train, val, holdout = time_split(len(y), val=validation_size(len(y), hold), holdout=hold)
    max_train = spec.max_train_points or DEFAULT_MAX_TRAIN
    train = slice(max(train.start, train.stop - max_train), train.stop)  # most recent only
    train_values = v[train.start : train.stop + L]  # every value the training windows touch
    scale = naive_scale(train_values)
    if scale == 0:
        raise InvalidInput(f"values are constant ({v[train.start]}) over the training range; "
                           "MASE is undefined and the naive forecast is exact")
    scaler = Scaler.fit(train_values, spec.normalise)
    fit_train, fit_val = train, val
    if horizon > 1:  # window i is the same window; its targets are the h values from position i + L
        X, y = make_windows(v, L, feats, horizon)
        fit_train = slice(train.start, max(train.start, train.stop - horizon + 1))
        fit_val = slice(val.start, max(val.start, val.stop - horizon + 1))
    xt, yt, _, _ = normalise(X[fit_train], y[fit_train], scaler, spec.target)
    xv, yv, _, _ = normalise(X[fit_val], y[fit_val], scaler, spec.target)
    assert yt is not None and yv is not None  # normalise scales the targets it is given
    return Prepared(ts, v, frequency, spec, horizon, L, hold, tuple(columns), train, val, holdout, max_train,
                    scale, scaler, xt, yt, xv, yv)
