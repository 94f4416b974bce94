"""Statistical candidates that compete with the recurrent model: naive, seasonal naive,
statsforecast's AutoETS / AutoTheta / AutoARIMA.

Each statistical candidate is fitted on the values before the stretch it is judged
on (at most ``MAX_FIT`` of the most recent ones; ``selection.fold_pool`` fits it
before validation, then again before the holdout) and then run forward as a
one-step filter with its fitted parameters frozen: the forecast of step t uses the
true values before t and nothing fitted after the fit range. That is what the
service serves too: the fitted state is stored as JSON (``encode_state``; numpy
arrays as tagged lists, never pickled) and replayed over the values since the fit
started at each refresh.

statsforecast is JIT-compiled with numba: it is imported here, lazily, only when a
candidate is fitted or served (never on the API's GET path), and its compiled code
is cached in ``NUMBA_CACHE_DIR`` (default: ``~/.cache/forecaster/numba``) so that
only the first fit on a machine pays the compile time.

A candidate that fails (a numerical error, a series too short for its season,
statsforecast missing) is reported with its reason and never stops the others.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from forecaster.logs import log_event

MAX_FIT = 2000  # most recent values a statistical candidate is fitted on (fit time ~ linear)
MAX_SEASON = 52  # seasonal statistical models only up to this season length

LABELS = {
    "model": "recurrent model",
    "naive": "naive",
    "seasonal_naive": "seasonal naive",
    "ets": "AutoETS",
    "ets_seasonal": "seasonal AutoETS",
    "theta": "AutoTheta",
    "arima": "AutoARIMA",
    "sarima": "seasonal ARIMA",
}
STATISTICAL = ("ets", "ets_seasonal", "theta", "arima", "sarima")
# The seasonal ARIMA candidate's one form, for seasons longer than AutoARIMA's seasonal search takes
# (``_model``): ARIMA(1,0,1)(0,1,1)[m], one season differenced, a seasonal MA(1) on that.
SARIMA_ORDER, SARIMA_SEASONAL = (1, 0, 1), (0, 1, 1)
ARIMA_SEASON = 12  # AutoARIMA searches seasonal orders up to this season; "sarima" serves longer ones
ARIMA_LIKE = ("arima", "sarima")  # statsforecast ARIMA states: restored alike, their paths from one filter pass
# Candidates whose ``forward(fitted=True)`` is not a one-step filter: AutoTheta re-runs its seasonality
# test and decomposition on the whole series it is given, so its "fitted" value at t would see values
# after t. Their one-step forecasts are made one origin at a time instead (``run``).
LOOKS_AHEAD = ("theta",)


def _numba_cache() -> None:
    if "NUMBA_CACHE_DIR" not in os.environ:
        path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "forecaster" / "numba"
        try:
            path.mkdir(parents=True, exist_ok=True)
            os.environ["NUMBA_CACHE_DIR"] = str(path)
        except OSError:  # a read-only home: numba compiles in memory, each process anew
            pass


def _model(name: str, season: int, keep: dict[str, Any] | None = None) -> Any:
    """A fresh, unfitted statsforecast model for candidate ``name``; with ``keep`` (a stored
    ``Fitted.to_dict()`` of the same candidate) one of that form only (``kept_form``)."""
    _numba_cache()
    from statsforecast.models import ARIMA, AutoARIMA, AutoETS, AutoTheta  # numba: only here

    if keep is not None:
        return kept_form(name, season, keep)

    if name == "ets":
        return AutoETS(season_length=1)
    if name == "ets_seasonal":
        return AutoETS(season_length=season)
    if name == "theta":
        return AutoTheta(season_length=season if 1 < season <= MAX_SEASON else 1)
    if name == "arima":  # seasonal ARIMA search only for short seasons (monthly): too slow at 24+
        if 1 < season <= ARIMA_SEASON:  # the stepwise search with exact likelihoods took 50 s on 586 monthly values
            return AutoARIMA(season_length=season, approximation=True)
        return AutoARIMA(season_length=1)
    if name == "sarima":
        # No search at 24+: the approximate stepwise one took 5-13 s on 2,000 hourly values (stop 25's
        # note), and restricted to D = 1 it chose forms that scored worse than this one on Greensboro and
        # gasoline by the peers' protocol (stop 26's note).
        return ARIMA(order=SARIMA_ORDER, season_length=season, seasonal_order=SARIMA_SEASONAL)
    raise ValueError(f"unknown candidate {name!r}")


def kept_form(name: str, season: int, keep: dict[str, Any]) -> Any:
    """An unfitted model of the form a stored fit chose: its parameters are refitted, its form is
    not searched again (a warm retrain). ETS keeps its error/trend/season components and damping,
    Theta its variant and decomposition, ARIMA its orders, mean and drift.

    Raises:
        ValueError: if the stored fit says no form this code can rebuild.
    """
    from statsforecast.models import ARIMA, AutoETS, AutoTheta

    state = decode_state(keep["state"])
    if name in ("ets", "ets_seasonal"):
        m = re.fullmatch(r"ETS\((\w),(\w)(d?),(\w)\)", str(state.get("method", "")))
        if m is None:
            raise ValueError(f"stored {name} has no ETS form: {state.get('method')!r}")
        return AutoETS(season_length=season if name == "ets_seasonal" else 1,
                       model=m[1] + m[2] + m[4], damped=bool(m[3]))
    if name == "theta":
        if "modeltype" not in state:
            raise ValueError("stored theta has no model type")
        return AutoTheta(season_length=int(state.get("m", 1)), model=str(state["modeltype"]),
                         decomposition_type=str(state.get("decomposition_type", "multiplicative")))
    if name == "sarima":  # one form: nothing to keep but the season
        return ARIMA(order=SARIMA_ORDER, season_length=int(keep["season"]), seasonal_order=SARIMA_SEASONAL)
    if name == "arima":
        arma, coef = state.get("arma"), state.get("coef") or {}
        if arma is None or len(arma) != 7:
            raise ValueError("stored arima has no orders")
        p, q, sp, sq, period, d, sd = (int(x) for x in arma)
        return ARIMA(order=(p, d, q), season_length=period, seasonal_order=(sp, sd, sq),
                     include_mean="intercept" in coef, include_drift="drift" in coef)
    raise ValueError(f"unknown candidate {name!r}")


def names_for(season: int | None) -> tuple[str, ...]:
    """Statistical candidates that apply to a series with this season (None: no season)."""
    s = season or 1
    return (("ets",) + (("ets_seasonal",) if 1 < s <= MAX_SEASON else ()) + ("theta", "arima")
            + (("sarima",) if ARIMA_SEASON < s <= MAX_SEASON else ()))


# ---------------------------------------------------------------- JSON state (no pickle)


def encode_state(obj: Any) -> Any:
    """A statsforecast fitted-model dict as plain JSON: arrays, tuples and non-finite
    floats are tagged. Raises TypeError on anything else (a function, an object)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if np.isfinite(f) else {"__float__": repr(f)}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            if obj.dtype.kind in "OU" and all(isinstance(x, str) for x in obj.ravel()):
                return {"__strarray__": obj.tolist()}
            raise TypeError(f"cannot store an array of {obj.dtype}")
        flat = obj.ravel().astype(np.float64)
        # every value a float, non-finite ones tagged (one call for the lot when all are finite: a
        # seasonal ARIMA's state holds 54 x 54 matrices)
        values = flat.tolist() if np.isfinite(flat).all() else [encode_state(x) for x in flat]
        return {"__nd__": values, "shape": list(obj.shape), "dtype": obj.dtype.str}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_state(x) for x in obj]}
    if isinstance(obj, list):
        return [encode_state(x) for x in obj]
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError("cannot store a dict with non-string keys")
        return {"__dict__": {k: encode_state(v) for k, v in obj.items()}}
    raise TypeError(f"cannot store a {type(obj).__name__}")


