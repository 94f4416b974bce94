"""Which candidate serves: chosen on what came before, judged walking the holdout forward.

Every candidate (the recurrent model, naive, seasonal naive, the statistical
models) has paths of h steps (one step when h = 1) made at rolling origins over the
validation stretch and the holdout (forecaster/modelling/paths.py). The choice looks
at the validation stretch, by the MAE over every origin and step: each single candidate, and the plain
mean of the best 2, 3 and 4 by validation MAE (the M4 lesson: an equal-weight
combination of a few good methods is hard to beat). The lowest validation MAE
wins; a combination must win by ``MARGIN`` over the best single one, a tie
goes to the simpler. For paths (h > 1) the validation origins fall into folds, and
a win within their noise (``gate.TIE_SE`` standard errors of the per-fold
differences) is a tie too: the recurrent model must beat the best option without
it by more than that (its validation figure is optimistic: early stopping looked
at it), and a combination its best member alone.

The holdout is then walked forward in its folds: fold j is forecast by the choice made on
validation and the folds before it (fold 0 by validation's alone), so its figure scores no
forecast chosen with that fold in hand, and that figure is what the gate judges and users see.
What serves is the choice made on validation and the whole holdout (``walk_forward``: twice
the origins, the most recent among them), the way a statistical candidate serves its fit on
one stretch more of data. For paths, step 1 is chosen apart by the one-step rule (``pick``).

``choose`` is pure numpy; ``ladder`` fits the statistical candidates (through
forecaster/modelling/candidates.py) and runs the choice and the intervals for one series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from forecaster.modelling.candidates import LABELS, Pool

if TYPE_CHECKING:
    import pandas as pd

COMBINE = (2, 3, 4)  # sizes of the combinations tried
MARGIN = 0.0  # a combination must beat the best single candidate's validation MAE by this share


@dataclass(frozen=True)
class Choice:
    """The serving candidate: one name, or the mean of several; for paths, step 1 may have its own."""

    members: tuple[str, ...]
    val_mae: float
    first: tuple[str, ...] = ()  # step 1's members, where step 1 is chosen apart and differs

    @classmethod
    def of(cls, serving: dict[str, Any]) -> Choice:
        """The choice a version's ``hp["serving"]`` stores (versions from before the ladder: the model)."""
        return cls(tuple(serving.get("members") or ("model",)), 0.0, tuple(serving.get("first") or ()))

    @property
    def every(self) -> tuple[str, ...]:
        """Every candidate whose forecasts the served path needs."""
        return self.members + tuple(m for m in self.first if m not in self.members)

    @property
    def method(self) -> str:
        """Short tag stored with each forecast (fits the forecasts.method column)."""
        return self.members[0] if len(self.every) == 1 else "combination"

    @property
    def label(self) -> str:
        """What made the forecast, for people: "AutoETS", "mean of recurrent model + AutoARIMA",
        "seasonal ARIMA; step 1 recurrent model"."""
        text = _label(self.members)
        return f"{text}; step 1 {_label(self.first)}" if self.first else text

    def combine(self, forecasts: dict[str, np.ndarray]) -> np.ndarray:
        """The served forecasts from each member's: paths (n, h) or one path (h,)."""
        mean: np.ndarray = np.mean([np.asarray(forecasts[m], dtype=np.float64) for m in self.members], axis=0)
        if self.first:
            firsts = np.mean([np.asarray(forecasts[m], dtype=np.float64) for m in self.first], axis=0)
            mean[..., 0] = firsts[..., 0]
        return mean

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "members": list(self.members), "first": list(self.first),
                "label": self.label, "val_mae": self.val_mae}


def _label(members: tuple[str, ...]) -> str:
    if len(members) == 1:
        return LABELS.get(members[0], members[0])
    return "mean of " + " + ".join(LABELS.get(m, m) for m in members)


