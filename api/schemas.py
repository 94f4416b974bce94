"""Request and response bodies (pydantic), one family per noun, with OpenAPI examples.

Response models are built from the core's frozen views (``ForecastView``,
``VersionView``, ``JobRunView``) with ``from_domain``; they never carry ORM rows
or model weights.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic_core import to_json

from forecaster.usecases.forecasting import ForecastView
from forecaster.usecases.jobs import JobRunView
from forecaster.usecases.models import Champion, VersionView

SERIES_KEY_EXAMPLE = "sine:demo"


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- problems and health


class ProblemOut(_Out):
    """An error (RFC 9457 ``application/problem+json``)."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{
        "type": "urn:forecaster:problem:series-not-found", "title": "Not Found", "status": 404,
        "detail": "no series 'yfinance:NOPE:close'",
    }]})

    type: str = Field(description="A URI naming the kind of problem; `about:blank` when it is just the status.")
    title: str
    status: int
    detail: str = Field(description="What went wrong, naming the bad value and the way out.")


class HealthOut(_Out):
    status: Literal["ok"] = "ok"


class ReadyOut(_Out):
    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{
        "status": "ready", "database": "sqlite", "schema_revision": "0001", "head_revision": "0001",
    }]})

    status: Literal["ready"] = "ready"
    database: str = Field(description="The database dialect (sqlite, postgresql).")
    schema_revision: str | None
    head_revision: str


# ---------------------------------------------------------------- series and observations


class SeriesOut(_Out):
    """A series and where it stands."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{
        "key": "yfinance:^GSPC:close", "source": "yfinance", "frequency": "1B", "unit": "USD",
        "params": {"ticker": "^GSPC", "field": "close", "period": "5y"},
        "last_observation_ts": "2026-11-20T21:00:00Z", "observation_count": 1257,
        "champion_version": 3, "champion_model_version_id": 17, "configured": True,
    }]})

    key: str
    source: str
    frequency: str = Field(description="pandas offset alias of one step: 5min, 1h, 1D, 1B, 1W, 1MS, ...")
    unit: str | None
    params: dict[str, Any]
    last_observation_ts: dt.datetime | None
    observation_count: int
    champion_version: int | None = Field(description="The version serving forecasts; null while a baseline serves.")
    champion_model_version_id: int | None
    configured: bool = Field(description="Declared in the config file (false: created by a push).")


class SeriesList(_Out):
    series: list[SeriesOut]


class ObservationOut(_Out):
    ts: dt.datetime
    value: float


class ObservationPage(_Out):
    """One page of observations, oldest first."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{
        "series_key": SERIES_KEY_EXAMPLE,
        "observations": [{"ts": "2024-01-01T00:00:00Z", "value": 0.02}, {"ts": "2024-01-01T01:00:00Z", "value": 0.27}],
        "next_cursor": "MjAyNC0wMS0wMVQwMTowMDowMCswMDowMA",
    }]})

    series_key: str
    observations: list[ObservationOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class ObservationIn(_In):
    """One pushed observation (the shape documented for a push; forecaster/data/push_body.py reads it)."""

    ts: AwareDatetime = Field(description="ISO-8601 extended text with a UTC offset (`Z` or `+01:00`); "
                                          "no epoch numbers.")
    value: float = Field(description="A finite number; booleans, null, NaN and text are refused.")


class PushOut(_Out):
    """What a push did: rows new, updated (value changed), unchanged, rejected (and why)."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{
        "series_key": "push:meter", "created": False, "new": 24, "updated": 1, "unchanged": 0, "rejected": 1,
        "notes": ["1 duplicate timestamps: kept the last"], "ingest_run_id": 12, "forecast": None,
    }]})

    series_key: str
    created: bool = Field(description="True when this push created the series (api.allow_push_create).")
    new: int
    updated: int
    unchanged: int
    rejected: int = Field(description="Rows replaced by a later row with the same timestamp (the last row wins).")
    notes: list[str]
    ingest_run_id: int
    forecast: ForecastOut | None = Field(description="The stored forecast after the push.")


class DeleteObservationsOut(_Out):
    """What a delete did: rows removed, the run that records it, and the forecast recomputed after it."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{
        "series_key": "sine:demo", "deleted": 1, "ingest_run_id": 13, "forecast": None,
    }]})

    series_key: str
    deleted: int = Field(description="Observations removed.")
    ingest_run_id: int = Field(description="The ingest run (source `delete`) that records the repair.")
    forecast: ForecastOut | None = Field(description="The stored forecast after the delete.")


