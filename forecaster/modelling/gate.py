"""The promotion gate: a new version serves only if it beats every baseline on the holdout.

Plain Python over the stored metrics (no numpy, no torch): the registry imports it.
"""

from __future__ import annotations

from typing import Any


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
