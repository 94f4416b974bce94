"""Sources against real HTTP on loopback: the fakes in tests/fakes.py, serving bundled data."""

from __future__ import annotations

import datetime as dt
import logging
import math
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings as hyp_settings, strategies as st
from sqlalchemy import select

from forecaster.config.settings import (
    OpenMeteoSettings,
    SeriesSpec,
    Settings,
    SourcesSettings,
    YFinanceSettings,
)
from forecaster.errors import InvalidInput, SourceDataError, SourceUnavailable
from forecaster.data.sources import SNAPSHOTS, FetchResult, fetch, load_snapshot, tidy_frame
from forecaster.data.sources.open_meteo import fetch_open_meteo, parse_response
from forecaster.store.tables import Observation
from forecaster.usecases.ingest import ingest_series
from tests.fakes import FakeOpenMeteo, FakeServer, FakeYahoo, Recorded
from tests.fakes import fake_open_meteo, fake_yahoo  # noqa: F401  (pytest fixtures)

SF = {"latitude": 37.77, "longitude": -122.42, "variable": "temperature_2m"}
WINTER = dt.datetime(2024, 1, 15, 12, 34, tzinfo=dt.UTC)
SUMMER = dt.datetime(2024, 7, 15, 12, 34, tzinfo=dt.UTC)


def spec(source: str, frequency: str, key: str = "test:series", **params: object) -> SeriesSpec:
    return SeriesSpec(key=key, source=source, frequency=frequency, params=params)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def assert_storable(result: FetchResult) -> pd.DataFrame:
    frame = result.frame
    assert list(frame.columns) == ["ts", "value"]
    assert str(frame["ts"].dt.tz) == "UTC"
    assert frame["value"].dtype == np.float64
    assert frame["ts"].is_monotonic_increasing and frame["ts"].is_unique
    assert np.isfinite(frame["value"]).all()
    return frame


# ---------------------------------------------------------------- open-meteo


@pytest.fixture
def om_settings(fake_open_meteo: FakeOpenMeteo) -> Settings:
    return Settings(sources=SourcesSettings(open_meteo=OpenMeteoSettings(
        archive_url=f"{fake_open_meteo.url}/v1/archive",
        forecast_url=f"{fake_open_meteo.url}/v1/forecast", timeout_s=2)))


def fetch_om(fake: FakeOpenMeteo, settings: Settings, now: dt.datetime, frequency: str = "1h",
             since: dt.datetime | None = None, **params: object) -> FetchResult:
    fake.now = now
    merged = {**SF, "history_days": 10, "timezone": "America/Los_Angeles", **params}
    return fetch_open_meteo(spec("open-meteo", frequency, **merged), settings, since=since, now=now)


@pytest.mark.parametrize("now", [WINTER, SUMMER])
def test_open_meteo_hourly_is_asked_in_gmt_and_stored_on_utc_hours(fake_open_meteo, om_settings, now):
    frame = assert_storable(fetch_om(fake_open_meteo, om_settings, now))  # timezone America/Los_Angeles
    archive, forecast = fake_open_meteo.requests
    day = now.date()
    assert archive == Recorded("GET", "/v1/archive", {
        **{k: str(v) for k, v in SF.items() if k != "variable"}, "hourly": "temperature_2m",
        "timezone": "GMT", "start_date": str(day - dt.timedelta(days=10)),
        "end_date": str(day - dt.timedelta(days=5))})
    assert forecast.path == "/v1/forecast" and forecast.query["timezone"] == "GMT"
    assert (forecast.query["past_days"], forecast.query["forecast_days"]) == ("7", "1")
    first = pd.Timestamp(day - dt.timedelta(days=10)).tz_localize("UTC")  # UTC midnight, the archive's start
    last = pd.Timestamp(now).floor("h")  # later hours are forecasts
    assert list(frame["ts"]) == list(pd.date_range(first, last, freq="h"))
    expected = [fake_open_meteo.hourly_value(t) for t in frame["ts"]]
    assert frame["value"].tolist() == expected