# ---------------------------------------------------------------- forecasts


class PathPointOut(_Out):
    """One step of a forecast path."""

    model_config = ConfigDict(frozen=True)

    step: int = Field(description="Steps after the last observation, on the series' calendar (1..h).")
    target_ts: dt.datetime
    value: float
    lower: float | None
    upper: float | None


class ForecastOut(_Out):
    """The stored forecast path of one series; the flat fields describe its first step."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{
        "series_key": SERIES_KEY_EXAMPLE, "value": 0.71, "lower": 0.52, "upper": 0.9, "level": 0.9,
        "target_ts": "2024-03-24T08:00:00Z", "made_at": "2026-11-23T03:00:12Z", "method": "model",
        "model_version": 3, "model_version_id": 17, "mase": 0.82,
        "served_by": "recurrent model", "model_mase": 0.82,
        "path": [{"step": 1, "target_ts": "2024-03-24T08:00:00Z", "value": 0.71, "lower": 0.52, "upper": 0.9},
                 {"step": 2, "target_ts": "2024-03-24T09:00:00Z", "value": 0.83, "lower": 0.6, "upper": 1.06}],
    }]})

    series_key: str
    value: float
    lower: float | None = Field(description="Lower end of the prediction interval (split-conformal).")
    upper: float | None
    level: float | None = Field(description="Nominal coverage of [lower, upper], e.g. 0.9.")
    target_ts: dt.datetime = Field(description="The step forecast: the next one on the series' calendar.")
    made_at: dt.datetime = Field(description="When this forecast was computed (as-of time).")
    method: Literal["model", "naive", "seasonal_naive", "ets", "ets_seasonal", "theta", "arima", "sarima",
                    "combination"] = (
        Field(description="What made it: the recurrent model, a baseline, a statistical candidate or a "
                          "combination (the version's ladder chose it on validation data)."))
    served_by: str = Field(default="", description="What made it, for people, e.g. 'AutoETS' or "
                                                   "'mean of recurrent model + AutoARIMA'.")
    model_version: int | Literal["naive", "seasonal_naive"] = Field(
        description="The champion version that made it, or the baseline that serves while no model passed.")
    model_version_id: int | None
    mase: float | None = Field(description="Holdout MASE of what made it (for a baseline: on the latest "
                                           "version's holdout; null before any training).")
    model_mase: float | None = Field(default=None, description="The recurrent model's own holdout MASE, beside it.")
    path: list[PathPointOut] = Field(default_factory=list, description=(
        "The forecast path: steps 1..h (the series' horizon), each with its target time, value and interval at "
        "`level`; step 1 is the flat fields above. `?h=N` returns the first N steps."))

    @classmethod
    def from_domain(cls, f: ForecastView) -> ForecastOut:
        version: int | Literal["naive", "seasonal_naive"]
        version = f.model_version if f.model_version is not None else f.method  # type: ignore[assignment]
        return cls(series_key=f.series_key, value=f.value, lower=f.lower, upper=f.upper, level=f.level,
                   target_ts=f.target_ts, made_at=f.made_at, method=f.method,  # type: ignore[arg-type]
                   model_version=version, model_version_id=f.model_version_id, mase=f.mase,
                   served_by=f.served_by, model_mase=f.model_mase,
                   path=[PathPointOut(step=p.step, target_ts=p.target_ts, value=p.value, lower=p.lower,
                                      upper=p.upper) for p in f.path])

    def first_steps(self, h: int) -> ForecastOut:
        """This forecast with its path cut to the first ``h`` steps."""
        return self.model_copy(update={"path": self.path[:h]})

    def csv(self) -> bytes:
        """The path as ``step,target_ts,value,lower,upper`` lines (a header first; empty where no interval)."""
        def cell(x: float | dt.datetime | None) -> str:  # the JSON body's own text of it (its serializer)
            return "" if x is None else to_json(x).decode().strip('"')

        lines = ["step,target_ts,value,lower,upper"]
        for p in self.path:
            lines.append(f"{p.step},{cell(p.target_ts)},{cell(p.value)},{cell(p.lower)},{cell(p.upper)}")
        return ("\n".join(lines) + "\n").encode()


class ForecastManyIn(_In):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "keys": ["sine:demo", "yfinance:^GSPC:close"],
    }]})

    keys: list[str] = Field(min_length=1, max_length=1000)
    h: int | None = Field(default=None, ge=1, le=1000, description="Cut each path to its first h steps.")


class ForecastResult(_Out):
    """One key's answer: ``status`` 200 with a forecast, or 404 with the reason."""

    series_key: str
    status: int
    forecast: ForecastOut | None = None
    detail: str | None = None


