"""Configuration: one TOML file, overridden by ``FORECASTER_*`` environment variables.

``load_settings(path)`` is called once by each entry point and the result passed
down; nothing here builds an engine or reads a file at import time.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from forecaster.errors import ConfigError

DEFAULT_CONFIG = "forecaster.toml"
SOURCES = ("yfinance", "open-meteo", "csv", "sine", "push")
FREQUENCY_EXAMPLES = "'5min', '30min', '1h', '1D', '1B', '1W', '1MS'"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- cron

_CRON_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}),
    ("day of week", 0, 7, {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}),
)


def check_cron(expr: str) -> str:
    """Validate a five-field crontab expression; return it normalised.

    Raises:
        ValueError: naming the field and the part that is wrong.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"needs 5 fields (minute hour day month weekday), got {len(fields)}")
    for text, (name, lo, hi, names) in zip(fields, _CRON_FIELDS):
        for part in text.lower().split(","):
            rng, _, step = part.partition("/")
            if step and (not step.isdigit() or int(step) == 0):
                raise ValueError(f"{name} step {step!r} is not a positive number")
            if rng == "*":
                continue
            bounds = rng.split("-")
            if len(bounds) > 2 or not all(bounds):
                raise ValueError(f"{name} {part!r} is not a value, range or step")
            values = []
            for b in bounds:
                if b in names:
                    values.append(names[b])
                elif b.isdigit() and lo <= int(b) <= hi:
                    values.append(int(b))
                else:
                    raise ValueError(f"{name} {b!r} is outside {lo}-{hi}")
            if len(values) == 2 and values[0] > values[1]:
                raise ValueError(f"{name} range {rng!r} runs backwards")
    return " ".join(fields)


CronExpr = Annotated[str, Field(description="five-field crontab expression")]


def check_frequency(freq: str) -> str:
    """Return ``freq`` if pandas knows it as an offset alias, else raise ValueError."""
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError):
        raise ValueError(f"is not a frequency (examples: {FREQUENCY_EXAMPLES})") from None
    if offset is None or getattr(offset, "n", 1) <= 0:
        raise ValueError(f"is not a frequency (examples: {FREQUENCY_EXAMPLES})")
    return freq


def season_length(freq: str) -> int | None:
    """Steps per natural season of a frequency: a day for sub-daily, a week for
    daily, a year for weekly and monthly. None when no season applies."""
    offset = pd.tseries.frequencies.to_offset(freq)
    name = offset.rule_code.upper()
    n = offset.n
    if name in ("B", "C"):
        return 5 if n == 1 else None
    if name == "D":
        return 7 if n == 1 else None
    if name.startswith("W"):
        return 52 if n == 1 else None
    if name in ("MS", "ME", "M"):
        return 12 if n == 1 else None
    try:
        step = pd.Timedelta(offset)
    except (ValueError, TypeError):
        return None
    day = pd.Timedelta(days=1)
    if step < day and (day / step).is_integer() and day / step > 1:
        return int(day / step)
    return None


# ---------------------------------------------------------------- per-source parameters


class YFinanceParams(_Strict):
    ticker: str = Field(min_length=1)
    field: Literal["close", "adjclose"] = "close"
    period: str = "5y"


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


class SineParams(_Strict):
    period: float = Field(default=24, gt=0)
    noise: float = Field(default=0.1, ge=0)
    length: int = Field(default=2000, ge=1, le=1_000_000)
    seed: int = 1
    amplitude: float = 1.0
    level: float = 0.0
    start: str = "2024-01-01T00:00:00Z"


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
    amp: bool = False  # CUDA only: bf16 autocast (not verified on a GPU yet; off by default)
    interval_level: float = Field(default=0.9, gt=0, lt=1)
    max_train_points: int | None = Field(default=None, ge=10)
    # Statistical candidates that compete with the model (README "Candidates"); [] = none.
    candidates: tuple[Literal["ets", "ets_seasonal", "theta", "arima"], ...] = (
        "ets", "ets_seasonal", "theta", "arima")


