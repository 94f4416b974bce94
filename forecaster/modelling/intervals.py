"""Prediction intervals that stay calibrated live: adaptive conformal inference (ACI).

Gibbs & Candès (2021), "Adaptive Conformal Inference Under Distribution Shift".
A symmetric interval ``yhat ± q`` takes ``q`` as the conformal quantile, at level
``1 - alpha_t``, of the most recent absolute one-step residuals (the scores). After
each actual arrives, the working miss rate moves against the observed miss:

    alpha_{t+1} = alpha_t + gamma * (alpha - err_t),   err_t = 1 if the actual fell outside

so a run of misses (volatility went up) lowers ``alpha_t`` and widens the interval,
a run of hits narrows it again. Over any stretch the long-run miss rate converges to
``alpha`` whatever the data do (their Proposition 4.1). The scores are a rolling
window, so the widths follow the newest residuals too.

Pure numpy; the state is a small JSON-able dict stored with the model version
(``ACIState.to_dict``) and replayed over the live errors at each refresh.
"""

from __future__ import annotations

import bisect
import collections
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

GAMMA = 0.02  # step size of the alpha update: ~50 actuals to react to a shift
SCORES = 250  # rolling window of absolute residuals the quantile is taken over
_ALPHA_FLOOR = -0.25  # bound how far alpha_t can drift while every interval is already the widest


def conformal_quantile(scores: np.ndarray, coverage_level: float) -> float:
    """The ceil((n+1) * level)-th smallest score (the largest when the rank exceeds n).

    Raises:
        ValueError: with no scores.
    """
    r = np.sort(np.abs(np.asarray(scores, dtype=np.float64)))
    if len(r) == 0:
        raise ValueError("need at least one residual for an interval")
    if coverage_level <= 0:
        return 0.0
    rank = min(max(math.ceil((len(r) + 1) * coverage_level), 1), len(r))
    return float(r[rank - 1])


@dataclass(frozen=True)
class ACIState:
    """Where the interval of one candidate stands: target level, working alpha, recent scores."""

    level: float  # stated coverage, e.g. 0.9
    alpha_t: float  # working miss rate (starts at 1 - level)
    gamma: float = GAMMA
    window: int = SCORES
    scores: tuple[float, ...] = ()

    @classmethod
    def start(cls, residuals: np.ndarray, level: float, *, gamma: float = GAMMA, window: int = SCORES) -> ACIState:
        """A fresh state calibrated on residuals the model did not train on (validation).

        Raises:
            ValueError: with no residuals or a level outside (0, 1).
        """
        r = np.abs(np.asarray(residuals, dtype=np.float64))
        r = r[np.isfinite(r)]
        if len(r) == 0 or not 0 < level < 1:
            raise ValueError(f"need residuals and 0 < level < 1; got {len(r)} residuals, level {level}")
        return cls(level=level, alpha_t=1 - level, gamma=gamma, window=window,
                   scores=tuple(float(x) for x in r[-window:]))

    @property
    def halfwidth(self) -> float:
        """Half-width of the interval for the next step."""
        return conformal_quantile(np.asarray(self.scores), 1 - max(self.alpha_t, 0.0))

    def update(self, residual: float) -> ACIState:
        """The state after one actual: ``residual`` = actual - forecast."""
        if not math.isfinite(residual):
            return self
        miss = float(abs(residual) > self.halfwidth)
        alpha = min(max(self.alpha_t + self.gamma * ((1 - self.level) - miss), _ALPHA_FLOOR), 1.0)
        scores = (self.scores + (abs(float(residual)),))[-self.window :]
        return replace(self, alpha_t=alpha, scores=scores)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"level": self.level, "alpha_t": self.alpha_t, "gamma": self.gamma, "window": self.window,
                "scores": list(self.scores)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ACIState:
        """Inverse of ``to_dict``."""
        return cls(level=float(d["level"]), alpha_t=float(d["alpha_t"]), gamma=float(d.get("gamma", GAMMA)),
                   window=int(d.get("window", SCORES)), scores=tuple(float(x) for x in d["scores"]))