def test_open_meteo_local_hourly_times_become_utc():
    body = {"utc_offset_seconds": -8 * 3600,
            "hourly": {"time": ["2024-01-15T00:00", "2024-01-15T01:00"], "temperature_2m": [1.5, None]}}
    frame = parse_response(body, section="hourly", variable="temperature_2m", label="open-meteo")
    assert list(frame["ts"]) == [pd.Timestamp("2024-01-15T08:00Z"), pd.Timestamp("2024-01-15T09:00Z")]
    assert frame["value"].iloc[0] == 1.5 and math.isnan(frame["value"].iloc[1])


def test_open_meteo_forecast_wins_where_it_has_a_value(fake_open_meteo, om_settings):
    fake_open_meteo.forecast_offset = 100.0
    fake_open_meteo.forecast_nulls = 5  # the forecast's first hours are null: the archive's stay
    result = fetch_om(fake_open_meteo, om_settings, WINTER)
    frame = assert_storable(result).set_index("ts")["value"]
    forecast_start = pd.Timestamp("2024-01-08T00:00:00Z")  # UTC midnight 7 past days ago
    plain = pd.Series([fake_open_meteo.hourly_value(t) for t in frame.index], index=frame.index)
    boosted = frame.index >= forecast_start + pd.Timedelta(hours=5)
    assert (frame[boosted] - plain[boosted]).round(6).eq(100).all()
    assert frame[~boosted].equals(plain[~boosted])
    assert result.rejected == 0


def test_open_meteo_daily_values_stamped_at_midnight_utc_of_local_date(fake_open_meteo, om_settings):
    result = fetch_om(fake_open_meteo, om_settings, WINTER, frequency="1D",
                      variable="temperature_2m_mean", timezone="Asia/Tokyo", temperature_unit="fahrenheit")
    frame = assert_storable(result)
    query = fake_open_meteo.requests[0].query
    assert query["daily"] == "temperature_2m_mean" and "hourly" not in query
    assert query["temperature_unit"] == "fahrenheit"
    # 2024-01-15 12:34Z is 21:34 in Tokyo: that day is not over, so it is left out
    assert list(frame["ts"]) == list(pd.date_range("2024-01-05", "2024-01-14", freq="D", tz="UTC"))
    expected = [fake_open_meteo.daily_value(t.date(), 9 * 3600, "fahrenheit") for t in frame["ts"]]
    assert frame["value"].tolist() == expected


def test_open_meteo_hourly_in_a_half_hour_zone_is_stored_on_utc_hours(fake_open_meteo, om_settings, sm):
    # Asia/Kolkata is +05:30: its local hours are :30 in UTC, off an hourly series' grid
    params = {**SF, "history_days": 10, "timezone": "Asia/Kolkata"}
    s = SeriesSpec(key="open-meteo:kolkata:t", source="open-meteo", frequency="1h", params=params)
    out = ingest_series(sm, om_settings, s)
    assert (out.status, out.error) == ("ok", None)
    with sm() as session:
        stored = session.execute(select(Observation.ts, Observation.value).order_by(Observation.ts)).all()
    assert out.rows_new == len(stored) > 24 * 10
    stamps = [pd.Timestamp(t).tz_localize("UTC") if t.tzinfo is None else pd.Timestamp(t) for t, _ in stored]
    start = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=10)
    assert stamps == list(pd.date_range(pd.Timestamp(start, tz="UTC"), periods=len(stamps), freq="h"))
    assert [v for _, v in stored] == [fake_open_meteo.hourly_value(t) for t in stamps]
    assert {r.query["timezone"] for r in fake_open_meteo.requests} == {"GMT"}


def test_open_meteo_skips_the_archive_when_since_is_recent(fake_open_meteo, om_settings):
    fetch_om(fake_open_meteo, om_settings, WINTER, since=WINTER - dt.timedelta(days=2))
    assert [r.path for r in fake_open_meteo.requests] == ["/v1/forecast"]
    fetch_om(fake_open_meteo, om_settings, WINTER, since=WINTER - dt.timedelta(days=30))
    assert [r.path for r in fake_open_meteo.requests[1:]] == ["/v1/archive", "/v1/forecast"]


