"""Retraining service: stored observations → new model version → gate → stored forecast.

The maths is ``fitting.train_series`` (a pure function of data, config and
seed); this module reads the data, writes the version, moves the alias and
refreshes the forecast, all in one transaction so that a failed training
leaves the registry exactly as it was.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from forecaster import __version__
from forecaster.store import registry
from forecaster.config.settings import SeriesSpec, Settings
from forecaster.store.tables import Series, write_session
from forecaster.errors import ForecasterError, InvalidInput, NotEnoughData, TrainingError
from forecaster.usecases.forecasting import load_values, refresh_forecast
from forecaster.usecases.ingest import find_series, sync_series
from forecaster.logs import log_event

Progress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class TrainReport:
    """What one series' retrain did: promoted, rejected, skipped (too little data) or failed."""

    series_key: str
    status: str
    version: int | None = None
    model_version_id: int | None = None
    reason: str = ""
    metrics: dict[str, Any] | None = None
    device: str | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("promoted", "rejected", "skipped")


def _champion_predictor(session: Session, series: Series) -> tuple[Any, int | None]:
    mv = registry.champion_of(session, series.id)
    if mv is None:
        return None, None
    from forecaster.modelling.predictor import Predictor

    return Predictor.from_artifact(mv.hyperparameters, mv.scaler, mv.weights), mv.version


@dataclass
class _Loaded:
    """One series read for training: its recent segment, the champion, and what was dropped."""

    spec: SeriesSpec
    ts: Any
    values: Any
    dropped: int
    champion: Any
    champion_version: int | None
    started: float


def _load(sm: sessionmaker[Session], spec: SeriesSpec, job_run_id: int | None) -> _Loaded | TrainReport:
    """The series' data and champion, or a ``skipped`` report when it has no observations."""
    from forecaster.modelling.preparation import recent_segment

    started = time.perf_counter()
    with sm() as session:
        series = find_series(session, spec.key)
        if series is None:
            return TrainReport(spec.key, "skipped", reason=f"{spec.key}: no observations yet: ingest it first")
        ts, values = load_values(session, series.id)
        champion, champion_version = _champion_predictor(session, series)
    try:
        ts, values, dropped = recent_segment(ts, values)
    except (pd.errors.OutOfBoundsDatetime, OverflowError) as exc:  # a row stored before validation existed
        reason = (f"{spec.key}: a stored timestamp is out of range for training ({type(exc).__name__}: {exc}); "
                  "delete it with `forecaster observations delete` or DELETE /v1/series/{key}/observations")
        log_event("train.failed", level=logging.ERROR, series=spec.key, run_id=job_run_id, error=reason)
        return TrainReport(spec.key, "failed", reason=reason)
    if dropped:
        log_event("train.segment", series=spec.key, run_id=job_run_id, dropped=dropped,
                  since=ts[0].isoformat() if len(ts) else None)
    return _Loaded(spec, ts, values, dropped, champion, champion_version, started)


def _not_trained(d: _Loaded, exc: Exception, job_run_id: int | None) -> TrainReport:
    """The report of a series whose data or training failed (``skipped`` when there is too little)."""
    key = d.spec.key
    if isinstance(exc, NotEnoughData):
        note = f" (after the last gap in the data, since {d.ts[0]:%Y-%m-%d %H:%M}; {d.dropped} older points unused)" \
            if d.dropped else ""
        log_event("train.skipped", series=key, run_id=job_run_id, reason=str(exc) + note)
        return TrainReport(key, "skipped", reason=f"{key}: {exc}{note}")
    log_event("train.failed", level=logging.ERROR, series=key, run_id=job_run_id, error=str(exc))
    return TrainReport(key, "failed", reason=f"{key}: {exc}")


