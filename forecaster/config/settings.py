"""Configuration: one TOML file, overridden by ``FORECASTER_*`` environment variables.

``load_settings(path)`` is called once by each entry point and the result passed
down; nothing here builds an engine or reads a file at import time.
"""

from __future__ import annotations

import warnings

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

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
    dom, month, dow = fields[2], fields[3], fields[4]
    if not dom.startswith("*") and dow.startswith("*"):
        days, months = _expand(dom, 2), _expand(month, 3)
        if not any(d <= _MONTH_DAYS[m] for m in months for d in days):
            raise ValueError(f"never fires: day of month {dom!r} does not occur in month {month!r}")
    return " ".join(fields)


_MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


def _expand(text: str, index: int) -> set[int]:
    """The values a (checked) cron field selects."""
    _, lo, hi, names = _CRON_FIELDS[index]
    out: set[int] = set()
    for part in text.lower().split(","):
        rng, _, step = part.partition("/")
        if rng == "*":
            first, last = lo, hi
        else:
            bounds = [names[b] if b in names else int(b) for b in rng.split("-")]
            first, last = bounds[0], bounds[-1] if len(bounds) == 2 or step else bounds[0]
            if step and len(bounds) == 1:
                last = hi
        out.update(range(first, last + 1, int(step or 1)))
    return out


CronExpr = Annotated[str, Field(description="five-field crontab expression")]


def check_frequency(freq: str) -> str:
    """Return ``freq`` if pandas knows it as an offset alias, else raise ValueError."""
    try:
        with warnings.catch_warnings():  # a deprecated alias ('5 mins', 'H') is refused, as pandas 3 does
            warnings.simplefilter("error", FutureWarning)
            offset = pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError, FutureWarning):
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
    exchange: str | None = None  # trading-day calendar of a 1B series (default XNYS for yfinance)
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

    @field_validator("snapshot")
    @classmethod
    def _snapshot(cls, v: str | None) -> str | None:
        from forecaster.data.sources.snapshot import SNAPSHOTS  # forecaster.data.sources imports this module

        if v is not None and v not in SNAPSHOTS:
            raise ValueError(f"is not a bundled snapshot (bundled: {', '.join(sorted(SNAPSHOTS))})")
        return v

    @field_validator("exchange")
    @classmethod
    def _exchange(cls, v: str | None) -> str | None:
        from forecaster.calendar.trading import check_exchange  # imports exchange_calendars: only when set

        return None if v is None else check_exchange(v)

    @property
    def calendar(self) -> str | None:
        """The exchange calendar the series follows: ``exchange``, else XNYS for 1B yfinance series."""
        from forecaster.calendar.trading import default_calendar

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


class WorkersSettings(_Strict):
    """Where retrains and ingests run: in this process, or on `forecaster worker` processes (see README, Scaling out)."""

    queue: Literal["auto", "in-process"] = "auto"  # auto: procrastinate on PostgreSQL, in-process on SQLite
    concurrency: int = Field(default=1, ge=1, le=64)  # tasks one `forecaster worker` runs at once (threads)
    torch_threads: int | None = Field(default=None, ge=1, le=1024)  # a worker's torch threads; None: every core (torch's default)
    fleet_wait_s: float = Field(default=1.0, ge=0, le=60)  # concurrency > 1: how long a train task waits for others of its shape to fleet with (0: never)
    queues: list[Literal["train", "ingest"]] = Field(default_factory=lambda: ["train", "ingest"], min_length=1)
    heartbeat_s: float = Field(default=5.0, ge=0.5)  # a worker writes its heartbeat this often
    stalled_after_s: float = Field(default=30.0, ge=1.0)  # a worker this long without a heartbeat is dead
    stalled_check_s: float = Field(default=10.0, ge=0.5)  # each worker looks for dead workers' tasks this often
    poll_s: float = Field(default=2.0, ge=0.1)  # fallback poll for new tasks (LISTEN/NOTIFY wakes workers at once)
    database_retry_s: float = Field(default=5.0, ge=0.1)  # a worker without its database tries again this often
    shutdown_timeout_s: float = Field(default=110.0, ge=1.0)  # SIGTERM: tasks in hand are flagged aborted after this (a training still ends)

    @model_validator(mode="after")
    def _stalled_covers_heartbeats(self) -> WorkersSettings:
        if self.stalled_after_s < 2 * self.heartbeat_s:
            raise ValueError(
                f"stalled_after_s = {self.stalled_after_s:g} must be at least twice heartbeat_s "
                f"({self.heartbeat_s:g}), or a healthy worker's tasks would be run a second time"
            )
        return self

    def uses_queue(self, database_url: str) -> bool:
        """True when work goes through procrastinate (PostgreSQL, unless ``queue = "in-process"``)."""
        return self.queue == "auto" and database_url.startswith("postgresql")
