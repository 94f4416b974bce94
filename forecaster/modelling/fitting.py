"""Fit one network or a fleet of them on prepared series, score each on its holdout, and package it.

``train_series`` is one series end to end, a pure function of (data, spec, seed): ``prepare``,
``fit_one``, ``score``. Scoring uses rolling-origin paths (each made from the true values before
its origin, through the same ``Predictor`` that serves it later; one step: every holdout step)
against the naive, seasonal naive and current champion paths on the same origins. No database, no HTTP; torch is
imported only when a model is fitted or scored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from forecaster.calendar.frequency import season_length
from forecaster.config.settings import ModelSpec
from forecaster.modelling.predictor import FORMAT, Predictor
from forecaster.modelling.preparation import Prepared, prepare
from forecaster.modelling.scoring import conformal_halfwidth

if TYPE_CHECKING:
    from forecaster.modelling.network import RecurrentForecaster
    from forecaster.modelling.training import TrainResult

    # One series of a fleet: its model and run, or None and why it failed.
    MemberFit = tuple[RecurrentForecaster | None, TrainResult | None, Exception | None]


@dataclass(frozen=True)
class TrainOutcome:
    hyperparameters: dict[str, Any]
    scaler: dict[str, Any]
    weights: bytes
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    predictor: Predictor


def fit_one(prep: Prepared,
            progress: Callable[[int, int, float], None] | None = None) -> tuple[RecurrentForecaster, TrainResult]:
    """Fit one network on a prepared series (the per-series path): (model on the CPU, TrainResult).

    Raises:
        TrainingDiverged: if the loss became NaN.
    """
    from forecaster.modelling.network import RecurrentForecaster
    from forecaster.modelling.training import fit, set_seed

    set_seed(prep.spec.seed)  # the initial weights come from this seed too (or the champion's, warm)
    model = RecurrentForecaster(prep.model_config())
    if prep.init is not None:
        model.load_state_dict(prep.init)
    result = fit(model, prep.splits(), prep.train_config(), progress)
    return model.cpu(), result


def warm_start(prep: Prepared, champion: Predictor | None, version: int | None = None) -> tuple[Prepared, str]:
    """``prep`` set to start from ``champion``'s weights (the version a warm retrain starts from: the
    champion, or the latest version when none serves), when its network has this shape and inputs.

    Returns (prep, why): the warm prep and "", or ``prep`` unchanged and the reason it trains cold.
    """
    import dataclasses

    if champion is None or champion.model is None:
        return prep, "no version to start from"
    hp = champion.hp
    mine = {**prep.model_config().to_dict(), "window": prep.window, "calendar_columns": list(prep.columns),
            "target": prep.spec.target, "normalise": prep.spec.normalise}
    theirs = {k: hp.get(k) for k in mine}
    theirs["horizon"] = hp.get("horizon", 1)
    differ = [f"{k} {theirs[k]!r} -> {mine[k]!r}" for k in mine if theirs[k] != mine[k]]
    if differ:
        start = f"v{version}" if version is not None else "the version to start from"
        return prep, f"the network of {start} differs: " + ", ".join(differ)
    state = {k: v.detach().clone() for k, v in champion.model.state_dict().items()}
    return dataclasses.replace(prep, init=state, warm_from=version), ""


def fit_many(preps: list[Prepared], progress: list[Callable[[int, int, float], None] | None] | None = None,
             *, max_size: int | None = None) -> list[MemberFit]:
    """Fit the networks of prepared series with equal ``fleet_key`` as one fleet (``fleet.training``).

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
    members = [Member(p.splits(), p.train_config(), progress=(progress or [None] * len(preps))[i], init=p.init)
               for i, p in enumerate(preps)]
    out: list[MemberFit] = []
    for r in fit_fleet(config, members, max_size=max_size):
        if r.error is not None or r.state_dict is None:
            out.append((None, None, r.error))
            continue
        model = RecurrentForecaster(config)
        model.load_state_dict(r.state_dict)
        out.append((model.eval(), r.result, None))
    return out