def decode_state(obj: Any) -> Any:
    """Inverse of ``encode_state``."""
    if isinstance(obj, list):
        return [decode_state(x) for x in obj]
    if not isinstance(obj, dict):
        return obj
    if "__float__" in obj:
        return float(obj["__float__"])
    if "__nd__" in obj:
        values = obj["__nd__"]
        flat = values if all(type(x) is float for x in values) else [decode_state(x) for x in values]
        return np.asarray(flat, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"])
    if "__strarray__" in obj:
        return np.asarray(obj["__strarray__"])
    if "__tuple__" in obj:
        return tuple(decode_state(x) for x in obj["__tuple__"])
    if "__dict__" in obj:
        return {k: decode_state(v) for k, v in obj["__dict__"].items()}
    raise ValueError(f"not an encoded state: keys {sorted(obj)[:5]}")


# ---------------------------------------------------------------- fitting and running


@dataclass(frozen=True)
class Fitted:
    """A fitted statistical candidate: what to store, and how it was chosen."""

    name: str
    season: int
    fit_start: int  # position of the first value it was fitted on (its filter starts there)
    fit_stop: int  # one past the last
    state: dict[str, Any]  # encode_state(model_)
    form: str  # the form statsforecast selected, e.g. "ETS(A,N,N)", "ARIMA(2,1,1)"
    fit_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "season": self.season, "fit_start": self.fit_start,
                "fit_stop": self.fit_stop, "state": self.state, "form": self.form,
                "fit_s": round(self.fit_s, 3)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fitted:
        return cls(d["name"], int(d["season"]), int(d["fit_start"]), int(d["fit_stop"]), d["state"],
                   d.get("form", ""), float(d.get("fit_s", 0.0)))


def _form(model: Any) -> str:
    m = getattr(model, "model_", None) or {}
    if "method" in m:  # ETS: "ETS(A,N,N)"
        return str(m["method"])
    if "arma" in m:
        from statsforecast.arima import arima_string

        describe: Callable[[Any], str] = arima_string  # statsforecast leaves it unannotated
        return " ".join(describe(m).split())
    if "modeltype" in m:
        return f"Theta({m['modeltype']})"
    return type(model).__name__


def fit_one(name: str, values: np.ndarray, stop: int, season: int | None,
            keep: dict[str, Any] | None = None) -> Fitted:
    """Fit candidate ``name`` on ``values[max(0, stop - MAX_FIT):stop]`` (of ``keep``'s form, when given).

    Raises:
        Exception: whatever statsforecast raises; callers record it and go on.
    """
    start = max(0, stop - MAX_FIT)
    y = np.asarray(values[start:stop], dtype=np.float64)
    t0 = time.perf_counter()
    try:
        model = _model(name, season or 1, keep)
    except ValueError:  # a stored fit from older code: search the forms afresh
        model = _model(name, season or 1)
    with warnings.catch_warnings(record=True) as caught:  # statsforecast's optimiser notes stay off the terminal
        warnings.simplefilter("always")
        if name != "sarima" or not _fit_css(model, y):
            model.fit(y)
    if caught:
        log_event("candidate.fit_warnings", level=logging.DEBUG, candidate=name, count=len(caught),
                  first=str(caught[0].message))
    # Per-step arrays (residuals, fitted values, states, the series itself) are not
    # needed to run the fitted filter forward: dropping them keeps a version small.
    state = {k: x for k, x in model.model_.items() if not (isinstance(x, np.ndarray) and x.size >= 100)}
    return Fitted(name, season or 1, start, stop, encode_state(state), _form(model), time.perf_counter() - t0)


def _fit_css(model: Any, y: np.ndarray) -> bool:
    """Fit the seasonal ARIMA's one form by conditional sum of squares (CSS), then set the model up
    with those coefficients fixed (one exact likelihood evaluation for its state and sigma2).

    That is what statsforecast's default CSS-ML gave on every slice measured, at ~1/20 of the time:
    at m = 24 and 52 (a Kalman state of 26 and 54) its ML stage, started from the CSS estimates, never
    left them - BFGS's first line search fails (0 iterations, 100 likelihood evaluations, status 2) -
    on 2,000 values ending at four points each of hourly Greensboro, Miami and San Francisco (1.3 s of
    a 1.3 s fit) and weekly gasoline (3.7-5.6 s of the fit). ``tests/test_candidates.py`` checks the
    coefficients, sigma2 and paths against statsforecast's own fit on bundled data. (AutoARIMA's
    non-seasonal forms are not fitted this way: there ML does move, e.g. on Miami.)
    False (the caller fits the usual way) where CSS-ML would go on differently: a CSS search that
    ran out of iterations (ML then starts from zeros) or no finite estimate.
    """
    from statsforecast import arima as sf

    fit_arima: Callable[..., Any] = sf.Arima  # statsforecast leaves it unannotated
    css = fit_arima(y, order=model.order, seasonal={"order": model.seasonal_order, "period": model.season_length},
                    include_mean=model.include_mean, include_drift=model.include_drift, method="CSS")
    coef = {k: float(v) for k, v in css["coef"].items()}
    if css.get("code") == 1 or not np.isfinite(list(coef.values())).all():
        return False
    model.fixed = coef
    model.fit(y)
    model.fixed = None
    # statsforecast divides the residuals' sum of squares by n* - k (k: the coefficients it estimated); with
    # them fixed it counted none
    d, D, m = model.order[1], model.seasonal_order[1], model.season_length
    n_star = int(np.sum(~np.isnan(y))) - d - D * m
    model.model_["sigma2"] *= n_star / (n_star - len(coef))
    return True


def _restore(f: Fitted) -> Any:
    model = _model(f.name, f.season)
    state = decode_state(f.state)
    if f.name in ARIMA_LIKE and "xreg" not in state:
        # The per-step arrays were dropped when stored (``fit_one``). Without external regressors
        # ARIMA keeps only the drift column among them, which is 1..n over the n fitted values; its
        # forward pass reads that column and the fit's length, nothing else of them.
        n = f.fit_stop - f.fit_start
        drift = "drift" in (state.get("coef") or {})
        state["xreg"] = np.arange(1, n + 1, dtype=np.float64).reshape(-1, 1) if drift else None
        state.setdefault("x", np.zeros(n))
    model.model_ = state
    return model


def run(f: Fitted, values: np.ndarray, start: int) -> tuple[np.ndarray, float]:
    """One-step forecasts of ``values[start:]`` and of the step after the end, frozen.

    The fitted filter is run over ``values[f.fit_start:]`` (the fit range, then
    everything after it); ``start`` must be at least ``f.fit_start + 1``.

    Returns:
        (forecasts (len(values) - start,), next-step forecast).
    """
    if start <= f.fit_start:
        raise ValueError(f"candidate {f.name} was fitted from position {f.fit_start}; cannot forecast {start}")
    y = np.asarray(values[f.fit_start :], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = _restore(f).forward(y=y, h=1, fitted=True)
    if f.name in LOOKS_AHEAD:  # one forward pass per position, each on the values before it alone
        at = np.arange(start, len(values))
        return run_paths(f, values, at, 1)[:, 0], float(np.asarray(out["mean"])[0])
    fitted = np.asarray(out["fitted"], dtype=np.float64)
    return fitted[start - f.fit_start :], float(np.asarray(out["mean"])[0])


def run_paths(f: Fitted, values: np.ndarray, at: np.ndarray, h: int) -> np.ndarray:
    """Paths (len(at), h) made at each origin o from ``values[f.fit_start:o]``, parameters frozen.

    Raises:
        ValueError: if an origin is not after the fit's first value.
    """
    o = np.asarray(at, dtype=np.int64)
    if len(o) and int(o.min()) <= f.fit_start:
        raise ValueError(f"candidate {f.name} was fitted from position {f.fit_start}; cannot forecast {int(o.min())}")
    y = np.asarray(values, dtype=np.float64)
    model = _restore(f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if f.name in ARIMA_LIKE and len(o) > 1 and bool(np.all(np.diff(o) > 0)):
            one = _arima_one_pass(model, y, o, h, f.fit_start)
            if one is not None:
                return one
        out = np.empty((len(o), h))
        for i, origin in enumerate(o):
            out[i] = np.asarray(model.forward(y=y[f.fit_start : origin], h=h)["mean"], dtype=np.float64)
    return out


def _arima_one_pass(model: Any, y: np.ndarray, o: np.ndarray, h: int, first: int) -> np.ndarray | None:
    """ARIMA paths at increasing origins ``o`` from one Kalman filter pass over ``y[first:o[-1]]``.

    ``forward`` at each origin re-runs the frozen filter over every value since ``first``: O(origins x n).
    Here the first origin's ``forward`` sets up the state-space form and its state, and the filter then
    goes on over each stretch to the next origin, where the path is projected ``h`` steps (``_project``: the mean
    of statsforecast's ``kalman_forecast``) and the intercept and drift are added for those steps. The same figures as
    ``forward`` per origin to ~1e-12 (``tests/test_candidates.py``); 4-16x faster on the public series
    (``bench/arima_paths.py``, 96 origins: WTI and gasoline ~4.5x, the hourly ones and S&P 500 8-12x,
    Niño 1+2 16x with its seasonal orders).
    None when this shortcut does not apply (a constant start, exogenous regressors): the caller loops.
    """
    from statsforecast import arima as sf

    # statsforecast leaves these unannotated
    arima_like: Callable[..., Any] = sf.arima_like
    forward_arima: Callable[..., Any] = sf.forward_arima
    is_constant: Callable[..., Any] = sf.is_constant
    start = y[first : int(o[0])]
    state = model.model_
    coef = dict(state.get("coef") or {})
    if is_constant(start) or set(coef) - {"intercept", "drift"} - _arma_names(coef):
        return None
    fitted = forward_arima(state, y=start, method=model.method)
    ss = fitted["model"]
    intercept, drift = float(coef.get("intercept", 0.0)), float(coef.get("drift", 0.0))
    # the filter runs on the series less its regression part (drift is 1, 2, ... from ``first``)
    x = y[first:] - intercept - drift * np.arange(1, len(y) - first + 1, dtype=np.float64)
    a, P, Pn = ss["a"].copy(), ss["P"].copy(), ss["Pn"].copy()
    T, V = ss["T"], ss["V"]
    out = np.empty((len(o), h))
    done = int(o[0])
    for i, origin in enumerate(int(t) for t in o):
        if origin > done:
            # statsforecast's filter takes its first step's predicted covariance from Pn (it is set up
            # for a fresh start): going on from a filtered state, that is T P T' + V
            Pn[:] = T @ P @ T.T + V
            arima_like(x[done - first : origin - first], ss["phi"], ss["theta"], ss["delta"], a, P, Pn, 0, False)
            done = origin
        mean = _project(T, ss["Z"], a, h)
        n = origin - first
        out[i] = mean + intercept + drift * np.arange(n + 1, n + h + 1, dtype=np.float64)
    return out


def _project(T: np.ndarray, Z: np.ndarray, a: np.ndarray, h: int) -> np.ndarray:
    """The h-step mean path from state ``a``: statsforecast's ``kalman_forecast`` without its variances
    (a 54 x 54 covariance carried h steps per origin was most of a weekly series' path time)."""
    out = np.empty(h)
    for step in range(h):
        a = T @ a
        out[step] = a @ Z
    return out


def _arma_names(coef: dict[str, Any]) -> set[str]:
    """The ARMA coefficients' names among an ARIMA fit's (ar1, ma2, sar1, sma1, ...)."""
    return {k for k in coef if re.fullmatch(r"s?(ar|ma)\d+", k)}


@dataclass
class Pool:
    """Every candidate's one-step forecasts over the same positions, and what failed."""

    start: int  # position of the first forecast
    forecasts: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n - start,)
    next_values: dict[str, float] = field(default_factory=dict)
    fitted: dict[str, Fitted] = field(default_factory=dict)
    forms: dict[str, str] = field(default_factory=dict)
    fit_s: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # name -> reason


def baseline_pool(values: np.ndarray, start: int, season: int | None) -> Pool:
    """Naive and (where a season applies and fits) seasonal naive over ``values[start:]``."""
    v = np.asarray(values, dtype=np.float64)
    pool = Pool(start)
    pool.forecasts["naive"], pool.next_values["naive"] = v[start - 1 : -1], float(v[-1])
    if season and season > 1 and start >= season:
        pool.forecasts["seasonal_naive"] = v[start - season : len(v) - season]
        pool.next_values["seasonal_naive"] = float(v[-season])
    return pool


def add_statistical(
    pool: Pool, values: np.ndarray, fit_stop: int, season: int | None,
    names: tuple[str, ...] | None = None, *, fit: Callable[..., Fitted] | None = None,
) -> Pool:
    """Fit each statistical candidate on values before ``fit_stop`` and run it over
    ``values[pool.start:]``; a failure is recorded in ``pool.failed``, never raised."""
    for name in names if names is not None else names_for(season):
        try:
            f = (fit or fit_one)(name, values, fit_stop, season)
            fc, nxt = run(f, values, pool.start)
            if len(fc) != len(values) - pool.start or not (np.isfinite(fc).all() and np.isfinite(nxt)):
                raise ValueError("forecasts are not finite")
        except Exception as exc:  # noqa: BLE001 - one candidate must never stop the others
            pool.failed[name] = f"{type(exc).__name__}: {exc}"[:300]
            continue
        pool.forecasts[name], pool.next_values[name] = fc, nxt
        pool.fitted[name], pool.forms[name], pool.fit_s[name] = f, f.form, f.fit_s
    return pool


def serve_path(stored: dict[str, Any], values_since_fit: np.ndarray, h: int) -> np.ndarray:
    """The path (h,) after the end of a stored candidate, from the values since its fit started
    (h = 1: ``serve_next``, the one-step service's figure)."""
    if h == 1:
        return np.asarray([serve_next(stored, values_since_fit)])
    f = Fitted.from_dict(stored)
    frozen = Fitted(f.name, f.season, 0, f.fit_stop - f.fit_start, f.state, f.form, f.fit_s)
    path: np.ndarray = run_paths(frozen, values_since_fit, np.asarray([len(values_since_fit)]), h)[0]
    return path


def serve_next(stored: dict[str, Any], values_since_fit: np.ndarray) -> float:
    """Next-step forecast of a stored candidate from the values since its fit started."""
    f = Fitted.from_dict(stored)
    return run(Fitted(f.name, f.season, 0, f.fit_stop - f.fit_start, f.state, f.form, f.fit_s),
               values_since_fit, len(values_since_fit))[1]