class ForecastManyOut(_Out):
    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{"results": [
        {"series_key": SERIES_KEY_EXAMPLE, "status": 200, "forecast": ForecastOut.model_config[
            "json_schema_extra"]["examples"][0], "detail": None},  # type: ignore[index]
        {"series_key": "yfinance:NOPE:close", "status": 404, "forecast": None,
         "detail": "no series 'yfinance:NOPE:close'"},
    ]}]})

    results: list[ForecastResult]


# ---------------------------------------------------------------- models


class PredictIn(_In):
    """Windows of raw values, oldest first, each exactly as long as the model's window."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "windows": [[0.0, 0.26, 0.5, 0.71], [0.26, 0.5, 0.71, 0.87]],
        "last_ts": None,
    }]})

    # Plain floats here (validation is ~30 % faster on big batches); the route refuses NaN and
    # infinity with numpy, naming the first bad position.
    windows: list[list[float]] = Field(min_length=1, description="(batch, window) raw values, all finite.")
    last_ts: list[AwareDatetime] | None = Field(
        default=None, description="Timestamp of each window's last value; needed by models with calendar features.")


class PredictOut(_Out):
    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{
        "model_version_id": 17, "series_key": SERIES_KEY_EXAMPLE, "version": 3, "window": 4, "horizon": 2,
        "predictions": [0.87, 0.97], "paths": [[0.87, 0.97], [0.97, 0.99]],
    }]})

    model_version_id: int
    series_key: str
    version: int
    window: int = Field(description="Values per window this model takes.")
    horizon: int = Field(default=1, description="Steps of each path this model forecasts.")
    predictions: list[float] = Field(description="One next-step forecast per window, in order (step 1 of `paths`).")
    paths: list[list[float]] = Field(default_factory=list, description=(
        "The recurrent model's path of `horizon` steps per window, in order, from one forward pass."))


class ModelVersionOut(_Out):
    """A model version: metrics, lineage, status and hyperparameters (never its weights)."""

    model_config = ConfigDict(frozen=True, protected_namespaces=(), json_schema_extra={"examples": [{
        "id": 17, "series_key": SERIES_KEY_EXAMPLE, "version": 3, "created_at": "2026-11-23T03:00:12Z",
        "status": "champion", "status_reason": "model MASE 0.820 < naive 1.000, seasonal naive 1.310",
        "is_champion": True, "hyperparameters": {"cell": "lstm", "window": 48, "hidden_size": 32},
        "metrics": {"model": {"mae": 0.08, "rmse": 0.1, "mase": 0.82, "smape": 0.2},
                    "naive": {"mae": 0.1, "rmse": 0.12, "mase": 1.0, "smape": 0.25},
                    "seasonal_naive": None, "champion": None,
                    "interval": {"level": 0.9, "halfwidth": 0.19, "coverage": 0.91}},
        "lineage": {"train": ["2024-01-01T00:00:00+00:00", "2024-03-01T00:00:00+00:00"], "seed": 0,
                    "device": "cpu", "duration_s": 4.2},
        "weights_bytes": 53412,
    }]})

    id: int
    series_key: str
    version: int
    created_at: dt.datetime
    status: str = Field(description="candidate, rejected, champion or retired.")
    status_reason: str | None
    is_champion: bool
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    weights_bytes: int = Field(description="Size of the stored weights (the bytes themselves are never served).")

    @classmethod
    def from_domain(cls, v: VersionView) -> ModelVersionOut:
        return cls(id=v.id, series_key=v.series_key, version=v.version, created_at=v.created_at, status=v.status,
                   status_reason=v.status_reason, is_champion=v.is_champion, hyperparameters=v.hyperparameters,
                   metrics=v.metrics, lineage=v.lineage, weights_bytes=v.weights_bytes)


class ModelVersionList(_Out):
    series_key: str
    versions: list[ModelVersionOut] = Field(description="Newest first.")


class PromoteIn(_In):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"version": 2},
                                                                               {"version": 3, "force": True}]})

    version: int = Field(ge=1, le=2**31 - 1, description="The version number (per series) to serve.")
    force: bool = Field(default=False, description="Serve it even though the gate rejected it (the answer says "
                                                   "what the gate said). Without it, such a promotion is a 409.")


class GateOut(_Out):
    passed: bool = Field(description="Whether the version's holdout MASE beat every baseline (and the champion "
                                     "of its day).")
    reason: str = Field(description="The gate's verdict, naming the numbers.")


class ChampionOut(_Out):
    """What serves a series after a promotion, a move to the baseline or a rollback, and the forecast it stores."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{
        "series_key": SERIES_KEY_EXAMPLE, "serving": "model", "version": 2, "model_version_id": 16,
        "previous": "v3", "previous_version": 3, "changed": True, "forced": False,
        "gate": {"passed": True, "reason": "model MASE 0.820 < naive 1.000, seasonal naive 1.310"},
        "forecast": ForecastOut.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
    }]})

    series_key: str
    serving: Literal["model", "baseline"] = Field(description="A model version serves, or the series' baseline.")
    version: int | None = Field(description="The version that serves (null: the baseline).")
    model_version_id: int | None
    previous: str = Field(description="What served before: `v3` or `baseline`.")
    previous_version: int | None = Field(description="The version that served before (null: the baseline).")
    changed: bool = Field(description="False when this already served (nothing moved).")
    forced: bool = Field(description="True when a version the gate rejected was promoted with force.")
    gate: GateOut | None = Field(description="What the gate said of the version now serving (null for the baseline).")
    forecast: ForecastOut | None = Field(description="The forecast now stored (null: no observations yet).")

    @classmethod
    def from_domain(cls, c: Champion, forecast: ForecastView | None) -> ChampionOut:
        gate = GateOut(passed=c.gate_passed, reason=c.gate_reason or "") if c.gate_passed is not None else None
        return cls(series_key=c.series_key, serving="baseline" if c.baseline else "model", version=c.version,
                   model_version_id=c.model_version_id,
                   previous="baseline" if c.previous_version is None else f"v{c.previous_version}",
                   previous_version=c.previous_version, changed=c.changed, forced=c.forced, gate=gate,
                   forecast=ForecastOut.from_domain(forecast) if forecast is not None else None)


