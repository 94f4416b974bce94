"""The promotion gate: a new version serves only if it beats every baseline on the holdout.

Plain Python over the stored metrics (no numpy, no torch): the registry imports it.

One stretch is a noisy judge: a model that is better over months can lose one week to seasonal
naive by a few percent. So each holdout figure also comes per fold (``mase_folds``: the holdout's
origins in consecutive runs, forecaster/modelling/paths.py), and against a baseline a loss on the
mean counts only when it stands out of the folds' noise: the mean of the fold differences must
exceed ``TIE_SE`` standard errors of them. Within that it is a tie, and a tie does not hand the
series to a baseline. Against the champion the mean must be lower, as before: a tie keeps it.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

TIE_SE = 2.0  # a baseline wins only by more than this many standard errors of the fold differences


def _within_noise(served: dict[str, Any], rival: dict[str, Any]) -> tuple[bool, str]:
    """Whether served's loss to ``rival`` on the mean is within the noise of their fold differences."""
    a, b = served.get("mase_folds") or [], rival.get("mase_folds") or []
    if len(a) != len(b) or len(a) < 2:
        return False, ""
    d = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    mean, se = statistics.fmean(d), statistics.stdev(d) / math.sqrt(len(d))
    if not (math.isfinite(mean) and math.isfinite(se)):
        return False, ""
    return mean <= TIE_SE * se, f"{mean:+.3f} per fold, standard error {se:.3f} over {len(d)} folds"


def gate(metrics: dict[str, Any], champion_version: int | None = None) -> tuple[bool, str]:
    """Promote only if what serves beats every baseline present on the holdout.

    What serves is the candidate the ladder chose (``metrics["served"]``, e.g. "AutoETS" or
    "mean of recurrent model + AutoARIMA"); its holdout figure is the ladder's walk forward
    (each holdout fold forecast by the choice made before it: forecaster/modelling/selection.py),
    so no forecast it scores was chosen with that fold in hand. Older versions without a ladder
    are judged by the model alone.

    Returns:
        (promote, reason), the reason naming the numbers, e.g.
        "model MASE 0.820 < naive 1.000, seasonal naive 1.310, champion v3 0.900".
    """
    served = metrics.get("served")
    if served and set(served.get("members", ())) | set(served.get("first") or ()) <= {"naive", "seasonal_naive"}:
        # The ladder chose a baseline: no version is needed for that, the fallback serves it.
        _, why = gate({k: x for k, x in metrics.items() if k != "served"}, champion_version)
        return False, f"{why}; the ladder chose {served.get('label')}: the baseline fallback serves it"
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

    blocks = {"naive": metrics.get("naive"), "seasonal naive": metrics.get("seasonal_naive")}
    lost = [r for r in rivals if not model < r[1]]  # NaN loses too
    ties = []
    for r in list(lost):
        block = blocks.get(r[0])
        if block is None:  # the champion: a tie keeps it
            continue
        tie, why = _within_noise(served or metrics["model"], block)
        if tie:
            lost.remove(r)
            ties.append(f"ties {r[0]} {r[1]:.3f} within the folds' noise ({why})")
    won = [r for r in rivals if not model >= r[1]]
    if not lost:
        parts = ([f"< {fmt(won)}"] if won else []) + ties
        return True, f"{who} MASE {model:.3f} " + "; ".join(parts)
    return False, f"{who} MASE {model:.3f} does not beat {fmt(lost)}" + (f" (beats {fmt(won)})" if won else "")
