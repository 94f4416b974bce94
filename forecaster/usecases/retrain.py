"""Retraining service: stored observations → new model version → gate → stored forecast.

The maths is ``fitting.train_series`` (a pure function of data, config and
seed); this module reads the data, writes the version, moves the alias and
refreshes the forecast, all in one transaction so that a failed training
leaves the registry exactly as it was. How series of one model shape are
fitted together is forecaster/usecases/fleets.py.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from forecaster import __version__
from forecaster.config.settings import SeriesSpec, Settings
from forecaster.errors import ForecasterError, InvalidInput, NotEnoughData, TrainingError
from forecaster.logs import log_event
from forecaster.store import registry
from forecaster.store.observations import load_values
from forecaster.store.series import find_series, sync_series
from forecaster.store.tables import ModelVersion, write_session
from forecaster.usecases.fleets import FleetGatherer, fit_group, fleets_pay
from forecaster.usecases.forecasting import refresh_forecast

if TYPE_CHECKING:
    from forecaster.modelling.fitting import TrainOutcome
    from forecaster.modelling.network import RecurrentForecaster
    from forecaster.modelling.predictor import Predictor
    from forecaster.modelling.preparation import Prepared
    from forecaster.modelling.training import TrainResult

EpochProgress = Callable[[int, int, float], None]  # (epoch, epochs, validation loss) after each epoch



def load_training() -> None:
    """Import what training needs (torch, the fitting code) now.

    A process's first retrain then costs what every later one does.
    """
    import importlib

    importlib.import_module("forecaster.modelling.fitting")

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
    # Seconds by phase of a training alone: load, windows, epochs, scoring (the candidates' ladder included), store.
    phases: dict[str, float] = field(default_factory=dict)
    start: dict[str, Any] | None = None  # the version's lineage["start"]: warm (from which version) or cold (why)

    @property
    def ok(self) -> bool:
        return self.status in ("promoted", "rejected", "skipped")


def _predictor_of(mv: ModelVersion | None) -> tuple[Predictor | None, int | None]:
    if mv is None:
        return None, None
    from forecaster.modelling.predictor import Predictor

    return Predictor.from_artifact(mv.hyperparameters, mv.scaler, mv.weights), mv.version


@dataclass
class _Loaded:
    """One series read for training: its recent segment, the champion, and what was dropped."""

    spec: SeriesSpec
    ts: pd.DatetimeIndex
    values: np.ndarray
    dropped: int
    champion: Predictor | None
    champion_version: int | None
    started: float
    latest_start: dict[str, Any] = field(default_factory=dict)  # lineage["start"] of the latest version
    # What a warm start begins from: the champion, or the latest version when none serves (a series
    # whose versions all lost to a baseline: starting those from random weights each time cost 6x).
    origin: Predictor | None = None
    origin_version: int | None = None


def _load(sm: sessionmaker[Session], spec: SeriesSpec, job_run_id: int | None) -> _Loaded | TrainReport:
    """The series' data and champion, or a ``skipped`` report when it has no observations."""
    from forecaster.modelling.preparation import recent_segment

    started = time.perf_counter()
    with sm() as session:
        series = find_series(session, spec.key)
        if series is None:
            return TrainReport(spec.key, "skipped", reason=f"{spec.key}: no observations yet: ingest it first")
        ts, values = load_values(session, series.id)
        champion, champion_version = _predictor_of(registry.champion_of(session, series.id))
        latest = registry.latest_version(session, series.id)
        latest_start = dict((latest.lineage or {}).get("start") or {}) if latest is not None else {}
        if latest is not None and "cold_lost" not in latest_start and latest_start.get("kind", "cold") == "cold":
            latest_start["cold_lost"] = _fails_a_baseline(latest.metrics or {})  # stored before it was recorded
        origin, origin_version = champion, champion_version
        if champion is None and latest is not None:
            try:
                origin, origin_version = _predictor_of(latest)
            except Exception as exc:  # noqa: BLE001 - an unreadable old version only means a cold start
                log_event("train.no_warm_start", series=spec.key, run_id=job_run_id, version=latest.version,
                          error=f"{type(exc).__name__}: {exc}"[:300])
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
    return _Loaded(spec, ts, values, dropped, champion, champion_version, started, latest_start, origin,
                   origin_version)


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