class ObservationsSettings(_Strict):
    """Rules every incoming observation meets (forecaster/data/validation.py)."""

    future_tolerance_s: float = Field(default=86_400.0, ge=0, le=3.2e8)  # how far past now a timestamp may lie (<= ~10 years)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


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


ENV_PREFIX = "FORECASTER_"


def _env_overrides() -> dict[tuple[str, ...], str]:
    """Setting paths given in the environment, each with the variable that gives it."""
    out: dict[tuple[str, ...], str] = {}
    for name in os.environ:
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper != "FORECASTER_CONFIG":
            out[tuple(upper[len(ENV_PREFIX):].lower().split("__"))] = name
    return out


def _env_for(loc: tuple[Any, ...], env: dict[tuple[str, ...], str]) -> str | None:
    path = tuple(str(p).lower() for p in loc)
    for n in range(len(path), 0, -1):
        if path[:n] in env:
            return env[path[:n]]
    return None


def _describe(exc: ValidationError, *, prefix: str = "", data: Any = None, file: Path | None = None) -> str:
    """One clause per error, naming the key and the bad value; with ``file``, each clause
    is blamed on the environment variable that set the value, or else on the file."""
    env = _env_overrides() if file is not None else {}
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = _loc(((prefix,) if prefix else ()) + loc)
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        var = _env_for(loc, env) if env else None
        origin = "" if file is None or var else f"{file}: "
        if var:  # blamed on the variable, not the file
            where = f"{where} (from environment variable {var})"
        if err["type"] == "missing":
            lines.append(f"{origin}{where} is missing")
            continue
        value = _value_at(data, loc) if data is not None and var is None else err.get("input", _MISSING)
        if value is _MISSING:
            value = err.get("input", _MISSING)
        if var is not None and value is not _MISSING and not isinstance(value, dict | list):
            where, _, source = where.partition(" (from ")
            lines.append(f"{where} = {value!r} (from {source}: {msg}")
            continue
        if err["type"] == "extra_forbidden":
            lines.append(f"{origin}{where} is not a known setting")
        elif isinstance(value, dict) and msg.startswith("params"):
            lines.append(f"{origin}{where}.{msg}")  # nested message already names the key
        elif value is _MISSING or isinstance(value, dict):
            lines.append(f"{origin}{where}: {msg}")
        else:
            lines.append(f"{origin}{where} = {value!r}: {msg}")
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
        raise ConfigError(_describe(exc, data=data, file=file)) from None
    except SettingsError as exc:  # an environment variable that should hold JSON does not
        field = str(exc).split('"')[1] if '"' in str(exc) else ""
        var = next((n for n in os.environ if n.upper() == f"{ENV_PREFIX}{field.upper()}"), f"{ENV_PREFIX}{field.upper()}")
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise ConfigError(f"environment variable {var} = {os.environ.get(var, '')!r} is not valid JSON "
                          f"for {field}{cause}") from None
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    return settings