def _store(sm: sessionmaker[Session], d: _Loaded, outcome: Any, job_run_id: int | None,
           extra_lineage: dict[str, Any] | None = None) -> TrainReport:
    """Gate the outcome and write its version, the alias move and the forecast in one transaction."""
    from forecaster.modelling.gate import gate

    spec = d.spec
    promote, reason = gate(outcome.metrics)
    if d.champion_version is not None:
        reason = reason.replace("champion", f"champion v{d.champion_version}", 1)
    lineage = {**outcome.lineage, "series_key": spec.key, "code_version": __version__, "job_run_id": job_run_id,
               "row_count_total": int(d.values.size) + d.dropped, "dropped_before_gap": d.dropped,
               **(extra_lineage or {})}

    for attempt in range(3):  # a concurrent trainer may take our version number: retry afresh
        try:
            with write_session(sm) as session:
                series = sync_series(session, spec)
                mv = registry.add_version(
                    session, series, hyperparameters=outcome.hyperparameters, scaler=outcome.scaler,
                    weights=outcome.weights, metrics=outcome.metrics, lineage=lineage,
                    status="candidate" if promote else "rejected", status_reason=reason,
                )
                if promote:
                    registry.make_champion(session, series, mv, reason)
                refresh_forecast(session, series, in_hand=(mv.id, outcome.predictor))  # no reload of the bytes
                version, mv_id = mv.version, mv.id
            break
        except IntegrityError:
            if attempt == 2:
                raise
    duration = time.perf_counter() - d.started
    status = "promoted" if promote else "rejected"
    model_m = outcome.metrics["model"]
    log_event("train.done", series=spec.key, run_id=job_run_id, version=version, status=status,
              mase=model_m.get("mase"), naive_mase=outcome.metrics["naive"].get("mase"),
              device=outcome.lineage.get("device"), duration_s=round(duration, 2))
    return TrainReport(spec.key, status, version, mv_id, reason, outcome.metrics,
                       outcome.lineage.get("device"), duration)


def retrain_series(
    sm: sessionmaker[Session],
    settings: Settings,
    spec: SeriesSpec,
    *,
    progress: Progress | None = None,
    job_run_id: int | None = None,
    gather: FleetGatherer | None = None,
) -> TrainReport:
    """Train a new version of one series, gate it, and store it with the forecast.

    With ``gather`` (a worker running several train tasks at once), the fit meets
    the other tasks' series of the same model shape and trains with them as one
    fleet where fleets pay; scoring, the gate and the version stay this series' own.

    Never raises for a problem with this series' data or training: the report
    says ``skipped`` or ``failed`` with the reason, and nothing is written.
    """
    from forecaster.modelling import fitting as modelling  # torch lives behind this import
    from forecaster.modelling.preparation import prepare

    d = _load(sm, spec, job_run_id)
    if isinstance(d, TrainReport):
        return d
    if gather is None:
        try:
            outcome = modelling.train_series(d.ts, d.values, frequency=spec.frequency, spec=spec.model,
                                            champion=d.champion, progress=progress)
        except (TrainingError, InvalidInput) as exc:
            return _not_trained(d, exc, job_run_id)
        return _store(sm, d, outcome, job_run_id)
    try:
        prep = prepare(d.ts, d.values, frequency=spec.frequency, spec=spec.model)
    except InvalidInput as exc:
        return _not_trained(d, exc, job_run_id)
    model, result, error, size = gather.fit(prep)
    if error is not None:
        return _not_trained(d, error, job_run_id)
    outcome = modelling.score(prep, model, result, d.champion)
    return _store(sm, d, outcome, job_run_id, {"fleet_size": size} if size > 1 else {})


class FleetGatherer:
    """Where a worker's concurrent train tasks (one series each) meet to train as one fleet.

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
        self._open: dict[Any, _Batch] = {}

    def fit(self, prep: Any) -> tuple[Any, Any, Exception | None, int]:
        """(model, result, error, fleet size) for one prepared series; blocks until its batch is trained."""
        from forecaster.modelling.fleet.sizing import fleet_pays

        spec = prep.spec
        if self.wait_s <= 0 or not fleet_pays(spec.device, amp=spec.amp, cell=spec.cell):
            return (*_fit_alone(prep), 1)
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
            batch.results, batch.size = _fit_group(batch.members)
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
    members: list[Any] = field(default_factory=list)
    results: list[tuple[Any, Any, Exception | None]] = field(default_factory=list)
    full: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    size: int = 1  # the fleet it trained as (1: member by member)


def _fit_group(preps: list[Any],
               job_run_id: int | None = None) -> tuple[list[tuple[Any, Any, Exception | None]], int]:
    """Prepared series of one fleet key, as a fleet where it pays at this size, else one by one:
    each one's (model, result, error), and the fleet size they trained as (1: one by one)."""
    from forecaster.modelling import fitting as modelling
    from forecaster.modelling.fleet.sizing import fleet_pays

    spec = preps[0].spec
    if len(preps) > 1 and fleet_pays(spec.device, amp=spec.amp, cell=spec.cell, size=len(preps)):
        log_event("train.fleet", run_id=job_run_id, size=len(preps), cell=spec.cell, window=preps[0].window,
                  hidden_size=spec.hidden_size)
        return modelling.fit_many(preps), len(preps)
    return [_fit_alone(p) for p in preps], 1


