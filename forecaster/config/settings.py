"""The settings schema: what ``forecaster.toml`` and the ``FORECASTER_*`` variables may hold, each value checked.

Reading the file and the environment into ``Settings`` is forecaster/config/loading.py;
nothing here builds an engine or reads a file at import time.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from forecaster.calendar.cron import check_cron
from forecaster.calendar.frequency import MAX_HORIZON, check_frequency, default_horizon
from forecaster.calendar.trading import check_exchange, default_calendar  # exchange_calendars loads on first use only
from forecaster.config.messages import ENV_PREFIX, describe_errors
from forecaster.errors import ConfigError
from forecaster.snapshots import SNAPSHOTS

SOURCES = ("yfinance", "open-meteo", "csv", "sine", "push")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- per-source parameters


YF_PERIODS = ("1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max")


class YFinanceParams(_Strict):
    ticker: str = Field(min_length=1)
    field: Literal["close", "adjclose"] = "close"
    period: str = "5y"

    @field_validator("period")
    @classmethod
    def _period(cls, v: str) -> str:
        if v not in YF_PERIODS:
            raise ValueError(f"is not a Yahoo period (one of: {', '.join(YF_PERIODS)})")
        return v


class OpenMeteoParams(_Strict):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    variable: str = Field(min_length=1)
    history_days: int = Field(default=730, ge=1, le=36500)
    past_days: int = Field(default=7, ge=0, le=92)
    timezone: str = "GMT"
    temperature_unit: Literal["celsius", "fahrenheit"] | None = None


class CsvParams(_Strict):
    path: str = Field(min_length=1)
    time_column: str = "ts"
    value_column: str = "value"
    timezone: str | None = None  # for files whose times carry no offset

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError("is not an IANA time zone (e.g. 'UTC', 'Europe/Berlin')") from None
        return v


class SineParams(_Strict):
    period: float = Field(default=24, gt=0)
    noise: float = Field(default=0.1, ge=0)
    length: int = Field(default=2000, ge=1, le=1_000_000)
    seed: int = 1
    amplitude: float = 1.0
    level: float = 0.0
    start: str = "2024-01-01T00:00:00Z"

    @field_validator("start")
    @classmethod
    def _start(cls, v: str) -> str:
        try:
            pd.Timestamp(v)  # without an offset it is UTC
        except (ValueError, TypeError, OverflowError):
            raise ValueError("is not an ISO-8601 time such as '2024-01-01T00:00:00Z'") from None
        return v


class PushParams(_Strict):
    pass


PARAMS_BY_SOURCE: dict[str, type[_Strict]] = {
    "yfinance": YFinanceParams,
    "open-meteo": OpenMeteoParams,
    "csv": CsvParams,
    "sine": SineParams,
    "push": PushParams,
}


# ---------------------------------------------------------------- model overrides


class ModelSpec(_Strict):
    """Hyperparameters; None means 'the default for this series' frequency'."""

    cell: Literal["lstm", "gru", "rnn"] = "lstm"
    window: int | None = Field(default=None, ge=2, le=4096)
    hidden_size: int = Field(default=64, ge=1, le=4096)  # 32 -> 64 (with 8000 windows): bench/quality.py
    num_layers: int = Field(default=1, ge=1, le=8)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    epochs: int = Field(default=60, ge=1, le=10_000)
    batch_size: int = Field(default=64, ge=1, le=65_536)
    lr: float = Field(default=3e-3, gt=0, le=1)
    patience: int = Field(default=8, ge=1)
    grad_clip: float = Field(default=1.0, ge=0)
    loss: Literal["mae", "huber", "mse"] = "mae"
    target: Literal["value", "delta"] = "value"
    calendar: bool = False
    normalise: Literal["window", "global"] = "window"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    amp: bool = False  # bf16: CUDA autocast (unmeasured on a GPU); CPU fleets of LSTM/RNN, native bf16 only
    interval_level: float = Field(default=0.9, gt=0, lt=1)
    max_train_points: int | None = Field(default=None, ge=10)
    # Warm retrains (README "Warm and cold retrains"): start from the champion's weights and forms.
    warm_start: bool = True
    warm_epochs: int = Field(default=12, ge=1, le=10_000)  # a warm retrain's budget, at most
    warm_patience: int = Field(default=3, ge=1)
    warm_lr: float | None = Field(default=None, gt=0, le=1)  # None: a tenth of lr (a fine-tune, not a restart)
    # A warm retrain's epochs go over the most recent this many training windows only (0: all of them):
    # 2048 cut a warm retrain to 0.09-0.16 of a cold one's time over a month of daily retrains of the
    # public series (bench/results/retrain.md, stop 26).
    warm_windows: int = Field(default=2048, ge=0, le=10_000_000)
    cold_every: int = Field(default=14, ge=0, le=10_000)  # after this many warm retrains in a row, one cold; 0: never
    # Statistical candidates that compete with the model (README "Candidates"); [] = none.
    candidates: tuple[Literal["ets", "ets_seasonal", "theta", "arima", "sarima"], ...] = (
        "ets", "ets_seasonal", "theta", "arima", "sarima")