def test_open_meteo_fetch_twice_asks_twice(fake_open_meteo, om_settings):
    s = spec("open-meteo", "1h", **SF, history_days=8)
    first, second = fetch(s, om_settings), fetch(s, om_settings)
    assert len(fake_open_meteo.paths("/v1/forecast")) == 2
    assert first.frame["ts"].iloc[0] == second.frame["ts"].iloc[0]


@pytest.mark.parametrize(("mode", "error", "says"), [
    ("429", SourceUnavailable, "HTTP 429 from 127.0.0.1"),
    ("500", SourceUnavailable, "HTTP 500 from 127.0.0.1"),
    ("malformed", SourceDataError, "malformed JSON"),
    ("empty", SourceDataError, "no hourly times for 'temperature_2m'"),
    ("no_variable", SourceDataError, "without hourly variable 'temperature_2m'"),
    ("unknown", SourceDataError, "HTTP 400 from 127.0.0.1"),
])
def test_open_meteo_failures_name_coordinates_and_cause(fake_open_meteo, om_settings, mode, error, says):
    fake_open_meteo.mode = mode
    with pytest.raises(error) as info:
        fetch_om(fake_open_meteo, om_settings, WINTER)
    assert "open-meteo 37.77,-122.42" in str(info.value)
    assert says in str(info.value)


def test_open_meteo_bad_coordinates_quote_the_reason(fake_open_meteo, om_settings):
    fake_open_meteo.mode = "unknown"
    with pytest.raises(SourceDataError, match="Latitude must be in range of -90 to 90"):
        fetch_om(fake_open_meteo, om_settings, WINTER)


def test_open_meteo_unreachable_or_slow_is_retryable(fake_open_meteo, om_settings):
    down = Settings(sources=SourcesSettings(open_meteo=OpenMeteoSettings(
        archive_url=f"{closed_port_url()}/v1/archive", forecast_url=f"{closed_port_url()}/v1/forecast")))
    with pytest.raises(SourceUnavailable, match="cannot reach 127.0.0.1"):
        fetch_om(fake_open_meteo, down, WINTER)
    fake_open_meteo.delay_s = 1.0
    slow = Settings(sources=SourcesSettings(open_meteo=OpenMeteoSettings(
        archive_url=om_settings.sources.open_meteo.archive_url, forecast_url="x", timeout_s=0.2)))
    with pytest.raises(SourceUnavailable, match="within 0.2 s"):
        fetch_om(fake_open_meteo, slow, WINTER)


def test_open_meteo_refuses_other_frequencies(om_settings):
    with pytest.raises(InvalidInput, match="'15min'.*'1h' or '1D'"):
        fetch(spec("open-meteo", "15min", **SF), om_settings)


# ---------------------------------------------------------------- yfinance


@pytest.fixture
def yahoo_settings(fake_yahoo: FakeYahoo) -> Settings:
    return Settings(sources=SourcesSettings(yfinance=YFinanceSettings(base_url=fake_yahoo.url, timeout_s=5)))


def chart_calls(fake: FakeYahoo) -> list[Recorded]:
    return [r for r in fake.paths("/v8/finance/chart/") if r.query.get("range") != "1d"]


def test_yfinance_daily_close_on_its_trading_days(fake_yahoo, yahoo_settings):
    result = fetch(spec("yfinance", "1B", ticker="^GSPC", period="5y"), yahoo_settings)
    frame = assert_storable(result)
    bars = fake_yahoo.bars
    assert list(frame["ts"]) == [pd.Timestamp(d, tz="UTC") for d in bars["date"]]
    assert frame["value"].tolist() == bars["close"].tolist()
    snapshot = load_snapshot("sp500_daily_close").tail(300).reset_index(drop=True)
    pd.testing.assert_frame_equal(frame, snapshot)
    (call,) = chart_calls(fake_yahoo)
    assert call.path == "/v8/finance/chart/%5EGSPC"
    assert (call.query["range"], call.query["interval"]) == ("5y", "1d")