def score(prep: Prepared, model: RecurrentForecaster, result: TrainResult,
          champion: Predictor | None = None, *, start: Predictor | None = None) -> TrainOutcome:
    """Score a fitted network's paths on the holdout against the baselines and the champion, and package it.

    A warm ``prep`` (``prep.init``) keeps the statistical forms of ``start``, the version its
    weights came from (default: the champion).

    Every figure is over the same rolling origins (``paths.origins``): each position for one step,
    at most ``paths.MAX_ORIGINS`` strided ones for paths; blocks carry MASE per step and per fold.
    """
    import torch

    from forecaster.modelling import paths
    from forecaster.modelling.network import to_artifact

    spec, ts, v, L, hold, columns = prep.spec, prep.ts, prep.values, prep.window, prep.hold, prep.columns
    n, train, val, holdout, scale, max_train = len(v), prep.train, prep.val, prep.holdout, prep.scale, prep.max_train
    frequency, h = prep.frequency, prep.horizon
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
    # Positions (indices into v) of the first validation and holdout targets, and the origins judged there.
    p_val, p_hold = val.start + L, holdout.start + L
    o_val, o_hold = paths.origins(p_val, p_hold, h), paths.origins(p_hold, n, h)
    y_val, y_hold = paths.actual_paths(v, o_val, h), paths.actual_paths(v, o_hold, h)
    val_pred = predictor.predict_rolling_paths(ts, v, o_val)  # (n_val, h)
    hold_pred = predictor.predict_rolling_paths(ts, v, o_hold)
    halfwidths = [conformal_halfwidth(y_val[:, k] - val_pred[:, k], spec.interval_level) for k in range(h)]
    season = season_length(frequency)
    champ = champ_model = None
    if champion is not None and champion.horizon == h and p_hold >= champion.window:
        champ_pred = champion.predict_rolling_paths(ts, v, o_hold)
        champ_model = paths.path_block(y_hold, champ_pred, scale)
        served_pred = champion_served(champion, champ_pred, ts, v, o_hold, season)
        champ = champ_model if served_pred is None else paths.path_block(y_hold, served_pred, scale)
    can_season = season is not None and season > 1 and len(o_hold) > 0 and int(o_hold[0]) >= season
    interval: dict[str, Any] = {
        "level": spec.interval_level, "halfwidth": halfwidths[0],
        "coverage": paths.step_coverage(y_hold - hold_pred, np.broadcast_to(halfwidths, y_hold.shape))[0]}
    if h > 1:
        interval["halfwidth_steps"] = halfwidths
    metrics = {
        "model": paths.path_block(y_hold, hold_pred, scale),
        "naive": paths.path_block(y_hold, paths.naive_paths(v, o_hold, h), scale),
        "seasonal_naive": (paths.path_block(y_hold, paths.seasonal_naive_paths(v, o_hold, h, season), scale)
                           if can_season and season is not None else None),
        "champion": champ,  # what the champion serves, re-run on these origins: the gate's rival
        "champion_model": champ_model,  # the champion's recurrent model alone, beside it
        "interval": interval,
        "horizon": h,
    }
    # The ladder (forecaster/modelling/selection.py): statistical candidates and combinations
    # compete with the model on validation; the winner serves with an ACI interval per step.
    from forecaster.modelling.selection import ladder

    origin = start if start is not None else champion
    warm = prep.init is not None and origin is not None  # warm: the forms and orders of its start too
    keep = ((origin.hp.get("serving") or {}).get("fitted") or None) if warm and origin is not None else None
    lad = ladder(ts, v, p_val=p_val, p_hold=p_hold, season=season, scale=scale,
                 model_forecasts=np.concatenate([val_pred, hold_pred]), level=spec.interval_level,
                 statistical=tuple(spec.candidates), horizon=h, keep=keep)
    metrics.update(lad.metrics)
    hp["serving"] = {"members": list(lad.choice.members), "method": lad.choice.method,
                     "label": lad.choice.label, "fitted": lad.stored}
    if lad.choice.first:
        hp["serving"]["first"] = list(lad.choice.first)
    if h > 1:
        hp["serving"]["aci_steps"] = lad.aci_steps

    def span(a: int, b: int) -> list[str]:
        return [ts[a].isoformat(), ts[b].isoformat()]

    digest = hashlib.sha256(v.tobytes())
    digest.update(np.asarray(ts.as_unit("ns").asi8, dtype=np.int64).tobytes())
    lineage = {
        "train": span(train.start, train.stop - 1 + L), "val": span(p_val, p_hold - 1),
        "holdout": span(p_hold, n - 1), "row_count": n,
        "train_windows": len(prep.y_train), "epoch_windows": len(prep.splits().y_train),  # warm: the recent ones
        "val_windows": len(prep.y_val), "holdout_windows": hold,
        "data_hash": digest.hexdigest(), "seed": spec.seed, "torch_version": torch.__version__,
        "device": result.device, "duration_s": result.duration_s, "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
        "horizon": h, "origins": {"val": len(o_val), "holdout": len(o_hold)},
        "start": {"kind": "warm" if warm else "cold", "from_version": prep.warm_from if warm else None,
                  "initial_val_loss": result.initial_val_loss, "forms_kept": sorted(keep or ())},
    }
    return TrainOutcome(hp, prep.scaler.to_dict(), to_artifact(model), metrics, lineage, predictor)


