from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from forecaster.calendar.cron import check_cron
from forecaster.calendar.frequency import season_length
from forecaster.config.loading import load_settings
from forecaster.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
GOOD_SERIES = '[[series]]\nkey = "sine:a"\nsource = "sine"\nfrequency = "1h"\n'


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "forecaster.toml"
    p.write_text(text)
    return p


def test_example_config_loads_with_every_source_it_declares() -> None:
    s = load_settings(ROOT / "forecaster.toml")
    assert {sp.source for sp in s.series} >= {"yfinance", "open-meteo", "sine"}
    assert s.series_by_key("yfinance:^GSPC:close").typed_params().ticker == "^GSPC"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[[series]]\nkey = "x"\nsource = "nope"\nfrequency = "1h"\n', "series[0].source = 'nope'"),
        ('[[series]]\nkey = "x"\nsource = "sine"\nfrequency = "5 mins"\n', "series[0].frequency = '5 mins'"),
        ('[schedule]\nretrain = "0 25 * * *"\n', "schedule.retrain = '0 25 * * *'"),
        ('[schedule]\ningest = "every hour"\n', "schedule.ingest = 'every hour'"),
        (GOOD_SERIES + GOOD_SERIES, "series[1].key = 'sine:a' is declared twice"),
        ('[[series]]\nkey = "y"\nsource = "yfinance"\nfrequency = "1B"\nparams = {}\n', "series[0].params.ticker is missing"),
        ('[[series]]\nkey = "y"\nsource = "open-meteo"\nfrequency = "1h"\n'
         'params = { latitude = "north", longitude = 1, variable = "t" }\n', "latitude = 'north'"),
        ('[[series]]\nkey = "y"\nsource = "sine"\nfrequency = "1h"\nparams = { length = -3 }\n', "length = -3"),
        ('[[series]]\nkey = "y"\nsource = "sine"\nfrequency = "1h"\nmodel = { cell = "transformer" }\n',
         "series[0].model.cell = 'transformer'"),
        ('databse_url = "sqlite://"\n', "databse_url is not a known setting"),
        ('[[series]\nkey=', "not valid TOML"),
    ],
)
def test_invalid_config_names_the_key_and_the_bad_value(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert named in str(info.value)
    assert str(tmp_path / "forecaster.toml") in str(info.value)


@pytest.mark.parametrize(("text", "message"), [
    ("[scheduler]\nlease_check_s = 5\nlease_timeout_s = 9.5\n",
     "scheduler: lease_timeout_s = 9.5 must be at least twice lease_check_s (5), "
     "or a healthy leader would lose its lock between two checks"),
    ("[workers]\nheartbeat_s = 20\nstalled_after_s = 30\n",
     "workers: stalled_after_s = 30 must be at least twice heartbeat_s (20), "
     "or a healthy worker's tasks would be run a second time"),
])
def test_a_timeout_shorter_than_two_of_its_intervals_is_refused_saying_why(tmp_path: Path, text: str,
                                                                           message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == f"{path}: {message}"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'database_url = "sqlite:///a.db"\n[schedule]\nretrain = "0 3 * * *"\n' + GOOD_SERIES)
    monkeypatch.setenv("FORECASTER_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("FORECASTER_SCHEDULE__RETRAIN", "15 4 * * 1-5")
    s = load_settings(path)
    assert s.database_url == "postgresql+psycopg://u@h/db"
    assert s.schedule.retrain == "15 4 * * 1-5"
    assert [sp.key for sp in s.series] == ["sine:a"]


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(tmp_path / "nope.toml")


@pytest.mark.parametrize("expr", ["*/30 * * * *", "0 3 * * *", "0 9-17/2 * jan-jun mon-fri", "5,35 0 1 * 0"])
def test_valid_cron_expressions_pass(expr: str) -> None:
    assert check_cron(expr) == expr


@pytest.mark.parametrize(("freq", "season"), [("1h", 24), ("30min", 48), ("1D", 7), ("1B", 5), ("1W", 52), ("1MS", 12), ("7h", None)])
def test_season_length_follows_the_calendar(freq: str, season: int | None) -> None:
    assert season_length(freq) == season


def test_cli_stops_on_invalid_config_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, '[[series]]\nkey = "x"\nsource = "sine"\nfrequency = "fortnightly"\n')
    proc = subprocess.run([sys.executable, "-m", "forecaster.cli", "--config", str(path), "migrate"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "series[0].frequency = 'fortnightly'" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


# ---------------------------------------------------------------- every value checked at load


YF = '[[series]]\nkey = "y"\nsource = "yfinance"\nfrequency = "1B"\n'


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('snapshot_fallback = true\n' + YF + 'snapshot = "sp500_daly_close"\nparams = { ticker = "^GSPC" }\n',
         "series[0].snapshot = 'sp500_daly_close': is not a bundled snapshot (bundled: greensboro_temp_hourly, nino12_sst_monthly, sf_temp_hourly, sp500_daily_close)"),
        ('[schedule]\nretrain = "0 3 31 2 *"\n',
         "schedule.retrain = '0 3 31 2 *': never fires: day of month '31' does not occur in month '2'"),
        (YF + 'retrain = "0 3 30,31 2 *"\nparams = { ticker = "^GSPC" }\n', "never fires"),
        (YF + 'params = { ticker = "^GSPC", period = "five years" }\n',
         "period = 'five years': is not a Yahoo period (one of: 1d, 5d, 1mo, 3mo, 6mo, 1y, 2y, 5y, 10y, ytd, max)"),
        ('log_level = "chatty"\n', "log_level = 'chatty': is not a log level"),
        (YF + 'exchange = "NOPE"\nparams = { ticker = "^GSPC" }\n', "series[0].exchange = 'NOPE': is not an exchange calendar"),
        ('[observations]\nfuture_tolerance_s = -1\n', "observations.future_tolerance_s = -1"),
        ('[[series]]\nkey = "c"\nsource = "csv"\nfrequency = "1h"\nparams = { path = "a.csv", timezone = "Mars/Olympus" }\n',
         "timezone = 'Mars/Olympus': is not an IANA time zone"),
        ('[[series]]\nkey = "s"\nsource = "sine"\nfrequency = "1h"\nparams = { start = "new year" }\n',
         "start = 'new year': is not an ISO-8601 time"),
    ],
)
def test_values_that_would_fail_later_are_refused_at_load(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert named in str(info.value) and str(tmp_path / "forecaster.toml") in str(info.value)


@pytest.mark.parametrize("expr", ["0 3 29 2 *", "0 3 31 * *", "0 3 31 2 mon", "0 3 */10 2 *"])
def test_crons_that_fire_rarely_still_pass(expr: str) -> None:
    assert check_cron(expr) == expr


def test_log_level_and_api_keys_take_the_spellings_people_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'log_level = "debug"\n')
    assert load_settings(path).log_level == "DEBUG"
    monkeypatch.setenv("FORECASTER_LOG_LEVEL", "warning")
    monkeypatch.setenv("FORECASTER_API_KEYS", "k1")
    s = load_settings(path)
    assert (s.log_level, s.api_keys) == ("WARNING", ["k1"])
    monkeypatch.setenv("FORECASTER_API_KEYS", "k1, k2")
    assert load_settings(path).api_keys == ["k1", "k2"]
    monkeypatch.setenv("FORECASTER_API_KEYS", '["k1", "k2,with comma"]')
    assert load_settings(path).api_keys == ["k1", "k2,with comma"]


@pytest.mark.parametrize(("var", "value", "named"), [
    ("FORECASTER_LOG_LEVEL", "chatty", "log_level = 'chatty' (from environment variable FORECASTER_LOG_LEVEL): "
     "is not a log level"),
    ("FORECASTER_SCHEDULE__INGEST", "0 3 31 2 *", "schedule.ingest = '0 3 31 2 *' (from environment variable "
     "FORECASTER_SCHEDULE__INGEST): never fires"),
    ("FORECASTER_API_KEYS", "[k1", "api_keys = '[k1' (from environment variable FORECASTER_API_KEYS)"),
    ("FORECASTER_SERIES", "garbage", "environment variable FORECASTER_SERIES = 'garbage' is not valid JSON"),
])
def test_an_error_in_an_environment_override_is_blamed_on_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        var: str, value: str, named: str) -> None:
    path = write(tmp_path, 'log_level = "info"\n[schedule]\ningest = "*/30 * * * *"\n')
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert named in str(info.value)
    assert str(path) not in str(info.value)  # the file is fine


def test_cli_names_a_bad_environment_variable_in_one_line_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_SERIES)
    env = {**os.environ, "FORECASTER_LOG_LEVEL": "loud"}
    proc = subprocess.run([sys.executable, "-m", "forecaster.cli", "--config", str(path), "migrate"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: log_level = 'loud' (from environment variable FORECASTER_LOG_LEVEL)")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
