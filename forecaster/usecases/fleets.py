"""Fleets: prepared series of one model shape fitted together where that is faster.

    fleets_pay(specs) -> bool                    # could any of these series train faster as a fleet here
    fit_group(preps) -> (one (model, result, error) per series, fleet size)
    FleetGatherer(wait_s, max_size).fit(prep)   # concurrent tasks meet here to fit as one fleet

``fit_group`` is what ``retrain.retrain_many`` does with each group of series it
read; ``FleetGatherer`` is how tasks running at once on threads (a worker with
``--concurrency``) form such groups. Scoring, the gate and the stored version
stay each series' own (forecaster/usecases/retrain.py).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from forecaster.config.settings import SeriesSpec
from forecaster.errors import TrainingError
from forecaster.logs import log_event

if TYPE_CHECKING:
    from forecaster.modelling.network import RecurrentForecaster
    from forecaster.modelling.preparation import Prepared
    from forecaster.modelling.training import TrainResult

# One series' fit: (model, result, None), or (None, None, why it failed).
Fitted = tuple["RecurrentForecaster | None", "TrainResult | None", Exception | None]


def fleets_pay(specs: Iterable[SeriesSpec]) -> bool:
    """Whether any series could train as a fleet where it is faster (``fleet.fleet_pays``: a GPU, amp on a bf16 CPU)."""
    from forecaster.modelling.fleet.sizing import fleet_pays  # torch lives behind this import

    return any(fleet_pays(device, amp=amp, cell=cell)
               for device, amp, cell in {(s.model.device, s.model.amp, s.model.cell) for s in specs})


class FleetGatherer:
    """Where concurrent train tasks (one series each) meet to train as one fleet.

    A worker runs up to ``concurrency`` tasks at once on threads, each holding its
    own series' queue lock, so nothing about the queue changes. A task whose model
    shape could train as a fleet on this machine (``fleet.fleet_pays``: a GPU, or
    amp on a native-bf16 CPU) opens a batch for its shape and waits up to
    ``wait_s`` for others to join (at most ``max_size``); the tasks of that shape
    that arrive meanwhile join it. The opener then trains the batch — a fleet
    where it pays at that size, else member by member — and every task goes on
    to score, gate and store its own series. A shape that cannot pay never waits.
    """

    def __init__(self, wait_s: float = 1.0, max_size: int = 256) -> None:
        self.wait_s, self.max_size = wait_s, max_size
        self._lock = threading.Lock()
        self._open: dict[Hashable, _Batch] = {}

    def fit(self, prep: Prepared) -> tuple[RecurrentForecaster | None, TrainResult | None, Exception | None, int]:
        """(model, result, error, fleet size) for one prepared series; blocks until its batch is trained."""
        from forecaster.modelling.fleet.sizing import fleet_pays

        spec = prep.spec
        if self.wait_s <= 0 or not fleet_pays(spec.device, amp=spec.amp, cell=spec.cell):
            return (*fit_alone(prep), 1)
        with self._lock:
            batch = self._open.get(prep.fleet_key)
            opener = batch is None
            if batch is None:
                batch = self._open[prep.fleet_key] = _Batch()
            i = len(batch.members)
            batch.members.append(prep)
            if len(batch.members) >= self.max_size:
                self._open.pop(prep.fleet_key, None)
                batch.full.set()
        if not opener:
            batch.done.wait()
            return (*batch.results[i], batch.size)
        batch.full.wait(self.wait_s)
        with self._lock:  # closed: later tasks of this shape open the next batch
            if self._open.get(prep.fleet_key) is batch:
                del self._open[prep.fleet_key]
        try:
            batch.results, batch.size = fit_group(batch.members)
        except Exception as exc:  # noqa: BLE001 - the whole batch failed (device, memory): each says so
            log_event("train.fleet_failed", size=len(batch.members), error=repr(exc), exc_info=True)
            failed = TrainingError(f"fleet training failed: {exc}")
            batch.results = [(None, None, failed)] * len(batch.members)
        finally:
            if not batch.results:
                batch.results = [(None, None, TrainingError("fleet training was interrupted"))] * len(batch.members)
            batch.done.set()
        return (*batch.results[0], batch.size)


@dataclass
class _Batch:
    members: list[Prepared] = field(default_factory=list)
    results: list[Fitted] = field(default_factory=list)
    full: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    size: int = 1  # the fleet it trained as (1: member by member)


def fit_group(preps: list[Prepared], job_run_id: int | None = None) -> tuple[list[Fitted], int]:
    """Prepared series of one fleet key, as a fleet where it pays at this size, else one by one:
    each one's (model, result, error), and the fleet size they trained as (1: one by one)."""
    from forecaster.modelling import fitting
    from forecaster.modelling.fleet.sizing import fleet_pays

    spec = preps[0].spec
    if len(preps) > 1 and fleet_pays(spec.device, amp=spec.amp, cell=spec.cell, size=len(preps)):
        log_event("train.fleet", run_id=job_run_id, size=len(preps), cell=spec.cell, window=preps[0].window,
                  hidden_size=spec.hidden_size)
        return fitting.fit_many(preps), len(preps)
    return [fit_alone(p) for p in preps], 1


def fit_alone(prep: Prepared) -> Fitted:
    """One prepared series through the per-series loop, as ``fit_many`` answers: (model, result, error)."""
    from forecaster.modelling import fitting

    try:
        model, result = fitting.fit_one(prep)
    except Exception as exc:  # noqa: BLE001 - this series' own failure, recorded for it alone
        return None, None, exc
    return model, result, None
