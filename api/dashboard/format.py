"""How numbers and times read on the dashboard (the Jinja filters; tests use them to know what to expect)."""

from __future__ import annotations

import datetime as dt
import math

from forecaster.usecases.figures import candidate_label

DASH = "—"


def num(v: float | None) -> str:
    """About four significant digits, thousands separated: ``52.35``, ``1,235``, ``0.01235``."""
    if v is None or not math.isfinite(v):
        return DASH
    if v == 0:
        return "0"
    decimals = min(6, max(0, 3 - math.floor(math.log10(abs(v)))))
    return f"{v:,.{decimals}f}"


def mase(v: float | None) -> str:
    """MASE with three decimals (``0.842``); a dash when there is none."""
    return DASH if v is None or not math.isfinite(v) else f"{v:.3f}"


def pct(v: float | None) -> str:
    """A share as a whole percentage (``91%``)."""
    return DASH if v is None or not math.isfinite(v) else f"{100 * v:.0f}%"


def when(t: dt.datetime | None) -> str:
    """``2024-03-01 09:00`` (UTC; the pages say so once)."""
    return DASH if t is None else f"{t.astimezone(dt.UTC):%Y-%m-%d %H:%M}"


def ago(t: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """``just now``, ``12 min ago``, ``3 h ago``, ``5 d ago``."""
    if t is None:
        return DASH
    now = now or dt.datetime.now(dt.UTC)
    s = (now - t).total_seconds()
    if s < 60:
        return "just now"
    if s < 3600:
        return f"{int(s // 60)} min ago"
    if s < 86400 * 2:
        return f"{int(s // 3600)} h ago"
    return f"{int(s // 86400)} d ago"


def method_name(method: str | None, version: int | None = None) -> str:
    """``v3`` for a version serving its model, ``v3 AutoETS`` for one serving another candidate,
    ``naive`` / ``seasonal naive`` for a baseline."""
    if version is not None:
        return f"v{version}" if method in (None, "model") else f"v{version} {candidate_label(method or '')}"
    return (method or "").replace("_", " ") or DASH


FILTERS = {"num": num, "mase": mase, "pct": pct, "when": when, "ago": ago}