def _guarded(spec: SeriesSpec, job_run_id: int | None, fn: Callable[[], TrainReport]) -> TrainReport:
    """``fn()``, with any exception turned into this series' ``failed`` report (one never stops the others)."""
    try:
        return fn()
    except ForecasterError as exc:
        log_event("train.failed", level=logging.ERROR, series=spec.key, run_id=job_run_id, error=str(exc))
        return TrainReport(spec.key, "failed", reason=f"{spec.key}: {exc}")
    except Exception as exc:  # noqa: BLE001 - one series must never stop the others
        log_event("train.failed", level=logging.ERROR, series=spec.key, run_id=job_run_id, error=repr(exc),
                  exc_info=True)
        return TrainReport(spec.key, "failed", reason=f"{spec.key}: {type(exc).__name__}: {exc}")


def retrain_many(
    sm: sessionmaker[Session],
    settings: Settings,
    specs: Iterable[SeriesSpec],
    *,
    job_run_id: int | None = None,
    on_start: Callable[[SeriesSpec], Progress | None] | None = None,
    on_done: Callable[[TrainReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    one_by_one: bool = False,
) -> list[TrainReport]:
    """Retrain many series; one failing never stops the others. Reports come back in ``specs`` order.

    By default the series are read and prepared first, grouped by model shape
    (``preparation.Prepared.fleet_key``: cell, window, input features, hidden size,
    layers, loss, batch size, device) and each group is trained as one fleet
    (``forecaster.modelling.fleet``); each series is then scored, gated and stored in its
    own transaction, exactly as alone. Fleets are used where they are faster
    (``fleet.fleet_pays``: on a GPU; on the CPU for LSTM/RNN groups of 16 or more
    with ``amp`` where bfloat16 is native; a float32 CPU fleet is no faster, so
    other groups train each member with the per-series loop). ``one_by_one=True`` always trains each series in turn with the per-series loop. ``should_stop`` is checked before each series
    (one by one) or each fleet. ``on_start(spec)`` is always followed by that
    series' ``on_done(report)`` before the next ``on_start``; in a fleet both come
    when the fleet is done, and the per-epoch progress callback is not called.
    """
    specs = list(specs)
    if one_by_one or len(specs) <= 1 or not _fleets_pay(specs):
        return _one_by_one(sm, settings, specs, job_run_id, on_start, on_done, should_stop)
    return _by_fleet(sm, specs, job_run_id, on_start, on_done, should_stop)


def _fleets_pay(specs: list[SeriesSpec]) -> bool:
    """Whether any series could train as a fleet where it is faster (``fleet.fleet_pays``: a GPU, amp on a bf16 CPU)."""
    from forecaster.modelling.fleet.sizing import fleet_pays  # torch lives behind this import

    return any(fleet_pays(device, amp=amp, cell=cell)
               for device, amp, cell in {(s.model.device, s.model.amp, s.model.cell) for s in specs})


def _one_by_one(sm: sessionmaker[Session], settings: Settings, specs: list[SeriesSpec], job_run_id: int | None,
                on_start: Callable[[SeriesSpec], Progress | None] | None,
                on_done: Callable[[TrainReport], None] | None,
                should_stop: Callable[[], bool] | None) -> list[TrainReport]:
    reports = []
    for spec in specs:
        if should_stop is not None and should_stop():
            break
        progress = on_start(spec) if on_start else None
        report = _guarded(spec, job_run_id,
                          lambda spec=spec: retrain_series(sm, settings, spec, progress=progress,  # type: ignore[misc]
                                                           job_run_id=job_run_id))
        reports.append(report)
        if on_done:
            on_done(report)
    return reports


def _by_fleet(sm: sessionmaker[Session], specs: list[SeriesSpec], job_run_id: int | None,
              on_start: Callable[[SeriesSpec], Progress | None] | None,
              on_done: Callable[[TrainReport], None] | None,
              should_stop: Callable[[], bool] | None) -> list[TrainReport]:
    from forecaster.modelling import fitting as modelling  # torch lives behind this import
    from forecaster.modelling.preparation import prepare

    reports: dict[int, TrainReport] = {}
    loaded: dict[int, _Loaded] = {}
    groups: dict[tuple[Any, ...], list[tuple[int, Any]]] = {}

    def done(i: int, report: TrainReport) -> None:
        if on_start:  # in a fleet a series starts and ends with its fleet: pair the calls, one at a time
            on_start(specs[i])
        reports[i] = report
        if on_done:
            on_done(report)

    for i, spec in enumerate(specs):  # read and prepare every series; the bad ones end here, alone
        def prep_one(i: int = i, spec: SeriesSpec = spec) -> TrainReport | None:
            d = _load(sm, spec, job_run_id)
            if isinstance(d, TrainReport):
                return d
            loaded[i] = d
            try:
                p = prepare(d.ts, d.values, frequency=spec.frequency, spec=spec.model)
            except InvalidInput as exc:
                return _not_trained(d, exc, job_run_id)
            groups.setdefault(p.fleet_key, []).append((i, p))
            return None

        report = _guarded(spec, job_run_id, prep_one)  # type: ignore[arg-type]
        if report is not None:
            done(i, report)
    stopped = False
    for members in groups.values():
        if should_stop is not None and should_stop():
            stopped = True
            break
        try:
            fitted, size = _fit_group([p for _, p in members], job_run_id)
        except Exception as exc:  # noqa: BLE001 - the whole fleet failed (device, memory): each says so
            log_event("train.fleet_failed", run_id=job_run_id, size=len(members), error=repr(exc), exc_info=True)
            for i, _ in members:
                done(i, TrainReport(specs[i].key, "failed", reason=f"{specs[i].key}: fleet training failed: {exc}"))
            continue
        for (i, p), (model, result, error) in zip(members, fitted):
            d = loaded[i]

            def finish(d: _Loaded = d, p: Any = p, model: Any = model, result: Any = result,
                       error: Exception | None = error) -> TrainReport:
                if error is not None:
                    return _not_trained(d, error, job_run_id)
                outcome = modelling.score(p, model, result, d.champion)
                return _store(sm, d, outcome, job_run_id, {"fleet_size": size} if size > 1 else {})

            done(i, _guarded(d.spec, job_run_id, finish))
    if stopped:
        return [reports[i] for i in sorted(reports)]
    return [reports[i] for i in range(len(specs))]


def _fit_alone(p: Any) -> tuple[Any, Any, Exception | None]:
    """One prepared series through the per-series loop, as ``fit_many`` answers: (model, result, error)."""
    from forecaster.modelling import fitting as modelling

    try:
        model, result = modelling.fit_one(p)
    except Exception as exc:  # noqa: BLE001 - this series' own failure, recorded for it alone
        return None, None, exc
    return model, result, None


def needs_training(sm: sessionmaker[Session], settings: Settings) -> list[str]:
    """Keys of configured series with no model version yet, or with observations newer
    than their latest version's training data (so a second `forecaster up` on the
    same directory does no duplicate work)."""
    from sqlalchemy import func, select

    from forecaster.store.tables import ModelVersion, Observation

    keys = []
    with sm() as session:
        for spec in settings.series:
            series = find_series(session, spec.key)
            if series is None:
                continue
            latest = session.scalar(select(ModelVersion).where(ModelVersion.series_id == series.id)
                                    .order_by(ModelVersion.version.desc()).limit(1))
            count = session.scalar(select(func.count()).select_from(Observation)
                                   .where(Observation.series_id == series.id))
            if not count:
                continue
            if latest is None or (latest.lineage or {}).get("row_count_total") != count:
                keys.append(spec.key)
    return keys