def _store(sm: sessionmaker[Session], d: _Loaded, outcome: TrainOutcome, job_run_id: int | None,
           extra_lineage: dict[str, Any] | None = None, phases: dict[str, float] | None = None,
           after: str = "") -> TrainReport:
    """Gate the outcome and write its version, the alias move and the forecast in one transaction
    (``after`` is appended to the gate's reason)."""
    from forecaster.modelling.gate import gate

    writing = time.perf_counter()
    spec = d.spec
    promote, reason = gate(outcome.metrics)
    reason += after
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
    stored = time.perf_counter()
    duration = stored - d.started
    if phases is not None:
        phases["store"] = stored - writing
    status = "promoted" if promote else "rejected"
    model_m = outcome.metrics["model"]
    log_event("train.done", series=spec.key, run_id=job_run_id, version=version, status=status,
              mase=model_m.get("mase"), naive_mase=outcome.metrics["naive"].get("mase"),
              device=outcome.lineage.get("device"), duration_s=round(duration, 2))
    return TrainReport(spec.key, status, version, mv_id, reason, outcome.metrics,
                       outcome.lineage.get("device"), duration, phases or {}, lineage.get("start"))


def _start(d: _Loaded, cold: bool) -> str:
    """Why this retrain starts cold, or "" when it may start warm from the champion."""
    m = d.spec.model
    streak = int(d.latest_start.get("streak", 0))
    if cold:
        return "a cold retrain was asked for"
    if not m.warm_start:
        return "model.warm_start is off"
    if d.origin is None:
        return "no version to start from"
    if m.cold_every and streak >= m.cold_every:
        return f"the last {streak} versions started warm (cold_every {m.cold_every})"
    return ""


def _fit_and_score(d: _Loaded, prep: Prepared, progress: EpochProgress | None, gather: FleetGatherer | None,
                   phases: dict[str, float] | None) -> tuple[TrainOutcome, int]:
    """Fit ``prep`` (alone, or in ``gather``'s fleet) and score it: (outcome, fleet size).

    Raises:
        TrainingError: the fit failed (diverged, or its fleet returned no model).
    """
    from forecaster.modelling import fitting

    mark = time.perf_counter()
    if gather is None:
        net, fitted = fitting.fit_one(prep, progress)
        size = 1
    else:
        model, result, error, size = gather.fit(prep)
        if error is not None or model is None or result is None:
            raise error if isinstance(error, TrainingError) else TrainingError(str(error or "no model came back"))
        net, fitted = model, result
    epochs_done = time.perf_counter()
    outcome = fitting.score(prep, net, fitted, d.champion, start=d.origin)
    if phases is not None:
        phases["epochs"], phases["scoring"] = epochs_done - mark, time.perf_counter() - epochs_done
    return outcome, size


def _fails_a_baseline(metrics: dict[str, Any]) -> bool:
    """Whether a version loses to naive or seasonal naive (not only to the champion) at the gate."""
    from forecaster.modelling.gate import gate

    try:
        return not gate({k: x for k, x in metrics.items() if k not in ("champion", "champion_model")})[0]
    except (KeyError, TypeError, ValueError):  # metrics of a shape this gate cannot read: say no
        return False