def champion_served(champion: Predictor, model_pred: np.ndarray, ts: pd.DatetimeIndex, v: np.ndarray,
                    at: np.ndarray, season: int | None) -> np.ndarray | None:
    """The champion's served paths (len(at), h) at origins ``at``: its ladder's members, frozen, averaged
    (step 1 its own members' where the ladder chose step 1 apart: ``Choice.combine``).

    ``model_pred`` is its recurrent model's. None when a member cannot be re-run here (a statistical
    candidate fitted from before this segment, or a season longer than the history): the caller then
    judges the champion by its model alone, as versions from before the ladder are.
    """
    from forecaster.modelling import paths
    from forecaster.modelling.candidates import Fitted, run, run_paths
    from forecaster.modelling.selection import Choice

    h = champion.horizon
    start = int(at[0])
    serving = champion.hp.get("serving") or {"members": ["model"]}
    choice = Choice.of(serving)
    parts: dict[str, np.ndarray] = {}
    for member in choice.every:
        if member == "model":
            parts[member] = model_pred
        elif member == "naive":
            parts[member] = paths.naive_paths(v, at, h)
        elif member == "seasonal_naive":
            if not season or season <= 1 or start < season:
                return None
            parts[member] = paths.seasonal_naive_paths(v, at, h, season)
        else:
            stored = (serving.get("fitted") or {}).get(member)
            if stored is None:
                return None
            f = Fitted.from_dict(stored)
            first = int(ts.get_indexer([pd.Timestamp(stored["fit_start_ts"])])[0])
            if first < 0 or start <= first:
                return None
            frozen = Fitted(f.name, f.season, first, first + f.fit_stop - f.fit_start, f.state, f.form, f.fit_s)
            if h == 1:  # one filter pass over every position from the first origin
                parts[member] = run(frozen, v, start)[0][at - start][:, None]
            else:
                parts[member] = run_paths(frozen, v, at, h)
    return choice.combine(parts)


def train_series(
    ts: pd.DatetimeIndex,
    values: np.ndarray,
    *,
    frequency: str,
    spec: ModelSpec,
    champion: Predictor | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    horizon: int = 1,
) -> TrainOutcome:
    """Train, evaluate and package a model for one series: ``prepare``, ``fit_one``, ``score``.

    Args:
        ts: (n,) UTC timestamps, strictly increasing.
        values: (n,) observations.
        frequency: pandas alias of the series' step ("1h", "1B", ...).
        spec: hyperparameters; None fields take the frequency defaults.
        champion: the serving model, re-scored on this holdout for the gate.
        progress: called as progress(epoch, epochs, val_loss).
        horizon: steps of the path the model forecasts (1: one step).

    Raises:
        InvalidInput: on non-finite values, bad timestamps or a constant series.
        NotEnoughData: if the series is too short, naming the numbers.
        TrainingDiverged: if the loss became NaN.
    """
    prep = prepare(ts, values, frequency=frequency, spec=spec, horizon=horizon)
    model, result = fit_one(prep, progress)
    return score(prep, model, result, champion)