def choose(val_forecasts: dict[str, np.ndarray], y_val: np.ndarray) -> tuple[Choice, dict[str, float]]:
    """Pick the serving candidate on validation forecasts only.

    Args:
        val_forecasts: name -> one-step forecasts of ``y_val`` (same length), from
            candidates that did not fit on ``y_val``.
        y_val: the validation actuals.

    Returns:
        (the choice, every tried option's validation MAE keyed by its label).

    Raises:
        ValueError: with no candidates.
    """
    y = np.asarray(y_val, dtype=np.float64)
    maes = {name: float(np.mean(np.abs(y - np.asarray(f, dtype=np.float64)))) for name, f in val_forecasts.items()}
    maes = {k: v for k, v in maes.items() if np.isfinite(v)}
    if not maes:
        raise ValueError("no candidate has validation forecasts")
    ranked = sorted(maes, key=lambda k: (maes[k], k))
    best = Choice((ranked[0],), maes[ranked[0]])
    tried = {best.label: best.val_mae}
    for k in COMBINE:
        if len(ranked) < k:
            break
        c = Choice(tuple(ranked[:k]), 0.0)
        mae = float(np.mean(np.abs(y - c.combine(val_forecasts))))
        c = Choice(c.members, mae)
        tried[c.label] = mae
        if mae < best.val_mae * (1 - MARGIN) and (len(best.members) == 1 or mae < best.val_mae):
            best = c
    for name in ranked[1:]:
        tried[LABELS.get(name, name)] = maes[name]
    if y.ndim == 2 and y.shape[1] > 1 and "model" in best.members:
        best = _model_tie(best, val_forecasts, y, ranked)
    if y.ndim == 2 and y.shape[1] > 1 and len(best.members) > 1:
        best = _single_tie(best, val_forecasts, y)
    return best, tried


def _fold_tie(mine: np.ndarray, other: np.ndarray) -> bool:
    """Whether the option with errors ``mine`` wins over ``other``'s (both (origins, h)) by no more than the
    folds' noise: ``gate.TIE_SE`` standard errors of the per-fold differences of their mean errors."""
    from forecaster.modelling.gate import TIE_SE
    from forecaster.modelling.paths import fold_slices

    d = np.array([mine[f].mean() - other[f].mean() for f in fold_slices(len(mine))])
    if len(d) < 2:
        return False
    se = float(d.std(ddof=1)) / np.sqrt(len(d))
    return bool(float(d.mean()) > -TIE_SE * se)


def _single_tie(best: Choice, forecasts: dict[str, np.ndarray], y: np.ndarray) -> Choice:
    """Paths: a combination serves only if it beats its best member alone by more than the folds' noise;
    within it, that member serves (a tie goes to the simpler). Measured on the six public series
    (``bench/quality.py --horizon``): Niño 1+2's mean of AutoARIMA + AutoTheta led AutoARIMA alone by
    0.006 of MAE per fold with a standard error of 0.087 and then scored 0.743 MASE on the walk after it
    against AutoARIMA's 0.690; gasoline's mean of AutoTheta + AutoARIMA, 0.966 against AutoTheta's 0.936."""
    single = min(best.members, key=lambda m: (float(np.mean(np.abs(y - forecasts[m]))), m))
    mine, alone = np.abs(y - best.combine(forecasts)), np.abs(y - np.asarray(forecasts[single], dtype=np.float64))
    if _fold_tie(mine, alone):
        return Choice((single,), float(alone.mean()))
    return best


def _model_tie(best: Choice, forecasts: dict[str, np.ndarray], y: np.ndarray, ranked: list[str]) -> Choice:
    """Paths: the recurrent model's validation figure is optimistic (its training stopped early on that
    very stretch), so a choice that needs it must win by more than the folds' noise
    (``gate.TIE_SE`` standard errors of the fold differences) over the best option without it;
    within that, the option without the model serves."""
    others = [n for n in ranked if n != "model"]
    if not others:
        return best
    options = [Choice((others[0],), 0.0)] + [Choice(tuple(others[:k]), 0.0) for k in COMBINE if len(others) >= k]
    errors = {c.members: np.abs(y - c.combine(forecasts)) for c in options}
    alt = min(options, key=lambda c: float(errors[c.members].mean()))
    if _fold_tie(np.abs(y - best.combine(forecasts)), errors[alt.members]):  # within the noise: without the model
        return Choice(alt.members, float(errors[alt.members].mean()))
    return best


def pick(forecasts: dict[str, np.ndarray], y: np.ndarray) -> tuple[Choice, dict[str, float]]:
    """``choose`` on paths (n, h), then step 1 chosen apart by the one-step rule (lowest MAE of step 1,
    combinations as ``choose`` tries them, no fold ties: the one-step service's own choice), so a path's
    first step is as good as the one-step forecast. Measured on the six public series (``bench/quality.py
    --horizon``): Miami's served step 1 0.384 -> 0.341 MASE (the recurrent model's), WTI's 1.216 -> 1.193,
    gasoline's 0.763 -> 0.715; Niño 1+2's 0.399 -> 0.411 (a mean of two)."""
    choice, tried = choose(forecasts, y)
    if y.ndim == 2 and y.shape[1] > 1:
        one, _ = choose({m: np.asarray(f)[:, :1] for m, f in forecasts.items()}, y[:, :1])
        if one.members != choice.members:
            choice = Choice(choice.members, choice.val_mae, one.members)
    return choice, tried