def retrain_series(
    sm: sessionmaker[Session],
    spec: SeriesSpec,
    *,
    progress: EpochProgress | None = None,
    job_run_id: int | None = None,
    gather: FleetGatherer | None = None,
    cold: bool = False,
) -> TrainReport:
    """Train a new version of one series, gate it, and store it with the forecast.

    Warm by default (``model.warm_start``): when the champion's network has this series'
    shape, training starts from its weights with the short budget ``model.warm_epochs`` and the
    statistical candidates keep its forms and orders. Cold (random weights, every form
    searched) when ``cold`` is asked for, when there is no champion of this shape, after
    ``model.cold_every`` warm versions in a row, and at once after a warm version that loses
    to a baseline at the gate (both versions are stored; the report is the cold one's).
    The version's ``lineage["start"]`` says which it was and from which version.

    With ``gather`` (several train tasks running at once), the fit meets
    the other tasks' series of the same model shape and trains with them as one
    fleet where fleets pay; scoring, the gate and the version stay this series' own.

    Never raises for a problem with this series' data or training: the report
    says ``skipped`` or ``failed`` with the reason, and nothing is written.
    """
    from forecaster.modelling.fitting import warm_start
    from forecaster.modelling.preparation import prepare

    d = _load(sm, spec, job_run_id)
    if isinstance(d, TrainReport):
        return d
    phases: dict[str, float] = {"load": time.perf_counter() - d.started}
    mark = time.perf_counter()
    try:
        prep = prepare(d.ts, d.values, frequency=spec.frequency, spec=spec.model, horizon=spec.steps)
    except InvalidInput as exc:
        return _not_trained(d, exc, job_run_id)
    why_cold = _start(d, cold)
    if not why_cold:
        prep, why_cold = warm_start(prep, d.origin, d.origin_version)
    phases["windows"] = time.perf_counter() - mark
    try:
        outcome, size = _fit_and_score(d, prep, progress, gather, phases)
    except (TrainingError, InvalidInput) as exc:
        if prep.init is None or isinstance(exc, InvalidInput):
            return _not_trained(d, exc, job_run_id)
        return _conclude(sm, d, prep, None, 1, f"the warm start failed: {exc}", progress, job_run_id, phases)
    return _conclude(sm, d, prep, outcome, size, why_cold, progress, job_run_id, phases)