# ---------------------------------------------------------------- series


class SeriesSpec(_Strict):
    key: str = Field(min_length=1, max_length=200)
    source: str
    frequency: str
    params: dict[str, Any] = Field(default_factory=dict)
    unit: str | None = None
    model: ModelSpec = Field(default_factory=ModelSpec)
    snapshot: str | None = None  # bundled offline snapshot used when the source is unreachable
    exchange: str | None = None  # trading-day calendar of a 1B series (default XNYS for yfinance)
    ingest: str | None = None  # per-series cron overrides
    retrain: str | None = None
    horizon: int | None = Field(default=None, ge=1, le=MAX_HORIZON)  # steps per forecast path; None: by frequency

    @field_validator("key")
    @classmethod
    def _key_chars(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.:,^=\-]+", v):
            raise ValueError("may hold only letters, digits and _ . : , ^ = -")
        return v

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        if v not in SOURCES:
            raise ValueError(f"is not a source (one of: {', '.join(SOURCES)})")
        return v

    @field_validator("frequency")
    @classmethod
    def _freq(cls, v: str) -> str:
        return check_frequency(v)

    @field_validator("ingest", "retrain")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        return None if v is None else check_cron(v)

    @field_validator("snapshot")
    @classmethod
    def _snapshot(cls, v: str | None) -> str | None:
        if v is not None and v not in SNAPSHOTS:
            raise ValueError(f"is not a bundled snapshot (bundled: {', '.join(sorted(SNAPSHOTS))})")
        return v

    @field_validator("exchange")
    @classmethod
    def _exchange(cls, v: str | None) -> str | None:
        return None if v is None else check_exchange(v)

    @property
    def steps(self) -> int:
        """Steps of this series' forecast path: ``horizon``, else the frequency's default."""
        return self.horizon if self.horizon is not None else default_horizon(self.frequency)

    @property
    def calendar(self) -> str | None:
        """The exchange calendar the series follows: ``exchange``, else XNYS for 1B yfinance series."""
        if self.exchange is not None:
            return self.exchange
        return default_calendar(self.source, self.frequency)

    @model_validator(mode="after")
    def _params_fit_source(self) -> SeriesSpec:
        if self.exchange is not None and pd.tseries.frequencies.to_offset(self.frequency).rule_code != "B":
            raise ConfigError(f"exchange = {self.exchange!r} applies to trading-day series only "
                              f"(frequency '1B'); this one is {self.frequency!r}")
        model = PARAMS_BY_SOURCE[self.source]
        try:
            model.model_validate(self.params)
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc, prefix="params", data=self.params)) from None
        return self

    def typed_params(self) -> Any:
        """The params validated into this source's parameter model."""
        return PARAMS_BY_SOURCE[self.source].model_validate(self.params)


class Schedule(_Strict):
    ingest: str = "*/30 * * * *"
    retrain: str = "0 3 * * *"

    @field_validator("ingest", "retrain")
    @classmethod
    def _cron(cls, v: str) -> str:
        return check_cron(v)


class OpenMeteoSettings(_Strict):
    forecast_url: str = "https://api.open-meteo.com/v1/forecast"
    archive_url: str = "https://archive-api.open-meteo.com/v1/archive"
    timeout_s: float = Field(default=30, gt=0)


class YFinanceSettings(_Strict):
    base_url: str | None = None  # route all Yahoo traffic to this host (mirror, proxy, fake)
    timeout_s: float = Field(default=30, gt=0)