def walk_forward(forecasts: dict[str, np.ndarray], y_val: np.ndarray, y_hold: np.ndarray
                 ) -> tuple[Choice, dict[str, float], np.ndarray, list[Choice]]:
    """The choice made again as the holdout's folds come in, and the one that serves after the last.

    ``forecasts`` are every candidate's (n_val + n_hold, h) at the validation origins then the
    holdout's. Fold j of the holdout (``paths.fold_slices``) is forecast by ``pick`` over validation
    and the folds before j (fold 0 by validation's choice alone), so the holdout figure scores no
    forecast whose choice saw its fold; what serves is ``pick`` over validation and the whole holdout:
    twice the origins of validation alone, the most recent among them. On the six public series
    validation alone chose the recurrent model on Greensboro (3.369 MASE on the walk after it; seasonal
    ARIMA 3.229); with the holdout in, seasonal ARIMA.

    Returns:
        (what serves, every tried option's MAE over validation and holdout by label, the holdout's
        served paths (n_hold, h), the choice that forecast each holdout fold).
    """
    from forecaster.modelling.paths import fold_slices

    k = len(y_val)
    y = np.concatenate([np.asarray(y_val, dtype=np.float64), np.asarray(y_hold, dtype=np.float64)])
    hold = np.full(np.shape(y_hold), np.nan)
    picks = []
    for f in fold_slices(len(y_hold)):
        before, _ = pick({m: x[:k + f.start] for m, x in forecasts.items()}, y[:k + f.start])
        hold[f] = before.combine({m: x[k + f.start:k + f.stop] for m, x in forecasts.items()})
        picks.append(before)
    choice, tried = pick(forecasts, y)
    return choice, tried, hold, picks


# ---------------------------------------------------------------- the ladder


@dataclass(frozen=True)
class Ladder:
    """What ``ladder`` decided: metrics to store, fitted states to store, and the served forecasts."""

    choice: Choice
    metrics: dict[str, Any]  # "served", "selection", "candidates" blocks for ModelVersion.metrics
    stored: dict[str, Any]  # name -> Fitted.to_dict() of every fitted statistical candidate
    hold_forecasts: np.ndarray  # the served paths (n, h) of the holdout's origins
    aci: dict[str, Any]  # the served candidate's step-1 ACI state at the end of the holdout
    aci_steps: list[dict[str, Any]]  # every step's, step 1 first


def path_pool(values: np.ndarray, at: np.ndarray, h: int, season: int | None, fit_stop: int,
              statistical: tuple[str, ...], keep: dict[str, Any] | None = None) -> Pool:
    """Every baseline's and statistical candidate's paths (len(at), h) at origins ``at``.

    The statistical candidates are fitted on values before ``fit_stop`` and run forward frozen;
    a candidate in ``keep`` (name -> stored fit) keeps that fit's form and refits its parameters.
    One step (h = 1, consecutive origins) takes the one-step filter over all of them at once
    (``candidates.baseline_pool``/``add_statistical``); paths run each candidate once per origin.
    """
    from forecaster.modelling import candidates as cands
    from forecaster.modelling import paths

    v = np.asarray(values, dtype=np.float64)
    names = tuple(n for n in statistical if n in cands.names_for(season))
    start = int(at[0])
    if h == 1 and len(at) == len(v) - start:
        pool = cands.baseline_pool(v, start, season)
        def fit(name: str, values: np.ndarray, stop: int, s: int | None) -> cands.Fitted:
            return cands.fit_one(name, values, stop, s, keep=(keep or {}).get(name))

        cands.add_statistical(pool, v, fit_stop, season, names, fit=fit)
        pool.forecasts = {k: f[:, None] for k, f in pool.forecasts.items()}
        return pool
    pool = Pool(start)
    pool.forecasts["naive"] = paths.naive_paths(v, at, h)
    if season and season > 1 and start >= season:
        pool.forecasts["seasonal_naive"] = paths.seasonal_naive_paths(v, at, h, season)
    for name in names:
        try:
            f = cands.fit_one(name, v, fit_stop, season, keep=(keep or {}).get(name))
            fc = cands.run_paths(f, v, at, h)
            if not np.isfinite(fc).all():
                raise ValueError("forecasts are not finite")
        except Exception as exc:  # noqa: BLE001 - one candidate must never stop the others
            pool.failed[name] = f"{type(exc).__name__}: {exc}"[:300]
            continue
        pool.forecasts[name] = fc
        pool.fitted[name], pool.forms[name], pool.fit_s[name] = f, f.form, f.fit_s
    return pool


