"""Stored next-step forecasts: computed once after a train or an ingest, read by GETs.

Reading a forecast (``get_forecast``) touches only the database; torch is
imported only when a champion model has to be run (``refresh_forecast``).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, load_only, sessionmaker

from forecaster.calendar.frequency import season_length
from forecaster.errors import InvalidInput, SeriesNotFound
from forecaster.logs import log_event
from forecaster.modelling.baseline import BASELINE_TAIL, better_baseline, seasonal_naive_next
from forecaster.store import forecasts, registry
from forecaster.store.change_tokens import ChangeProbe, probe_for
from forecaster.store.observations import load_values
from forecaster.store.series import lock_series, series_by_ids, series_by_key
from forecaster.store.tables import Forecast, ModelVersion, Series, write_session

DEFAULT_LEVEL = 0.9


@dataclass(frozen=True)
class PathPoint:
    """One step of a stored path."""

    step: int  # 1..h: steps after the origin on the series' calendar
    target_ts: dt.datetime
    value: float
    lower: float | None
    upper: float | None


@dataclass(frozen=True)
class ForecastView:
    """One stored forecast path, as the API and CLI show it; the flat fields describe step 1."""

    series_key: str
    target_ts: dt.datetime
    made_at: dt.datetime
    value: float
    lower: float | None
    upper: float | None
    level: float | None
    method: str  # model / naive / seasonal_naive / ets / ets_seasonal / theta / arima / sarima / combination
    model_version: int | None
    model_version_id: int | None
    mase: float | None  # holdout MASE of what made it
    actual: float | None = None
    error: float | None = None
    served_by: str = ""  # what made it, for people: "AutoETS", "mean of recurrent model + AutoARIMA"
    model_mase: float | None = None  # the recurrent model's own holdout MASE, beside it
    path: tuple[PathPoint, ...] = ()  # steps 1..h, step 1 first (one point for forecasts from before paths)


def next_target_ts(last_ts: dt.datetime, frequency: str, calendar: str | None = None) -> dt.datetime:
    """The next step after ``last_ts`` on the series' calendar (Friday close → Monday).

    A ``1B`` series with an exchange ``calendar`` (XNYS) skips that exchange's
    holidays: after 2018-12-31 comes 2019-01-02.

    Raises:
        InvalidInput: the next step lies past what pandas can represent (year 2262).
    """
    offset = pd.tseries.frequencies.to_offset(frequency)
    try:
        if calendar and offset.rule_code == "B" and offset.n == 1:
            from forecaster.calendar.trading import next_session  # exchange_calendars: never on a GET

            following: dt.datetime = next_session(calendar, pd.Timestamp(last_ts)).to_pydatetime()
            return following
        shifted: dt.datetime = (pd.Timestamp(last_ts) + offset).to_pydatetime()
        return shifted
    except (OverflowError, pd.errors.OutOfBoundsDatetime) as exc:
        raise InvalidInput(f"the step after {last_ts.isoformat()} ({frequency}) is past the representable "
                           f"range of timestamps ({type(exc).__name__}): delete the bad observation "
                           "(DELETE /v1/series/{key}/observations)") from None


def next_targets(last_ts: dt.datetime, frequency: str, calendar: str | None, h: int) -> list[dt.datetime]:
    """The h steps after ``last_ts`` on the series' calendar: step k of a path targets the k-th
    (a trading-day series skips its exchange's holidays at every step).

    Raises:
        InvalidInput: a step lies past what pandas can represent (year 2262).
    """
    out: list[dt.datetime] = []
    current = last_ts
    for _ in range(h):
        current = next_target_ts(current, frequency, calendar)
        out.append(current)
    return out


def baseline_forecast(values: np.ndarray, frequency: str,
                      level: float = DEFAULT_LEVEL) -> tuple[str, float, float | None]:
    """(method, value, half-width) of the baseline that serves a series of this frequency
    (``forecaster.modelling.baseline.better_baseline`` with the frequency's season)."""
    return better_baseline(values, season_length(frequency), level)


LIVE_ERRORS = 2000  # newest actuals replayed through the served candidate's ACI state


def _served_path(session: Session, series: Series, mv: ModelVersion, ts: pd.DatetimeIndex,
                 values: np.ndarray, h: int, in_hand: Any = None) -> tuple[str, np.ndarray]:
    """(method, path (h,)): the steps after the end as the version's serving candidate makes them.

    Versions from before the ladder serve their model. Torch loads only when the
    recurrent model is a member; statsforecast only when a statistical one is.
    """
    from forecaster.modelling import paths
    from forecaster.modelling.selection import Choice

    serving = (mv.hyperparameters or {}).get("serving") or {"members": ["model"], "method": "model"}
    choice = Choice.of(serving)
    at = np.asarray([len(values)])
    parts: dict[str, np.ndarray] = {}
    for member in choice.every:
        if member == "model":
            from forecaster.modelling.predictor import Predictor  # torch: only here, never on a GET

            predictor = in_hand or Predictor.from_artifact(mv.hyperparameters, mv.scaler, mv.weights)
            parts[member] = np.asarray(predictor.predict_path_next(ts, values), dtype=np.float64)[:h]
        elif member == "naive":
            parts[member] = paths.naive_paths(values, at, h)[0]
        elif member == "seasonal_naive":
            season = season_length(series.frequency) or 1
            if h == 1:
                parts[member] = np.asarray([seasonal_naive_next(values, season)])
            else:
                parts[member] = paths.seasonal_naive_paths(values, at, h, season)[0]
        else:
            from forecaster.modelling.candidates import serve_path

            stored = serving["fitted"][member]
            since = pd.Timestamp(stored["fit_start_ts"]).to_pydatetime()
            _, vals = load_values(session, series.id, since=since)
            try:
                parts[member] = serve_path(stored, vals, h)
            except Exception as exc:  # noqa: BLE001 - statsforecast raises bare Exceptions on values it cannot filter
                log_event("forecast.candidate_failed", level=logging.WARNING, series=series.key, candidate=member,
                          error=f"{type(exc).__name__}: {exc}"[:300])
                parts[member] = np.full(h, np.nan)  # not a finite path: the baseline serves it (``_store_served``)
    return serving["method"], choice.combine(parts)


def version_horizon(mv: ModelVersion) -> int:
    """Steps of the paths a version serves (versions from before paths: 1)."""
    return int((mv.hyperparameters or {}).get("horizon", 1))


def live_interval(session: Session, mv: ModelVersion) -> tuple[float | None, float]:
    """(half-width, level) of the served candidate's interval for the next step (step 1 of ``live_intervals``)."""
    halves, level = live_intervals(session, mv, 1)
    return halves[0], level


def live_intervals(session: Session, mv: ModelVersion, h: int) -> tuple[list[float | None], float]:
    """(half-width per step, level) of the served candidate's intervals for the next path's h steps.

    Adaptive conformal inference per step (forecaster/modelling/intervals.py): the state each step
    ended its holdout with, replayed over the errors of the actuals that arrived since it serves at
    that step (the step-k forecast made at origin t updates step k once the actual of t + k is in).
    Versions without that state keep their split-conformal width.
    """
    served = (mv.metrics or {}).get("served_interval") or {}
    if "aci" not in served:
        interval = (mv.metrics or {}).get("interval") or {}
        steps = interval.get("halfwidth_steps") or [interval.get("halfwidth")]
        return [steps[min(k, len(steps) - 1)] for k in range(h)], interval.get("level", DEFAULT_LEVEL)
    from forecaster.modelling.intervals import ACIState, walk

    states = ((mv.hyperparameters or {}).get("serving") or {}).get("aci_steps") or [served["aci"]]
    errors = forecasts.scored_errors_by_step(session, mv.id, LIVE_ERRORS, h)
    halves: list[float | None] = []
    level = DEFAULT_LEVEL
    for k in range(h):
        state = ACIState.from_dict(states[min(k, len(states) - 1)])
        residuals = np.asarray([e for _, e in errors.get(k + 1, [])], dtype=np.float64)
        _, state = walk(state, residuals)
        halves.append(state.halfwidth)
        level = state.level
    return halves, level


def _steps(series: Series, mv: ModelVersion | None) -> int:
    """Steps of the path a series serves now: its champion's, else the series' configured horizon."""
    return version_horizon(mv) if mv is not None else _configured_steps(series)


def _configured_steps(series: Series) -> int:
    from forecaster.calendar.frequency import default_horizon

    return int(series.horizon) if series.horizon else default_horizon(series.frequency)


def refresh_forecast(session: Session, series: Series, *, in_hand: tuple[int, Any] | None = None) -> Forecast | None:
    """Compute the champion's (or the better baseline's) path and store it; returns its step-1 row.

    The champion version serves what its ladder chose (the model, a statistical
    candidate or a combination), with its live ACI interval per step. Runs inside the
    caller's transaction. Returns None when the series has no observations yet.
    ``in_hand`` = (model_version_id, Predictor): a retrain passes the model it just
    trained, so the new champion is not reloaded from its stored bytes.
    The series' write lock is taken first: a concurrent writer's refresh waits for
    this transaction, then reads its rows (no forecast made from data already old).
    """
    lock_series(session, [series.id])
    mv = registry.champion_of(session, series.id)
    window = int(mv.hyperparameters.get("window", 1)) if mv is not None else 0
    ts, values = load_values(session, series.id, tail=max(BASELINE_TAIL, window + 1))
    if values.size == 0:
        return None
    origin = ts[-1].to_pydatetime()
    row = None
    if mv is not None and values.size >= window:
        h = version_horizon(mv)
        targets = next_targets(origin, series.frequency, series.calendar, h)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow shows as a non-finite value, handled below
            method, path = _served_path(session, series, mv, ts, values, h,
                                        in_hand[1] if in_hand is not None and in_hand[0] == mv.id else None)
        row = _store_served(session, series, mv, origin, targets, method, path)
    if row is None:
        row = _store_baseline(session, series, origin, ts, values)
    log_event("forecast.stored", series=series.key, method=row.method, model_version_id=row.model_version_id,
              target_ts=row.target_ts.isoformat(), value=row.value)
    return row


def _store_baseline(session: Session, series: Series, origin: dt.datetime, ts: pd.DatetimeIndex,
                    values: np.ndarray) -> Forecast:
    """Store the better baseline's path (naive or seasonal naive, ``baseline_path``)."""
    from forecaster.modelling.baseline import baseline_path

    h = _configured_steps(series)
    targets = next_targets(origin, series.frequency, series.calendar, h)
    with np.errstate(over="ignore", invalid="ignore"):
        method, path, halves = baseline_path(values, season_length(series.frequency), DEFAULT_LEVEL, h)
    points = []
    for target, value, half in zip(targets, path, halves, strict=True):
        if half is not None and not np.isfinite([value - half, value + half]).all():
            half = None  # an interval past the largest float says nothing
        points.append((target, float(value), None if half is None else float(value - half),
                       None if half is None else float(value + half)))
    level = DEFAULT_LEVEL if any(p[2] is not None for p in points) else None
    return forecasts.store_path(session, series, model_version_id=None, method=method, origin_ts=origin,
                                points=points, level=level)


def _store_served(session: Session, series: Series, mv: ModelVersion, origin: dt.datetime,
                  targets: list[dt.datetime], method: str, path: np.ndarray) -> Forecast | None:
    """Store the champion's path (what its ladder serves) with its live interval per step; None when a
    step is not a finite number (values far outside what the model saw, e.g. near 1e308): the baseline serves."""
    if not np.isfinite(path).all():
        log_event("forecast.not_finite", level=logging.WARNING, series=series.key, model_version_id=mv.id,
                  detail="the served forecast is not a finite number; the baseline serves this path")
        return None
    halves, level = live_intervals(session, mv, len(targets))
    points = []
    for target, value, half in zip(targets, path, halves, strict=True):
        v = float(value)
        if half is not None and not np.isfinite([v - half, v + half]).all():
            half = None
        points.append((target, v, None if half is None else v - half, None if half is None else v + half))
    return forecasts.store_path(session, series, model_version_id=mv.id, method=method, origin_ts=origin,
                                points=points, level=level)


def _served_by_model_alone(mv: ModelVersion) -> bool:
    from forecaster.modelling.selection import Choice

    return Choice.of((mv.hyperparameters or {}).get("serving") or {}).every == ("model",)


FLEET_PREDICT = 1024  # models per batched forward pass in refresh_forecasts


def refresh_forecasts(session: Session, series: list[Series]) -> dict[int, Forecast | None]:
    """``refresh_forecast`` for many series, the champions run in batched passes by model shape.

    Instead of one model load and one forward pass per series, the champions'
    stored weights (safetensors) are stacked per shape (cell, input features,
    hidden size, layers, window) and run in one pass of ``forecaster.modelling.fleet.recurrence.forward``
    per ``FLEET_PREDICT`` models. A series served by a baseline, with too little
    data, or whose artifact cannot be stacked goes through ``refresh_forecast``
    unchanged. Runs inside the caller's transaction.

    Returns:
        The stored forecast row (or None) by series id.
    """
    lock_series(session, [s.id for s in series])  # as refresh_forecast does, all at once in id order
    rows: dict[int, Forecast | None] = {}
    groups: dict[tuple[Any, ...], list[tuple[Series, ModelVersion, Any, Any, dt.datetime]]] = {}
    for s in series:
        mv = registry.champion_of(session, s.id)
        window = int(mv.hyperparameters.get("window", 1)) if mv is not None else 0
        if mv is None or not _served_by_model_alone(mv):  # baselines, candidates, combinations: one by one
            rows[s.id] = refresh_forecast(session, s)
            continue
        ts, values = load_values(session, s.id, tail=max(BASELINE_TAIL, window + 1))
        if values.size < max(window, 1):
            rows[s.id] = refresh_forecast(session, s)
            continue
        hp = mv.hyperparameters
        key = tuple(hp.get(k) for k in ("cell", "input_size", "hidden_size", "num_layers", "window")) + (
            version_horizon(mv),)
        groups.setdefault(key, []).append((s, mv, ts, values, ts[-1].to_pydatetime()))
    for members in groups.values():
        for i in range(0, len(members), FLEET_PREDICT):
            rows.update(_refresh_batch(session, members[i : i + FLEET_PREDICT]))
    return rows


def _refresh_batch(session: Session, members: list[tuple[Series, ModelVersion, Any, Any, dt.datetime]]
                   ) -> dict[int, Forecast | None]:
    import torch  # only here, never on a GET
    from safetensors.torch import load as st_load

    from forecaster.modelling.fleet.recurrence import forward, stack_states
    from forecaster.modelling.network import ModelConfig
    from forecaster.modelling.predictor import Predictor

    rows: dict[int, Forecast | None] = {}
    ok, inputs, states = [], [], []
    for member in members:
        s, mv = member[0], member[1]
        try:
            predictor = Predictor.inputs_only(mv.hyperparameters, mv.scaler)
            xn, w = predictor.next_inputs(member[2], member[3])
            states.append(st_load(mv.weights))
        except Exception:  # noqa: BLE001 - this one takes the single path, which reports its own problem
            rows[s.id] = refresh_forecast(session, s)
            continue
        ok.append((member, predictor, w))
        inputs.append(xn[0])
    if not ok:
        return rows
    config = ModelConfig.from_dict(ok[0][0][1].hyperparameters)
    with torch.inference_mode():
        params = stack_states(config, states, torch.device("cpu"))
        yn = forward(config, params, torch.from_numpy(np.stack(inputs))[:, None]).numpy()[:, 0]  # (K,) or (K, h)
    for k, ((s, mv, _, _, origin), predictor, w) in enumerate(ok):
        path = predictor.from_outputs(yn[k : k + 1], w).reshape(-1)  # (h,)
        serving = (mv.hyperparameters or {}).get("serving") or {"method": "model"}
        targets = next_targets(origin, s.frequency, s.calendar, len(path))
        row = _store_served(session, s, mv, origin, targets, serving.get("method", "model"), path)
        if row is None:  # not a finite number: the single path stores the baseline and says why
            rows[s.id] = refresh_forecast(session, s)
            continue
        rows[s.id] = row
        log_event("forecast.stored", series=s.key, method="model", model_version_id=mv.id,
                  target_ts=targets[0].isoformat(), value=float(path[0]), steps=len(path), batched=len(ok))
    return rows


class BatchedRefresh:
    """An ``after_write`` hook for an ingest of many series: it notes each series whose rows
    changed, and ``flush(sm)`` refreshes their stored forecasts with ``refresh_forecasts``
    (batched forward passes) in one transaction, after the ingest's own transactions.
    """

    def __init__(self) -> None:
        self.series_ids: list[int] = []

    def __call__(self, session: Session, series: Series) -> None:
        if series.id not in self.series_ids:
            self.series_ids.append(series.id)

    def flush(self, sm: sessionmaker[Session]) -> int:
        """Refresh every noted series; returns how many."""
        ids, self.series_ids = self.series_ids, []
        if not ids:
            return 0
        with write_session(sm) as session:
            refresh_forecasts(session, series_by_ids(session, ids))
        return len(ids)


def refresh_after_ingest(session: Session, series: Series) -> None:
    """Hook for ingest: new data means a new next step to forecast."""
    refresh_forecast(session, series)


BASELINE_LABELS = {"model": "recurrent model", "naive": "naive", "seasonal_naive": "seasonal naive"}


def served_label(mv: ModelVersion | None, method: str) -> str:
    """What made a forecast, for people."""
    if mv is None:
        return BASELINE_LABELS.get(method, method)
    serving = (mv.metrics or {}).get("served") or {}  # small: the hyperparameters may carry candidate states
    if not serving.get("label"):
        serving = (mv.hyperparameters or {}).get("serving") or {}
    if serving.get("method") == method and serving.get("label"):
        return str(serving["label"])
    return BASELINE_LABELS.get(method, method)


def _view(series: Series, f: Forecast, mv: ModelVersion | None, latest: ModelVersion | None = None,
          rows: list[Forecast] | None = None) -> ForecastView:
    """``mase``: the holdout MASE of what made it (the served candidate of the version,
    or for a baseline its MASE on the latest version's holdout); ``model_mase``: the
    recurrent model's own, beside it (None when nothing was ever trained)."""
    mase = model_mase = None
    if mv is not None:
        metrics = mv.metrics or {}
        model_mase = (metrics.get("model") or {}).get("mase")
        served = metrics.get("served") or {}
        mase = served.get("mase") if served.get("method") == f.method else (metrics.get(f.method) or {}).get("mase")
        if f.method == "model":
            mase = model_mase
    elif latest is not None:
        mase = ((latest.metrics or {}).get(f.method) or {}).get("mase")
        model_mase = ((latest.metrics or {}).get("model") or {}).get("mase")
    return ForecastView(
        series_key=series.key, target_ts=f.target_ts, made_at=f.made_at, value=f.value, lower=f.lower,
        upper=f.upper, level=f.level, method=f.method, model_version=mv.version if mv else None,
        model_version_id=f.model_version_id, mase=mase, actual=f.actual, error=f.error,
        served_by=served_label(mv, f.method), model_mase=model_mase,
        path=tuple(PathPoint(r.step, r.target_ts, r.value, r.lower, r.upper) for r in (rows or [f])),
    )


def change_probe(engine: Engine) -> ChangeProbe | None:
    """What tells whether a series' stored forecast may have changed since a token was taken
    (``forecaster.store.change_tokens``); None where no token can be taken (in-memory SQLite)."""
    return probe_for(engine.url)


def get_forecast(session: Session, *, series_key: str) -> ForecastView:
    """The latest stored forecast of a series.

    Raises:
        SeriesNotFound: no such series, or it has no forecast yet (the message says which).
    """
    series = series_by_key(session, series_key)
    f = forecasts.latest(session, series.id)
    if f is None:
        raise SeriesNotFound(f"series {series_key!r} has no forecast yet: ingest it first")
    small = load_only(ModelVersion.id, ModelVersion.series_id, ModelVersion.version, ModelVersion.metrics)
    mv = session.get(ModelVersion, f.model_version_id, options=[small]) if f.model_version_id else None
    latest = None
    if mv is None:
        latest = registry.latest_version(session, series.id, small)
    return _view(series, f, mv, latest, forecasts.path_rows(session, f))