def _conclude(sm: sessionmaker[Session], d: _Loaded, prep: Prepared, outcome: TrainOutcome | None, size: int,
              why_cold: str, progress: EpochProgress | None, job_run_id: int | None,
              phases: dict[str, float]) -> TrainReport:
    """Store a fitted outcome (warm or cold); a warm one that lost to a baseline, or failed (None),
    is followed by a cold retrain, alone, whose report is returned. Not when the last cold version
    lost to a baseline too (``start.cold_lost``, carried by the warm versions after it): on a series
    nothing beats (a random walk), a cold retrain after every warm loss only doubled the time;
    ``cold_every`` still brings the next cold one."""
    streak = int(d.latest_start.get("streak", 0))
    cold_lost = bool(d.latest_start.get("cold_lost", False))  # the last cold version lost to a baseline
    extra: dict[str, Any] = {"fleet_size": size} if size > 1 else {}
    if outcome is not None and prep.init is not None:
        start = {**outcome.lineage["start"], "streak": streak + 1, "cold_lost": cold_lost}
        if not _fails_a_baseline(outcome.metrics):
            return _store(sm, d, outcome, job_run_id, {**extra, "start": start}, phases=phases)
        if cold_lost:  # nothing beat the baselines from scratch either: a cold start again would not help
            every, left = d.spec.model.cold_every, d.spec.model.cold_every - streak - 1
            due = "the next retrain" if left <= 0 else f"the retrain after {left} more warm one{'s' * (left > 1)}"
            return _store(sm, d, outcome, job_run_id, {**extra, "start": start}, phases=phases,
                          after="; the last cold retrain lost to a baseline too, so none follows"
                                + (f" ({due} is cold: cold_every {every})" if every else ""))
        warm = _store(sm, d, outcome, job_run_id, {**extra, "start": start}, phases=dict(phases),
                      after="; a cold retrain follows")
        why_cold = f"warm v{warm.version} lost to a baseline at the gate"
        log_event("train.cold_after_warm", series=d.spec.key, run_id=job_run_id, warm_version=warm.version)
        outcome = None
    if outcome is None:  # cold, alone
        prep = dataclasses.replace(prep, init=None, warm_from=None)
        try:
            outcome, size = _fit_and_score(d, prep, progress, None, phases)
        except TrainingError as exc:
            return _not_trained(d, exc, job_run_id)
        extra = {}
    start = {**outcome.lineage["start"], "streak": 0, "why": why_cold, "cold_lost": _fails_a_baseline(outcome.metrics)}
    return _store(sm, d, outcome, job_run_id, {**extra, "start": start}, phases=phases)


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
    specs: Iterable[SeriesSpec],
    *,
    job_run_id: int | None = None,
    on_start: Callable[[SeriesSpec], EpochProgress | None] | None = None,
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
    other groups train each member with the per-series loop). ``one_by_one=True``
    always trains each series in turn with the per-series loop. ``should_stop`` is
    checked before each series (one by one) or each fleet. ``on_start(spec)`` is always followed by that
    series' ``on_done(report)`` before the next ``on_start``; in a fleet both come
    when the fleet is done, and the per-epoch progress callback is not called.
    """
    specs = list(specs)
    if one_by_one or len(specs) <= 1 or not fleets_pay(specs):
        return _one_by_one(sm, specs, job_run_id, on_start, on_done, should_stop)
    return _by_fleet(sm, specs, job_run_id, on_start, on_done, should_stop)


def _one_by_one(sm: sessionmaker[Session], specs: list[SeriesSpec], job_run_id: int | None,
                on_start: Callable[[SeriesSpec], EpochProgress | None] | None,
                on_done: Callable[[TrainReport], None] | None,
                should_stop: Callable[[], bool] | None) -> list[TrainReport]:
    reports = []
    for spec in specs:
        if should_stop is not None and should_stop():
            break
        progress = on_start(spec) if on_start else None

        def train_one(spec: SeriesSpec = spec, progress: EpochProgress | None = progress) -> TrainReport:
            return retrain_series(sm, spec, progress=progress, job_run_id=job_run_id)

        report = _guarded(spec, job_run_id, train_one)
        reports.append(report)
        if on_done:
            on_done(report)
    return reports


def _by_fleet(sm: sessionmaker[Session], specs: list[SeriesSpec], job_run_id: int | None,
              on_start: Callable[[SeriesSpec], EpochProgress | None] | None,
              on_done: Callable[[TrainReport], None] | None,
              should_stop: Callable[[], bool] | None) -> list[TrainReport]:
    from forecaster.modelling import fitting  # torch lives behind this import
    from forecaster.modelling.fitting import warm_start
    from forecaster.modelling.preparation import prepare

    reports: dict[int, TrainReport] = {}
    loaded: dict[int, _Loaded] = {}
    why_cold: dict[int, str] = {}
    groups: dict[Hashable, list[tuple[int, Prepared]]] = {}

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
                p = prepare(d.ts, d.values, frequency=spec.frequency, spec=spec.model, horizon=spec.steps)
            except InvalidInput as exc:
                return _not_trained(d, exc, job_run_id)
            why = _start(d, cold=False)
            if not why:
                p, why = warm_start(p, d.origin, d.origin_version)
            why_cold[i] = why
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
            fitted, size = fit_group([p for _, p in members], job_run_id)
        except Exception as exc:  # noqa: BLE001 - the whole fleet failed (device, memory): each says so
            log_event("train.fleet_failed", run_id=job_run_id, size=len(members), error=repr(exc), exc_info=True)
            for i, _ in members:
                done(i, TrainReport(specs[i].key, "failed", reason=f"{specs[i].key}: fleet training failed: {exc}"))
            continue
        for (i, p), (model, result, error) in zip(members, fitted, strict=True):
            d = loaded[i]

            def finish(key: int = i, d: _Loaded = d, p: Prepared = p, model: RecurrentForecaster | None = model,
                       result: TrainResult | None = result, error: Exception | None = error,
                       size: int = size) -> TrainReport:
                if error is not None or model is None or result is None:
                    if p.init is not None:  # the warm start diverged: cold, alone
                        return _conclude(sm, d, p, None, 1, f"the warm start failed: {error}", None, job_run_id, {})
                    return _not_trained(d, error or TrainingError("the fleet returned no model"), job_run_id)
                outcome = fitting.score(p, model, result, d.champion, start=d.origin)
                return _conclude(sm, d, p, outcome, size, why_cold[key], None, job_run_id, {})

            done(i, _guarded(d.spec, job_run_id, finish))
    if stopped:
        return [reports[i] for i in sorted(reports)]
    return [reports[i] for i in range(len(specs))]


def needs_training(sm: sessionmaker[Session], settings: Settings) -> list[str]:
    """Keys of configured series with no model version yet, with observations newer
    than their latest version's training data, or whose configured horizon differs from
    their latest version's (so a second `forecaster up` on the same directory does no
    duplicate work, and a changed ``horizon`` is trained at once)."""
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
            if (latest is None or (latest.lineage or {}).get("row_count_total") != count
                    or int((latest.hyperparameters or {}).get("horizon", 1)) != spec.steps):
                keys.append(spec.key)
    return keys
