"""Sliding windows, calendar features, time splits and normalisation: pure numpy.

A window of ``L`` steps ending at position ``t - 1`` predicts the value at ``t``.
Windows are strided *views* of the series (``sliding_window_view``): building them
costs O(1) memory however many there are; the one copy happens when the
normalised float32 array is made for the model.

Normalisation is chosen per model (``Scaler.kind``):

- ``"window"`` (default): reversible instance normalisation. Each window is
  centred by its own mean and scaled by its own std, floored at 1 % of the
  training std (``Scaler.std``) so that a flat window does not divide by zero. A
  level the training range never reached is no problem.
- ``"global"``: one mean/std fit on the training range only.

The target is either the next value (``"value"``) or its change from the last
value of the window (``"delta"``), in the same scaled units; ``denormalise``
undoes both.

Calendar features (``calendar_features``) are sin/cos pairs, only those that mean
something at the frequency (fewer columns, never columns of zeros):

    frequency              columns
    sub-daily (5min, 1h)   day_sin, day_cos (time of day), week_sin, week_cos
    daily, business day    week_sin, week_cos (day of week)
    weekly, monthly        none
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

Target = Literal["value", "delta"]
_DAY_NS = 86_400 * 10**9
_WEEK_NS = 7 * _DAY_NS
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


def make_windows(
    values: np.ndarray, window: int, features: np.ndarray | None = None, horizon: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """All windows of ``window`` steps with the value (or the ``horizon`` values) that follow each.

    Args:
        values: (n,) the series.
        window: L, steps per window.
        features: (n, F) per-step features (e.g. calendar), or None.
        horizon: h, steps each window's target path covers.

    Returns:
        X (m, L, 1 + F) and y, m = n - L - h + 1: ``X[i] = [values, features][i:i+L]``; with
        h = 1 ``y[i] = values[i + L]`` (y is (m,)), else ``y[i] = values[i + L : i + L + h]``
        (y is (m, h)). Both are read-only views: of ``values`` when ``features`` is None, else of
        one (n, 1 + F) stack of the inputs.

    Raises:
        ValueError: if the shapes disagree or the series is not longer than L + h - 1.
    """
    values = np.asarray(values)
    if values.ndim != 1 or window < 1 or horizon < 1 or values.shape[0] <= window + horizon - 1:
        raise ValueError(f"need a 1-D series longer than window {window} + horizon {horizon} - 1; "
                         f"got shape {values.shape}")
    if horizon > 1:
        X, _ = make_windows(values[: len(values) - horizon + 1], window,
                            None if features is None else features[: len(values) - horizon + 1])
        return X, sliding_window_view(values[window:], horizon)  # (m, L, 1 + F), (m, h)
    if features is None:
        base = values[:, None]  # (n, 1) view
    else:
        if features.ndim != 2 or features.shape[0] != values.shape[0]:
            raise ValueError(f"features {features.shape} do not match values {values.shape}")
        base = np.column_stack([values, features])  # (n, 1 + F): the only copy, O(n)
    X = sliding_window_view(base[:-1], window, axis=0)  # (m, 1 + F, L) view
    return X.transpose(0, 2, 1), values[window:]  # (m, L, 1 + F), (m,)


def last_windows(values: np.ndarray, window: int, start: int, stop: int) -> np.ndarray:
    """The (stop - start, L) windows that precede positions start..stop-1 (a view).

    ``stop`` may be ``len(values) + 1``: the last window then ends at the series' end.

    Raises:
        ValueError: if there are fewer than L values before ``start``.
    """
    if start < window or stop > len(values) + 1 or stop < start:
        raise ValueError(f"positions {start}..{stop} need {window} earlier values")
    if stop == start:
        return np.empty((0, window), dtype=np.asarray(values).dtype)
    return sliding_window_view(values[start - window : stop - 1], window)


def time_split(m: int, *, val: int | float, holdout: int | float) -> tuple[slice, slice, slice]:
    """Split m windows into train, validation and holdout, in time order, no overlap.

    Args:
        m: number of windows (ordered by target time).
        val: validation windows: a count, or a fraction of m if a float below 1.
        holdout: holdout windows, likewise (the most recent ones).

    Returns:
        (train, val, holdout) slices over the window axis.

    Raises:
        ValueError: if nothing would be left to train on.
    """
    n_hold = holdout if isinstance(holdout, int) else int(round(holdout * m))
    n_val = val if isinstance(val, int) else int(round(val * m))
    n_train = m - n_val - n_hold
    if n_train < 1 or n_val < 0 or n_hold < 0:
        raise ValueError(f"{m} windows cannot hold validation {n_val} + holdout {n_hold} + training")
    return slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, m)


# ---------------------------------------------------------------- calendar


def _step_ns(freq: str) -> int | None:
    """Length of one step in ns for fixed-length frequencies (min, h, D), else None."""
    offset = pd.tseries.frequencies.to_offset(freq)
    if offset.rule_code.upper() in ("B", "C"):
        return None
    try:
        return int(pd.Timedelta(offset).value)
    except (ValueError, TypeError):  # calendar offsets: W, MS, ME, QS, ...
        return None


def calendar_columns(freq: str) -> tuple[str, ...]:
    """Names of the calendar feature columns that mean something at ``freq``."""
    name = pd.tseries.frequencies.to_offset(freq).rule_code.upper()
    step = _step_ns(freq)
    if step is not None and step < _DAY_NS:
        return ("day_sin", "day_cos", "week_sin", "week_cos")
    if name in ("B", "C") or step == _DAY_NS:
        return ("week_sin", "week_cos")
    return ()


def _sincos(phase: np.ndarray) -> list[np.ndarray]:
    return [np.sin(2 * math.pi * phase), np.cos(2 * math.pi * phase)]


def _calendar_from_ns(ns: np.ndarray, columns: tuple[str, ...]) -> np.ndarray:
    """(..., C) features from int64 ns since the epoch (UTC)."""
    out: list[np.ndarray] = []
    if "day_sin" in columns:
        out += _sincos((ns % _DAY_NS) / _DAY_NS)
    if "week_sin" in columns:  # continuous position in the Monday-based week
        out += _sincos(((ns + _EPOCH_WEEKDAY * _DAY_NS) % _WEEK_NS) / _WEEK_NS)
    shape = ns.shape + (len(out),)
    return np.stack(out, axis=-1) if out else np.empty(shape)


def calendar_features(ts: pd.DatetimeIndex, freq: str) -> np.ndarray:
    """(n, C) sin/cos calendar features of UTC timestamps; C = len(calendar_columns(freq))."""
    ns = np.asarray(ts.tz_convert("UTC").as_unit("ns").asi8)
    return _calendar_from_ns(ns, calendar_columns(freq))


def window_calendar(last_ts: Any, window: int, freq: str) -> np.ndarray:
    """(B, L, C) calendar features of windows known only by their last timestamp.

    Steps are reconstructed on the frequency's calendar: fixed steps back for
    sub-daily and daily series, Monday-to-Friday for business days (holidays are
    not known here; with the real timestamps use ``calendar_features``).
    """
    columns = calendar_columns(freq)
    idx = pd.DatetimeIndex(last_ts)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")  # naive means UTC
    last = np.asarray(idx.as_unit("ns").asi8)  # (B,)
    back = np.arange(window - 1, -1, -1)  # (L,) steps before the last
    step = _step_ns(freq)
    if step is not None:
        return _calendar_from_ns(last[:, None] - back[None, :] * step, columns)
    if not columns:
        return np.empty((len(last), window, 0))
    days = last // _DAY_NS  # business days: walk back over Mon..Fri only
    weekday = (days + _EPOCH_WEEKDAY) % 7  # (B,)
    bday = np.minimum(weekday, 4)[:, None] - back[None, :]  # (B, L) business-day position
    weeks, wd = np.divmod(bday, 5)
    ns = ((days - weekday)[:, None] + weeks * 7 + wd) * _DAY_NS  # Monday + whole weeks + weekday
    return _calendar_from_ns(ns + (last % _DAY_NS)[:, None], columns)


# ---------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class Scaler:
    """How windows are normalised; fit on the training range only.

    ``mean``/``std`` are the training values' statistics. With ``kind="window"``
    only ``std`` is used, as the floor (x 0.01) of each window's own std.
    """

    kind: Literal["window", "global"]
    mean: float
    std: float

    @classmethod
    def fit(cls, train_values: np.ndarray, kind: Literal["window", "global"] = "window") -> Scaler:
        """Fit on the training values (never on validation or holdout)."""
        std = float(np.std(train_values))
        return cls(kind=kind, mean=float(np.mean(train_values)), std=std if std > 0 else 1.0)

    def stats(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-window centre and scale, each (m,), for raw value windows (m, L)."""
        if self.kind == "global":
            m = windows.shape[0]
            return np.full(m, self.mean), np.full(m, self.std)
        return windows.mean(axis=1), np.maximum(windows.std(axis=1), 0.01 * self.std)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, stored with the model version."""
        return {"kind": self.kind, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scaler:
        """Inverse of ``to_dict``."""
        return cls(kind=d["kind"], mean=float(d["mean"]), std=float(d["std"]))


def normalise(
    X: np.ndarray, y: np.ndarray | None, scaler: Scaler, target: Target
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Scale windows (and targets) for the model.

    Args:
        X: (m, L, 1 + F) raw windows, value in column 0.
        y: (m,) raw next values, or None when predicting.
        scaler: the fitted Scaler.
        target: ``"value"`` or ``"delta"``.

    Returns:
        (Xn float32 (m, L, 1 + F), yn float32 (m,) or (m, h) like y | None, loc (m,), scale (m,)).
    """
    loc, scale = scaler.stats(X[:, :, 0])  # (m,), (m,)
    Xn = np.array(X, dtype=np.float32)  # the copy: the model's input
    centred = X[:, :, 0] - loc[:, None]  # (m, L) float64; scaled in place (a temporary less)
    centred /= scale[:, None]
    Xn[:, :, 0] = centred
    if y is None:
        return Xn, None, loc, scale
    ref = loc if target == "value" else X[:, -1, 0]
    if np.ndim(y) == 2:  # paths: every step from the same reference and scale
        return Xn, ((y - ref[:, None]) / scale[:, None]).astype(np.float32), loc, scale
    return Xn, ((y - ref) / scale).astype(np.float32), loc, scale


def denormalise(
    yn: np.ndarray, last: np.ndarray, loc: np.ndarray, scale: np.ndarray, target: Target
) -> np.ndarray:
    """Undo ``normalise`` on model outputs yn (m,) or paths (m, h); ``last`` (m,) is each window's last value."""
    ref = loc if target == "value" else last
    out = np.asarray(yn, dtype=np.float64)
    if out.ndim == 2:
        paths: np.ndarray = ref[:, None] + scale[:, None] * out
        return paths
    values: np.ndarray = ref + scale * out
    return values