class _Walker:
    """An ``ACIState`` being walked: the same updates, with its scores kept sorted (bisect) as well
    as in arrival order, so each half-width is one lookup instead of a sort (``walk_paths`` reads
    thousands of them per retrain)."""

    def __init__(self, state: ACIState) -> None:
        self.state = state
        self.alpha = state.alpha_t
        self.fifo = collections.deque(abs(x) for x in state.scores)
        self.ordered = sorted(self.fifo)

    def halfwidth(self) -> float:
        level = 1 - max(self.alpha, 0.0)
        n = len(self.ordered)
        if n == 0:
            raise ValueError("need at least one residual for an interval")
        if level <= 0:
            return 0.0
        rank = min(max(math.ceil((n + 1) * level), 1), n)
        return self.ordered[rank - 1]

    def update(self, residual: float) -> None:
        if not math.isfinite(residual):
            return
        s = self.state
        miss = float(abs(residual) > self.halfwidth())
        self.alpha = min(max(self.alpha + s.gamma * ((1 - s.level) - miss), _ALPHA_FLOOR), 1.0)
        score = abs(float(residual))
        self.fifo.append(score)
        bisect.insort(self.ordered, score)
        while len(self.fifo) > s.window:
            del self.ordered[bisect.bisect_left(self.ordered, self.fifo.popleft())]

    def result(self) -> ACIState:
        return replace(self.state, alpha_t=self.alpha, scores=tuple(self.fifo))


def walk(state: ACIState, residuals: np.ndarray) -> tuple[np.ndarray, ACIState]:
    """Run ACI over residuals in time order, as if each actual arrived in turn.

    Returns:
        (halfwidths (n,), the final state): ``halfwidths[i]`` is the interval that was
        stated before residual i was known.
    """
    walker = _Walker(state)
    widths = np.empty(len(residuals))
    for i, r in enumerate(np.asarray(residuals, dtype=np.float64)):
        widths[i] = walker.halfwidth()
        walker.update(float(r))
    return widths, walker.result()


def coverage_of(residuals: np.ndarray, halfwidths: np.ndarray) -> float:
    """Share of residuals inside their interval."""
    r = np.abs(np.asarray(residuals, dtype=np.float64))
    return float(np.mean(r <= np.asarray(halfwidths))) if len(r) else float("nan")


def start_steps(residuals: np.ndarray, level: float, *, gamma: float = GAMMA, window: int = SCORES) -> list[ACIState]:
    """One fresh state per step from validation path residuals (n, h): step k's split-conformal
    scores are the step-k errors."""
    r = np.asarray(residuals, dtype=np.float64)
    return [ACIState.start(r[:, k], level, gamma=gamma, window=window) for k in range(r.shape[1])]


def walk_paths(states: list[ACIState], at: np.ndarray,
               residuals: np.ndarray) -> tuple[np.ndarray, list[ACIState]]:
    """ACI per step over paths made at origins ``at`` (oldest first), with delayed feedback.

    The step-k forecast made at origin o targets position o + k - 1; its error updates step k's
    state only once that actual is known, i.e. before the first origin past it. With one step and
    consecutive origins this is ``walk``, update for update.

    Returns:
        (halfwidths (n, h): what each path stated; the states after every actual).
    """
    r = np.asarray(residuals, dtype=np.float64)
    o = np.asarray(at, dtype=np.int64)
    n, h = r.shape
    widths = np.empty((n, h))
    pending: list[collections.deque[tuple[int, float]]] = [collections.deque() for _ in range(h)]
    walkers = [_Walker(s) for s in states]
    for i in range(n):
        origin = int(o[i])
        for k in range(h):
            queue, walker = pending[k], walkers[k]
            while queue and queue[0][0] < origin:
                walker.update(queue.popleft()[1])
            widths[i, k] = walker.halfwidth()
            queue.append((origin + k, float(r[i, k])))
    for k in range(h):
        for _, res in pending[k]:
            walkers[k].update(res)
    return widths, [w.result() for w in walkers]
