"""Which candidate serves: chosen on validation, reported on the holdout.

Every candidate (the recurrent model, naive, seasonal naive, the statistical
models) has one-step forecasts over the validation stretch and the holdout. The
choice looks at the validation stretch only: each single candidate, and the plain
mean of the best 2, 3 and 4 by validation MAE (the M4 lesson: an equal-weight
combination of a few good methods is hard to beat). The lowest validation MAE
serves; a combination must win by ``MARGIN`` over the best single one, a tie
goes to the simpler. The holdout figures of every candidate are then computed
and shown, but never looked at by the choice.

``choose`` is pure numpy; ``ladder`` fits the statistical candidates (through
forecaster/modelling/candidates.py) and runs the choice and the intervals for one series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from forecaster.modelling.candidates import LABELS

if TYPE_CHECKING:
    import pandas as pd

COMBINE = (2, 3, 4)  # sizes of the combinations tried
MARGIN = 0.0  # a combination must beat the best single candidate's validation MAE by this share


@dataclass(frozen=True)
class Choice:
    """The serving candidate: one name, or the mean of several."""

    members: tuple[str, ...]
    val_mae: float

    @property
    def method(self) -> str:
        """Short tag stored with each forecast (fits the forecasts.method column)."""
        return self.members[0] if len(self.members) == 1 else "combination"

    @property
    def label(self) -> str:
        """What made the forecast, for people: "AutoETS", "mean of recurrent model + AutoARIMA"."""
        if len(self.members) == 1:
            return LABELS.get(self.members[0], self.members[0])
        return "mean of " + " + ".join(LABELS.get(m, m) for m in self.members)

    def combine(self, forecasts: dict[str, np.ndarray]) -> np.ndarray:
        """The served forecasts from each member's."""
        mean: np.ndarray = np.mean([np.asarray(forecasts[m], dtype=np.float64) for m in self.members], axis=0)
        return mean

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "members": list(self.members), "label": self.label,
                "val_mae": self.val_mae}


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
    return best, tried


# ---------------------------------------------------------------- the ladder


@dataclass(frozen=True)
class Ladder:
    """What ``ladder`` decided: metrics to store, fitted states to store, and the served forecasts."""

    choice: Choice
    metrics: dict[str, Any]  # "served", "selection", "candidates" blocks for ModelVersion.metrics
    stored: dict[str, Any]  # name -> Fitted.to_dict() of every fitted statistical candidate
    hold_forecasts: np.ndarray  # the served forecasts of the holdout
    aci: dict[str, Any]  # the served candidate's ACI state at the end of the holdout


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
) -> Ladder:
    """Score every candidate on validation (choose) and holdout (report), ACI per candidate.

    Args:
        ts: (n,) timestamps of ``values`` (stored with the fitted states).
        values: (n,) the series; validation is ``values[p_val:p_hold]``, holdout ``values[p_hold:]``.
        season: steps per season, or None.
        model_forecasts: the recurrent model's one-step forecasts of ``values[p_val:]``, or None.
        level: stated interval coverage, e.g. 0.9.
        scale: the MASE denominator.
        statistical: names of the statistical candidates to fit (on ``values[:p_val]``).
        refit: fit the chosen statistical members again on all of ``values`` before they
            serve (their holdout figures stay those of the first fit, which never saw it).
    """
    from forecaster.modelling import candidates as cands
    from forecaster.modelling.intervals import ACIState, coverage_of, walk
    from forecaster.modelling.scoring import metrics_block

    v = np.asarray(values, dtype=np.float64)
    pool = cands.baseline_pool(v, p_val, season)
    if model_forecasts is not None:
        pool.forecasts["model"] = np.asarray(model_forecasts, dtype=np.float64)
    cands.add_statistical(pool, v, p_val, season, tuple(n for n in statistical if n in cands.names_for(season)))
    k = p_hold - p_val
    y_val, y_hold = v[p_val:p_hold], v[p_hold:]
    choice, tried = choose({n: f[:k] for n, f in pool.forecasts.items()}, y_val)

    def interval(f: np.ndarray) -> tuple[dict[str, Any], ACIState]:
        """ACI started on the validation residuals, walked over the holdout's."""
        state = ACIState.start(y_val - f[:k], level)
        widths, end = walk(state, y_hold - f[k:])
        return {"level": level, "method": "aci", "gamma": state.gamma,
                "halfwidth": end.halfwidth, "coverage": coverage_of(y_hold - f[k:], widths)}, end

    blocks: dict[str, Any] = {}
    for name, f in pool.forecasts.items():
        block: dict[str, Any] = {"label": cands.LABELS.get(name, name), "val": metrics_block(y_val, f[:k], scale),
                 "holdout": metrics_block(y_hold, f[k:], scale)}
        block["interval"] = interval(f)[0]
        if name in pool.fitted:
            block["form"], block["fit_s"] = pool.forms[name], round(pool.fit_s[name], 3)
        blocks[name] = block
    for name, reason in pool.failed.items():
        blocks[name] = {"label": cands.LABELS.get(name, name), "failed": reason}

    served = choice.combine(pool.forecasts)
    ivl, end = interval(served)
    refitted: dict[str, str] = {}
    if refit:  # the chosen statistical members, fitted again on every value (validation and holdout too)
        for m in choice.members:
            if m in pool.fitted:
                try:
                    pool.fitted[m] = cands.fit_one(m, v, len(v), season)
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
        "served": {**metrics_block(y_hold, served[k:], scale), "method": choice.method,
                   "label": choice.label, "members": list(choice.members)},
        "selection": {**choice.to_dict(), "tried_val_mae": tried,
                      "rule": "lowest validation MAE; the holdout was not used to choose",
                      "refit": refitted},
        "candidates": blocks,
        "served_interval": {**ivl, "aci": end.to_dict()},
    }
    return Ladder(choice, metrics, stored, served[k:], end.to_dict())