def test_yfinance_adjclose_differs_from_close(fake_yahoo, yahoo_settings):
    close = fetch(spec("yfinance", "1D", ticker="^GSPC"), yahoo_settings).frame
    adj = fetch(spec("yfinance", "1D", ticker="^GSPC", field="adjclose"), yahoo_settings).frame
    assert adj["value"].tolist() == fake_yahoo.bars["adjclose"].tolist()
    assert (adj["value"] < close["value"]).all()
    assert adj["ts"].equals(close["ts"])


def test_yfinance_intraday_bars_keep_their_instant_in_utc(fake_yahoo, yahoo_settings):
    frame = assert_storable(fetch(spec("yfinance", "1h", ticker="^GSPC"), yahoo_settings))
    assert list(frame["ts"]) == list(fake_yahoo.hourly["ts"])
    assert frame["ts"].iloc[0].hour == 14 and frame["ts"].iloc[0].minute == 30  # 09:30 New York
    assert frame["value"].tolist() == fake_yahoo.hourly["close"].tolist()


def test_yfinance_fetch_twice_asks_twice(fake_yahoo, yahoo_settings):
    s = spec("yfinance", "1B", ticker="^GSPC")
    fetch(s, yahoo_settings)
    fetch(s, yahoo_settings)
    assert len(chart_calls(fake_yahoo)) == 2


def test_yfinance_follows_a_new_base_url(fake_yahoo, yahoo_settings):
    fetch(spec("yfinance", "1B", ticker="^GSPC"), yahoo_settings)
    other = FakeYahoo().start()
    try:
        moved = Settings(sources=SourcesSettings(yfinance=YFinanceSettings(base_url=other.url)))
        fetch(spec("yfinance", "1B", ticker="^GSPC"), moved)
        assert [r.path for r in other.requests if r.path == "/v1/test/getcrumb"]  # fresh crumb
        assert len(chart_calls(other)) == 1 and len(chart_calls(fake_yahoo)) == 1
    finally:
        other.stop()


@pytest.mark.parametrize(("mode", "error", "says"), [
    ("429", SourceUnavailable, "HTTP 429 from 127.0.0.1"),
    ("500", SourceUnavailable, "HTTP 500 from 127.0.0.1"),
    ("malformed", SourceDataError, "malformed JSON"),
    ("empty", SourceDataError, "no price data found"),
    ("unknown", SourceDataError, "HTTP 404 from 127.0.0.1:.*symbol may be delisted"),
])
def test_yfinance_failures_name_ticker_and_cause(fake_yahoo, yahoo_settings, mode, error, says):
    fake_yahoo.mode = mode
    with pytest.raises(error, match=f"yfinance NOPE: .*{says}"):
        fetch(spec("yfinance", "1B", ticker="NOPE"), yahoo_settings)


def test_yfinance_unreachable_is_retryable():
    down = Settings(sources=SourcesSettings(yfinance=YFinanceSettings(base_url=closed_port_url())))
    with pytest.raises(SourceUnavailable, match="yfinance \\^GSPC: cannot reach 127.0.0.1"):
        fetch(spec("yfinance", "1B", ticker="^GSPC"), down)


def test_yfinance_refuses_frequencies_without_bars(fake_yahoo, yahoo_settings):
    with pytest.raises(InvalidInput, match="'2h'"):
        fetch(spec("yfinance", "2h", ticker="^GSPC"), yahoo_settings)
    assert fake_yahoo.requests == []


# ---------------------------------------------------------------- csv, sine, push, snapshots


def write_sf_csv(path: Path, rows: int = 48) -> pd.DataFrame:
    snap = pd.read_csv(Path(__file__).parents[1] / "forecaster/snapshots/sf_temp_hourly.csv").head(rows)
    data = snap.rename(columns={"ts": "time", "value": "temp_f"})
    data.loc[3, "temp_f"] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    data.to_csv(path, index=False)
    return snap


