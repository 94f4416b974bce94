"""A version's holdout figures as the CLI tables show them: what it serves first, the recurrent model beside it.

The ``train`` summary and ``models list`` read the stored metrics through these, so both
tables say the same thing in the same words.
"""

from __future__ import annotations

from typing import Any

REJECTED = ("rejected",)  # statuses whose interval never reached a user (train report and registry agree)
MODEL_LABEL = "recurrent model"  # what a version without a ladder serves
RIVALS = ("model", "naive", "seasonal_naive", "champion")  # the blocks shown beside what serves, in column order


def served_block(metrics: dict[str, Any]) -> dict[str, Any]:
    """The holdout block of what the version serves (the model's for versions older than the ladder)."""
    return metrics.get("served") or {"label": MODEL_LABEL, **(metrics.get("model") or {})}


def served_label(metrics: dict[str, Any]) -> str:
    """``recurrent model``, ``seasonal AutoETS``, ``mean of recurrent model + AutoARIMA``; '-' without metrics."""
    return str(served_block(metrics).get("label") or "-") if metrics else "-"


def served_mase(metrics: dict[str, Any]) -> float | None:
    """The holdout MASE of what the version serves."""
    value = served_block(metrics).get("mase")
    return None if value is None else float(value)


def served_step1(metrics: dict[str, Any]) -> float | None:
    """The holdout MASE of what the version serves at step 1 of its paths (its MASE for one-step versions)."""
    steps = served_block(metrics).get("mase_steps")
    return float(steps[0]) if steps else served_mase(metrics)


def horizon(metrics: dict[str, Any]) -> int:
    """Steps of the paths the version forecasts (1 for versions from before paths)."""
    return int(metrics.get("horizon") or 1)


def holdout_mase(metrics: dict[str, Any], name: str) -> float | None:
    """The holdout MASE of block ``name`` (``model``, ``naive``, ``seasonal_naive``, ``champion``)."""
    value = (metrics.get(name) or {}).get("mase")
    return None if value is None else float(value)


def served_coverage(metrics: dict[str, Any], status: str) -> float | None:
    """The holdout coverage of the interval the version serves, or None where no user gets it.

    The interval that serves is the served candidate's ACI one (``served_interval``; the
    model's conformal ``interval`` for versions older than the ladder); a rejected version's
    interval never serves, so its coverage would describe nothing a user sees.
    """
    if status in REJECTED:
        return None
    value = (metrics.get("served_interval") or metrics.get("interval") or {}).get("coverage")
    return None if value is None else float(value)


def percent(value: float | None) -> str:
    """``91%``, or '-' when there is none."""
    return "-" if value is None else f"{value:.0%}"


COVERAGE_NOTE = ("coverage: share of holdout actuals inside the interval of what serves; "
                 "'-' for a rejected version, whose interval serves no one")