def fold_pool(values: np.ndarray, o_val: np.ndarray, o_hold: np.ndarray, h: int, season: int | None,
              p_val: int, p_hold: int, statistical: tuple[str, ...], keep: dict[str, Any] | None = None) -> Pool:
    """Every candidate's paths at the validation origins then the holdout's, each statistical one fitted
    before its stretch: on ``values[:p_val]`` for the validation paths (they choose) and again on
    ``values[:p_hold]`` for the holdout paths (the gate judges them); the second fit is the one stored
    and served, so what serves is what the gate saw, fitted on one stretch more of recent data.

    The second fit searches its form again (cold), or keeps ``keep``'s like the first (warm). Measured
    on the six public series (``bench/quality.py --horizon``): WTI 1.990 -> 1.978 MASE, S&P 500
    2.204 -> 2.193, Niño 1+2 0.756 -> 0.743, gasoline 0.963 -> 0.966; the hourly series unchanged.
    """
    v = np.asarray(values, dtype=np.float64)
    first = path_pool(v[:p_hold], o_val, h, season, p_val, statistical, keep)  # the validation paths
    if len(o_hold) == 0:
        return first
    second = path_pool(v, o_hold, h, season, p_hold, statistical, keep)
    k = len(o_val)
    pool = Pool(first.start, failed={**first.failed, **second.failed})
    for name, f in first.forecasts.items():
        if name in second.forecasts:
            pool.forecasts[name] = np.concatenate([f[:k], second.forecasts[name]])
        elif name not in pool.failed:
            pool.failed[name] = "failed on the holdout's fit"
    for name in second.forecasts:
        if name not in first.forecasts and name not in pool.failed:
            pool.failed[name] = "failed on the validation's fit"
    pool.fitted = {n: f for n, f in second.fitted.items() if n in pool.forecasts}
    pool.forms = {n: second.forms[n] for n in pool.fitted}
    pool.fit_s = {n: first.fit_s.get(n, 0.0) + second.fit_s[n] for n in pool.fitted}
    return pool