class SourcesSettings(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    open_meteo: OpenMeteoSettings = Field(default_factory=OpenMeteoSettings, alias="open-meteo")
    yfinance: YFinanceSettings = Field(default_factory=YFinanceSettings)


class ApiSettings(_Strict):
    max_predict_batch: int = Field(default=4096, ge=1)
    allow_push_create: bool = False  # POST observations to an unknown key creates a push series
    predict_cache_size: int = Field(default=16, ge=1)


def _at_least_twice(longer: str, longer_s: float, shorter: str, shorter_s: float, otherwise: str) -> None:
    """Raise unless a timeout outlasts two of the intervals it watches, saying what would go wrong."""
    if longer_s < 2 * shorter_s:
        raise ValueError(f"{longer} = {longer_s:g} must be at least twice {shorter} ({shorter_s:g}), or {otherwise}")


class SchedulerSettings(_Strict):
    """How `forecaster scheduler` leads, follows and retries."""

    run_on_start: bool = False  # when first leading, run every ingest job, then every retrain job, once
    leader_retry_s: float = Field(default=5.0, ge=0.1)  # followers try the leader lock this often (failover bound)
    lease_check_s: float = Field(default=5.0, ge=0.1)  # the leader checks it still holds the lock this often
    lease_timeout_s: float = Field(default=30.0, ge=1.0)  # PostgreSQL drops a frozen leader's lock after this
    ingest_tries: int = Field(default=3, ge=1)  # attempts per series when its source is unavailable
    retry_backoff_s: float = Field(default=2.0, ge=0)  # wait after the first failed attempt, doubled each time

    @model_validator(mode="after")
    def _timeout_covers_checks(self) -> SchedulerSettings:
        _at_least_twice("lease_timeout_s", self.lease_timeout_s, "lease_check_s", self.lease_check_s,
                        "a healthy leader would lose its lock between two checks")
        return self


QUEUE_NAMES: tuple[Literal["train", "ingest"], ...] = ("train", "ingest")  # a worker takes both by default


class WorkersSettings(_Strict):
    """Where retrains and ingests run: in this process, or on `forecaster worker` processes (README: Scaling out)."""

    queue: Literal["auto", "in-process"] = "auto"  # auto: procrastinate on PostgreSQL, in-process on SQLite
    concurrency: int = Field(default=1, ge=1, le=64)  # tasks one `forecaster worker` runs at once (threads)
    # a worker's torch threads; None: every core (torch's default)
    torch_threads: int | None = Field(default=None, ge=1, le=1024)
    # concurrency > 1: how long a train task waits for others of its shape to fleet with (0: never)
    fleet_wait_s: float = Field(default=1.0, ge=0, le=60)
    queues: list[Literal["train", "ingest"]] = Field(default_factory=lambda: list(QUEUE_NAMES), min_length=1)
    heartbeat_s: float = Field(default=5.0, ge=0.5)  # a worker writes its heartbeat this often
    stalled_after_s: float = Field(default=30.0, ge=1.0)  # a worker this long without a heartbeat is dead
    stalled_check_s: float = Field(default=10.0, ge=0.5)  # each worker looks for dead workers' tasks this often
    poll_s: float = Field(default=2.0, ge=0.1)  # fallback poll for new tasks (LISTEN/NOTIFY wakes workers at once)
    database_retry_s: float = Field(default=5.0, ge=0.1)  # a worker without its database tries again this often
    # SIGTERM: tasks in hand are flagged aborted after this (a training still ends)
    shutdown_timeout_s: float = Field(default=110.0, ge=1.0)

    @model_validator(mode="after")
    def _stalled_covers_heartbeats(self) -> WorkersSettings:
        _at_least_twice("stalled_after_s", self.stalled_after_s, "heartbeat_s", self.heartbeat_s,
                        "a healthy worker's tasks would be run a second time")
        return self

    def uses_queue(self, database_url: str) -> bool:
        """True when work goes through procrastinate (PostgreSQL, unless ``queue = "in-process"``)."""
        return self.queue == "auto" and database_url.startswith("postgresql")


class ObservationsSettings(_Strict):
    """Rules every incoming observation meets (forecaster/data/validation.py)."""

    # how far past now a timestamp may lie (<= ~10 years)
    future_tolerance_s: float = Field(default=86_400.0, ge=0, le=3.2e8)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class MonitoringSettings(_Strict):
    accuracy_window: int = Field(default=100, ge=1)  # recent actuals that live accuracy is judged on
    drift_min_actuals: int = Field(default=20, ge=1)  # no drift verdict before this many actuals
    retrain_on_drift: bool = False  # a drifting champion triggers a retrain of its series


class Settings(BaseSettings):
    """Everything the service reads at start."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    database_url: str = "sqlite:///forecaster.db"
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    schedule: Schedule = Field(default_factory=Schedule)
    sources: SourcesSettings = Field(default_factory=SourcesSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    workers: WorkersSettings = Field(default_factory=WorkersSettings)
    observations: ObservationsSettings = Field(default_factory=ObservationsSettings)
    series: list[SeriesSpec] = Field(default_factory=list)
    snapshot_fallback: bool = True
    log_level: str = "INFO"
    log_file: str | None = None  # also write the log lines to this file (appended)
    config_path: str | None = None

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, v: str) -> str:
        if v.upper() not in LOG_LEVELS:
            raise ValueError(f"is not a log level (one of: {', '.join(LOG_LEVELS)}, any case)")
        return v.upper()

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys(cls, v: Any) -> Any:
        # FORECASTER_API_KEYS arrives as text: a JSON list '["k1","k2"]' or a plain list k1,k2
        if isinstance(v, str):
            if v.lstrip().startswith("["):
                try:
                    return json.loads(v)
                except ValueError:
                    raise ValueError("is neither a JSON list of strings nor a comma-separated list") from None
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, v: str) -> str:
        if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", v):
            raise ValueError("must start with sqlite:/// or postgresql+psycopg://")
        return v

    @model_validator(mode="after")
    def _unique_keys(self) -> Settings:
        seen: dict[str, int] = {}
        for i, s in enumerate(self.series):
            if s.key in seen:
                raise ConfigError(
                    f"series[{i}].key = {s.key!r} is declared twice (also series[{seen[s.key]}])"
                )
            seen[s.key] = i
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file (the file's contents arrive as init kwargs).
        return (env_settings, init_settings)

    def series_by_key(self, key: str) -> SeriesSpec | None:
        return next((s for s in self.series if s.key == key), None)