# ---------------------------------------------------------------- jobs


class JobTriggerIn(_In):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"keys": ["sine:demo"]}, {}]})

    keys: list[str] | None = Field(default=None, min_length=1, max_length=10000,
                                   description="Configured series to run (at least one); all when omitted.")


class TrainTriggerIn(JobTriggerIn):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"keys": ["sine:demo"]}, {}, {"keys": ["sine:demo"], "cold": True}]})

    cold: bool = Field(default=False, description=(
        "Retrain from scratch: random initial weights and every statistical form searched again. "
        "By default a retrain starts warm from the champion's weights and forms where it can."))


class JobRunOut(_Out):
    """A job run (ingest or train over several series) and its progress."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{
        "id": 42, "kind": "train", "trigger": "api", "status": "running", "series_keys": ["sine:demo"],
        "started_at": "2026-11-23T03:00:00Z", "finished_at": None, "series_total": 1, "series_done": 0,
        "series_failed": 0, "progress": {"results": [], "current": "sine:demo"}, "error": None, "cold": False,
    }]})

    id: int
    kind: str
    trigger: str
    status: str = Field(description="queued, running, ok, partial, failed or interrupted.")
    series_keys: list[str] | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    series_total: int
    series_done: int
    series_failed: int
    progress: dict[str, Any] | None
    error: str | None
    cold: bool = Field(default=False, description="A train run whose series retrain from scratch (not warm).")

    @classmethod
    def from_domain(cls, r: JobRunView) -> JobRunOut:
        return cls(**dataclasses.asdict(r))  # the same fields, by name


class JobRunList(_Out):
    runs: list[JobRunOut] = Field(description="Newest first.")


PushOut.model_rebuild()