def test_csv_relative_path_starts_at_the_config_folder(tmp_path, monkeypatch):
    snap = write_sf_csv(tmp_path / "conf" / "data" / "sf.csv")
    monkeypatch.chdir(tmp_path)
    settings = Settings(config_path=str(tmp_path / "conf" / "forecaster.toml"))
    s = spec("csv", "1h", path="data/sf.csv", time_column="time", value_column="temp_f")
    result = fetch(s, settings)
    frame = assert_storable(result)
    assert len(frame) == 47 and result.rejected == 1
    assert result.notes == ("dropped 1 rows with NaN/inf values",)
    expected = snap.drop(index=3)
    assert frame["value"].tolist() == expected["value"].tolist()
    assert list(frame["ts"]) == list(pd.to_datetime(expected["ts"]))


def test_csv_without_config_file_starts_at_cwd_and_localises(tmp_path, monkeypatch):
    pd.DataFrame({"ts": ["2024-07-01 00:00", "2024-07-01 01:00"], "value": [1, 2]}).to_csv(
        tmp_path / "x.csv", index=False)
    monkeypatch.chdir(tmp_path)
    frame = fetch(spec("csv", "1h", path="x.csv", timezone="America/Los_Angeles"), Settings()).frame
    assert frame["ts"].iloc[0] == pd.Timestamp("2024-07-01T07:00:00Z")


def test_csv_missing_column_or_file_names_path_and_columns(tmp_path):
    write_sf_csv(tmp_path / "sf.csv")
    settings = Settings(config_path=str(tmp_path / "forecaster.toml"))
    with pytest.raises(InvalidInput) as info:
        fetch(spec("csv", "1h", path="sf.csv", time_column="time", value_column="temp"), settings)
    assert str(tmp_path / "sf.csv") in str(info.value)
    assert "'temp'" in str(info.value) and "columns found: time, temp_f" in str(info.value)
    with pytest.raises(SourceDataError, match=f"{tmp_path / 'gone.csv'}: no such file"):
        fetch(spec("csv", "1h", path="gone.csv"), settings)


def test_csv_from_a_url(tmp_path):
    class CsvServer(FakeServer):
        def answer(self, req: Recorded) -> tuple[int, dict[str, str], bytes]:
            return 200, {"Content-Type": "text/csv"}, b"ts,value\n2024-01-01T00:00:00Z,1.5\n"

    server = CsvServer().start()
    try:
        frame = fetch(spec("csv", "1h", path=f"{server.url}/data.csv"), Settings()).frame
    finally:
        server.stop()
    assert frame["value"].tolist() == [1.5]


def test_sine_is_the_same_every_time():
    s = spec("sine", "1h", length=500, seed=7, noise=0.3, period=24)
    first, second = fetch(s, Settings()).frame, fetch(s, Settings()).frame
    pd.testing.assert_frame_equal(first, second)
    assert len(first) == 500 and first["ts"].iloc[0] == pd.Timestamp("2024-01-01T00:00:00Z")
    other = fetch(spec("sine", "1h", length=500, seed=8, noise=0.3), Settings()).frame
    assert not np.allclose(first["value"], other["value"])


def test_sine_without_noise_follows_the_formula():
    frame = fetch(spec("sine", "1D", length=10, noise=0, amplitude=2, level=5, period=4,
                       start="2024-03-01"), Settings()).frame
    expected = 5 + 2 * np.sin(2 * np.pi * np.arange(10) / 4)
    np.testing.assert_allclose(frame["value"], expected)
    assert frame["ts"].iloc[-1] == pd.Timestamp("2024-03-10T00:00:00Z")


def test_push_series_cannot_be_fetched():
    with pytest.raises(InvalidInput, match="push:x is a push series.*POST observations"):
        fetch(spec("push", "1h", key="push:x"), Settings())