def ladder(
    ts: pd.DatetimeIndex,
    values: np.ndarray,
    *,
    p_val: int,
    p_hold: int,
    season: int | None,
    model_forecasts: np.ndarray | None,
    level: float,
    scale: float,
    statistical: tuple[str, ...],
    refit: bool = False,
    horizon: int = 1,
    keep: dict[str, Any] | None = None,
) -> Ladder:
    """Score every candidate's paths on validation (choose) and holdout (report), ACI per candidate and step.

    Args:
        ts: (n,) timestamps of ``values`` (stored with the fitted states).
        values: (n,) the series; validation is ``values[p_val:p_hold]``, holdout ``values[p_hold:]``.
        season: steps per season, or None.
        model_forecasts: the recurrent model's paths (n_val + n_hold, h) at the validation origins
            then the holdout's (``paths.origins``), or None. With h = 1 (n_val + n_hold,) is accepted.
        level: stated interval coverage, e.g. 0.9.
        scale: the MASE denominator.
        statistical: names of the statistical candidates to fit (on ``values[:p_val]`` for validation,
            again on ``values[:p_hold]`` for the holdout and serving: ``fold_pool``).
        refit: fit the chosen statistical members again on all of ``values`` before they
            serve (their holdout figures stay those of the first fit, which never saw it).
        horizon: h, steps of each path.
        keep: stored fits by candidate name (the champion's, warm): those keep their forms and
            orders and only refit their parameters.
    """
    from forecaster.modelling import candidates as cands
    from forecaster.modelling import paths
    from forecaster.modelling.intervals import ACIState, start_steps, walk_paths

    v = np.asarray(values, dtype=np.float64)
    h = horizon
    o_val, o_hold = paths.origins(p_val, p_hold, h), paths.origins(p_hold, len(v), h)
    at = np.concatenate([o_val, o_hold])
    pool = fold_pool(v, o_val, o_hold, h, season, p_val, p_hold, statistical, keep)
    if model_forecasts is not None:
        pool.forecasts["model"] = np.asarray(model_forecasts, dtype=np.float64).reshape(len(at), h)
    k = len(o_val)
    y_val, y_hold = paths.actual_paths(v, o_val, h), paths.actual_paths(v, o_hold, h)
    _, tried = choose({n: f[:k] for n, f in pool.forecasts.items()}, y_val)
    choice, tried_both, hold_served, picks = walk_forward(pool.forecasts, y_val, y_hold)

    def interval(f: np.ndarray) -> tuple[dict[str, Any], list[ACIState]]:
        """ACI per step started on the validation residuals, walked over the holdout's."""
        states = start_steps(y_val - f[:k], level)
        widths, end = walk_paths(states, o_hold, y_hold - f[k:])
        overall, by_step = paths.step_coverage(y_hold - f[k:], widths)
        block = {"level": level, "method": "aci", "gamma": states[0].gamma, "halfwidth": end[0].halfwidth,
                 "coverage": overall}
        if h > 1:
            block["coverage_steps"] = by_step
            block["halfwidth_steps"] = [s.halfwidth for s in end]
        return block, end

    blocks: dict[str, Any] = {}
    for name, f in pool.forecasts.items():
        block: dict[str, Any] = {"label": cands.LABELS.get(name, name),
                                 "val": paths.path_block(y_val, f[:k], scale),
                                 "holdout": paths.path_block(y_hold, f[k:], scale)}
        block["interval"] = interval(f)[0]
        if name in pool.fitted:
            block["form"], block["fit_s"] = pool.forms[name], round(pool.fit_s[name], 3)
        blocks[name] = block
    for name, reason in pool.failed.items():
        blocks[name] = {"label": cands.LABELS.get(name, name), "failed": reason}

    served = np.concatenate([choice.combine({n: f[:k] for n, f in pool.forecasts.items()}), hold_served])
    ivl, end = interval(served)
    folds = [[ts[int(o_hold[f.start])].isoformat(), ts[int(o_hold[f.stop - 1])].isoformat()]
             for f in paths.fold_slices(len(o_hold))]  # each fold's first and last origin
    refitted: dict[str, str] = {}
    if refit:  # the chosen statistical members, fitted again on every value (validation and holdout too)
        for m in choice.every:
            if m in pool.fitted:
                try:
                    pool.fitted[m] = cands.fit_one(m, v, len(v), season, keep=(keep or {}).get(m))
                    cands.run(pool.fitted[m], v, len(v))  # it must serve, or the first fit stays
                    refitted[m] = pool.fitted[m].form
                except Exception as exc:  # noqa: BLE001 - the first fit still serves
                    refitted[m] = f"kept the first fit: {type(exc).__name__}: {exc}"[:300]
    stored = {}  # every fitted candidate (a member serves; the rest can be compared or promoted later)
    for m, fitted in pool.fitted.items():
        d = fitted.to_dict()
        d["fit_start_ts"] = ts[fitted.fit_start].isoformat()
        stored[m] = d
    metrics = {
        # the holdout figure: each fold forecast by the choice made before it (``walk_forward``)
        "served": {**paths.path_block(y_hold, hold_served, scale), "method": choice.method,
                   "label": choice.label, "members": list(choice.members), "first": list(choice.first),
                   "holdout_folds": [{"origins": span, "label": c.label, "members": list(c.members),
                                      "first": list(c.first)} for span, c in zip(folds, picks, strict=True)]},
        "selection": {**choice.to_dict(), "tried_val_mae": tried, "tried_val_holdout_mae": tried_both,
                      "rule": ("lowest MAE over every origin and step; for paths a win within the folds' noise is "
                               "a tie, and a tie goes to the option without the model, then to the best single "
                               "member, and step 1 is chosen apart by the one-step rule. Chosen on validation for "
                               "the holdout's first fold, on validation and the folds before for each next one "
                               "(so the holdout figure scores no forecast chosen with its fold in hand), and on "
                               "validation and the whole holdout for what serves"),
                      "refit": refitted, "origins": {"val": int(k), "holdout": len(o_hold)}},
        "candidates": blocks,
        "served_interval": {**ivl, "aci": end[0].to_dict()},
    }
    return Ladder(choice, metrics, stored, served[k:], end[0].to_dict(), [e.to_dict() for e in end])