# ---------------------------------------------------------------- series


class SeriesSpec(_Strict):
    key: str = Field(min_length=1, max_length=200)
    source: str
    frequency: str
    params: dict[str, Any] = Field(default_factory=dict)
    unit: str | None = None
    model: ModelSpec = Field(default_factory=ModelSpec)
    snapshot: str | None = None  # bundled offline snapshot used when the source is unreachable
    ingest: str | None = None  # per-series cron overrides
    retrain: str | None = None

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

    @model_validator(mode="after")
    def _params_fit_source(self) -> SeriesSpec:
        model = PARAMS_BY_SOURCE[self.source]
        try:
            model.model_validate(self.params)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, prefix="params", data=self.params)) from None
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
        if self.lease_timeout_s < 2 * self.lease_check_s:
            raise ValueError(
                f"lease_timeout_s = {self.lease_timeout_s:g} must be at least twice lease_check_s "
                f"({self.lease_check_s:g}), or a healthy leader would lose its lock between two checks"
            )
        return self


class MonitoringSettings(_Strict):
    accuracy_window: int = Field(default=100, ge=1)  # recent actuals that live accuracy is judged on
    drift_min_actuals: int = Field(default=20, ge=1)  # no drift verdict before this many actuals
    retrain_on_drift: bool = False  # a drifting champion triggers a retrain of its series


class Settings(BaseSettings):
    """Everything the service reads at start."""

    model_config = SettingsConfigDict(
        env_prefix="FORECASTER_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    database_url: str = "sqlite:///forecaster.db"
    api_keys: list[str] = Field(default_factory=list)
    schedule: Schedule = Field(default_factory=Schedule)
    sources: SourcesSettings = Field(default_factory=SourcesSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    series: list[SeriesSpec] = Field(default_factory=list)
    snapshot_fallback: bool = True
    log_level: str = "INFO"
    config_path: str | None = None

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


# ---------------------------------------------------------------- loading


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "literal[", "constrained-")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _value_at(data: Any, loc: tuple[Any, ...]) -> Any:
    cur = data
    for part in loc:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return cur


_MISSING = object()


def _describe(exc: ValidationError, *, prefix: str = "", data: Any = None) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = _loc(((prefix,) if prefix else ()) + loc)
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err["type"] == "missing":
            lines.append(f"{where} is missing")
            continue
        value = _value_at(data, loc) if data is not None else err.get("input", _MISSING)
        if value is _MISSING:
            value = err.get("input", _MISSING)
        if err["type"] == "extra_forbidden":
            lines.append(f"{where} is not a known setting")
        elif isinstance(value, dict) and msg.startswith("params"):
            lines.append(f"{where}.{msg}")  # nested message already names the key
        elif value is _MISSING or isinstance(value, dict):
            lines.append(f"{where}: {msg}")
        else:
            lines.append(f"{where} = {value!r}: {msg}")
    return "; ".join(lines)


def config_path_from_env(path: str | os.PathLike[str] | None = None) -> Path:
    """The config file to read: ``path``, else ``$FORECASTER_CONFIG``, else ./forecaster.toml."""
    return Path(path or os.environ.get("FORECASTER_CONFIG") or DEFAULT_CONFIG)


def load_settings(path: str | os.PathLike[str] | None = None, *, required: bool = False) -> Settings:
    """Read the TOML file (if present) and the environment into Settings.

    Raises:
        ConfigError: naming the file, the key and the bad value.
    """
    file = config_path_from_env(path)
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{file}: cannot be read: {exc.strerror}") from None
    elif required or path is not None:
        raise ConfigError(f"{file}: no such config file")
    try:
        settings = Settings(**data, config_path=str(file.resolve()) if file.exists() else None)
    except ValidationError as exc:
        raise ConfigError(f"{file}: {_describe(exc, data=data)}") from None
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    return settings