def test_fetch_logs_one_line(caplog):
    caplog.set_level(logging.INFO, logger="forecaster")
    fetch(spec("sine", "1h", key="sine:demo", length=10), Settings())
    assert any(r.getMessage().startswith("source.fetch series=sine:demo source=sine rows=10")
               for r in caplog.records)


def test_snapshots_load_and_unknown_names_are_listed():
    for name in SNAPSHOTS:
        frame = load_snapshot(name)
        assert len(frame) > 700 and str(frame["ts"].dt.tz) == "UTC"
    with pytest.raises(InvalidInput, match="sf_temp_hourly, sp500_daily_close"):
        load_snapshot("nope")


# ---------------------------------------------------------------- tidy_frame


def test_tidy_drops_non_finite_and_keeps_last_duplicate():
    raw = pd.DataFrame({
        "ts": ["2024-01-01T02:00:00Z", "2024-01-01T00:00:00Z", "2024-01-01T01:00:00+01:00",
               "2024-01-01T01:00:00Z", "2024-01-01T03:00:00Z", "2024-01-01T04:00:00Z"],
        "value": [2.0, 1.0, 9.0, np.inf, -np.inf, np.nan],
    })
    result = tidy_frame(raw, label="demo")
    assert result.frame["ts"].tolist() == list(pd.to_datetime(
        ["2024-01-01T00:00:00Z", "2024-01-01T02:00:00Z"]))
    assert result.frame["value"].tolist() == [9.0, 2.0]  # 01:00+01:00 is 00:00Z and comes later
    assert result.rejected == 4
    assert result.notes == ("dropped 3 rows with NaN/inf values", "1 duplicate timestamps: kept the last")


def test_tidy_refuses_naive_times_without_a_timezone():
    raw = pd.DataFrame({"ts": ["2024-01-01 00:00"], "value": [1.0]})
    refused = "series-a: timestamp '2024-01-01 00:00:00' has no UTC offset.*timezone"
    with pytest.raises(InvalidInput, match=refused):
        tidy_frame(raw, label="series-a")
    frame = tidy_frame(raw, label="series-a", timezone="Europe/Berlin").frame
    assert frame["ts"].iloc[0] == pd.Timestamp("2023-12-31T23:00:00Z")


def test_tidy_names_the_first_bad_value():
    with pytest.raises(InvalidInput, match="'yesterday'"):
        tidy_frame(pd.DataFrame({"ts": ["2024-01-01T00:00Z", "yesterday"], "value": [1, 2]}), label="x")
    with pytest.raises(InvalidInput, match="value 'abc' is not a number"):
        tidy_frame(pd.DataFrame({"ts": ["2024-01-01T00:00Z"], "value": ["abc"]}), label="x")
    with pytest.raises(InvalidInput, match="ambiguous or does not exist in America/New_York"):
        tidy_frame(pd.DataFrame({"ts": ["2024-11-03 01:30"], "value": [1]}), label="x",
                   timezone="America/New_York")
    with pytest.raises(InvalidInput, match="no value column 'v' \\(columns found: ts, value\\)"):
        tidy_frame(pd.DataFrame({"ts": [], "value": []}), label="x", value_col="v")


@hyp_settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.none())), max_size=40))
def test_tidy_output_is_sorted_unique_finite_and_last_wins(rows):
    start = pd.Timestamp("2024-01-01T00:00:00Z")
    raw = pd.DataFrame({"ts": [start + pd.Timedelta(hours=h) for h, _ in rows],
                        "value": pd.Series([v for _, v in rows], dtype="float64")})
    result = tidy_frame(raw, label="prop")
    frame = result.frame
    assert frame["ts"].is_monotonic_increasing and frame["ts"].is_unique
    assert np.isfinite(frame["value"]).all()
    assert result.rejected == len(rows) - len(frame)
    expected: dict[pd.Timestamp, float] = {}
    for h, v in rows:
        if v is not None and math.isfinite(v):
            expected[start + pd.Timedelta(hours=h)] = v
    assert dict(zip(frame["ts"], frame["value"])) == expected
