"""The one set of rules every incoming observation meets (forecaster/data/validation.py)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from forecaster.config.settings import ApiSettings, Settings
from forecaster.errors import InvalidInput
from forecaster.data.validation import SeriesRules, check_frame, check_rows
from forecaster.store import migrate
from forecaster.store.tables import Observation, make_engine, make_sessionmaker
from forecaster.usecases.observations import push_observations

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 6, 1, 12, tzinfo=UTC)


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.mark.parametrize(("frequency", "good", "bad", "rule"), [
    ("1h", "2024-03-24T10:00:00Z", "2024-03-24T10:17:00Z", "on the hour (UTC)"),
    ("30min", "2024-03-24T10:30:00Z", "2024-03-24T10:45:00Z", "on the 30min grid from midnight UTC"),
    ("1D", "2024-03-24T00:00:00Z", "2024-03-24T06:00:00Z", "at midnight UTC"),
    ("1B", "2024-03-22T00:00:00Z", "2024-03-23T00:00:00Z", "Monday to Friday"),
    ("1W", "2024-03-24T00:00:00Z", "2024-03-25T00:00:00Z", "weekday SUN"),
    ("1MS", "2024-03-01T00:00:00Z", "2024-03-02T00:00:00Z", "the first of the month"),
])
def test_timestamps_off_the_series_calendar_are_refused_naming_the_rule(frequency: str, good: str, bad: str,
                                                                        rule: str) -> None:
    rules = SeriesRules("k", frequency)
    check_rows([(ts(good), 1.0)], rules, NOW)
    with pytest.raises(InvalidInput) as info:
        check_rows([(ts(good), 1.0), (ts(bad), 2.0)], rules, NOW)
    assert f"k: row 2 (ts={bad}, value=2.0): is off the series' calendar" in str(info.value)
    assert rule in str(info.value) and str(info.value).endswith("nothing was stored")


def test_an_hourly_grid_runs_through_the_first_stored_observation() -> None:
    rules = SeriesRules("yfinance:AAPL:close", "1h", anchor=ts("2024-03-22T13:30:00Z"))  # NYSE opens at :30
    check_rows([(ts("2024-03-22T14:30:00Z"), 1.0)], rules, NOW)
    with pytest.raises(InvalidInput, match="through the series' first observation 2024-03-22T13:30:00Z"):
        check_rows([(ts("2024-03-22T15:00:00Z"), 1.0)], rules, NOW)


def test_exchange_holidays_are_off_a_trading_day_calendar() -> None:
    rules = SeriesRules("yfinance:^GSPC:close", "1B", calendar="XNYS")
    check_rows([(ts("2018-12-31T00:00:00Z"), 1.0), (ts("2019-01-02T00:00:00Z"), 1.0)], rules, NOW)
    with pytest.raises(InvalidInput, match=r"row 1 \(ts=2019-01-01T00:00:00Z.*follows the XNYS trading days"):
        check_rows([(ts("2019-01-01T00:00:00Z"), 1.0)], rules, NOW)
    plain = SeriesRules("push:x", "1B")  # no exchange: every weekday
    check_rows([(ts("2019-01-01T00:00:00Z"), 1.0)], plain, NOW)


def test_the_future_is_refused_beyond_the_configured_tolerance() -> None:
    rules = SeriesRules("k", "1h", future_tolerance_s=3600)
    check_rows([(NOW + dt.timedelta(hours=1), 1.0)], rules, NOW)
    with pytest.raises(InvalidInput, match="is in the future .*observations.future_tolerance_s"):
        check_rows([(NOW + dt.timedelta(hours=2), 1.0)], rules, NOW)


@pytest.mark.parametrize(("value", "refused"), [(1e15, None), (-1e15, None), (1.5e15, "outside the representable range"),
                                                (-1e308, "outside the representable range"),
                                                (float("nan"), "value nan is not a finite number"),
                                                (float("inf"), "value inf is not a finite number"),
                                                (None, "the value is missing")])
def test_a_pushed_value_must_be_finite_and_representable(value: float | None, refused: str | None) -> None:
    rows = [(ts("2024-01-01T00:00:00Z"), value)]
    if refused:
        with pytest.raises(InvalidInput, match=refused):
            check_rows(rows, SeriesRules("k", "1h"), NOW)
    else:
        check_rows(rows, SeriesRules("k", "1h"), NOW)


def test_a_source_frame_names_the_bad_row_by_its_timestamp() -> None:
    frame = pd.DataFrame({"ts": pd.to_datetime(["2024-01-01T00:00:00Z", "2024-01-01T01:17:00Z"]),
                          "value": np.array([1.0, 2.0])})
    with pytest.raises(InvalidInput, match=r"k: csv row ts=2024-01-01T01:17:00Z \(value=2\): is off"):
        check_frame(frame, SeriesRules("k", "1h"), NOW, what="csv row")
    far = pd.DataFrame({"ts": pd.to_datetime(["2100-01-01T00:00:00Z"]), "value": [1.0]})
    with pytest.raises(InvalidInput, match="ts=2100-01-01T00:00:00Z.*in the future"):
        check_frame(far, SeriesRules("k", "1h"), NOW)


@pytest.mark.parametrize("text", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:00"])
def test_times_that_overflow_in_utc_are_refused_not_a_server_error(text: str) -> None:
    with pytest.raises(InvalidInput, match="outside the representable range of times"):
        check_rows([(ts(text), 1.0)], SeriesRules("k", "1h"), NOW)


def test_an_hourly_grid_through_1700_still_takes_2024_on_the_hour() -> None:
    # 324 years apart: more nanoseconds than an int64 holds
    rules = SeriesRules("push:old", "1h", anchor=ts("1700-01-01T00:00:00Z"))
    check_rows([(ts("2024-01-01T00:00:00Z"), 1.0)], rules, NOW)
    check_frame(pd.DataFrame({"ts": pd.to_datetime(["2024-01-01T00:00:00Z"]), "value": [1.0]}), rules, NOW)
    with pytest.raises(InvalidInput, match=r"row 1 \(ts=2024-01-01T00:30:00Z.*on the hour \(UTC\)"):
        check_rows([(ts("2024-01-01T00:30:00Z"), 1.0)], rules, NOW)
    through = SeriesRules("push:old", "1h", anchor=ts("1700-01-01T00:30:00Z"))
    check_rows([(ts("2024-01-01T00:30:00Z"), 1.0)], through, NOW)
    with pytest.raises(InvalidInput, match="through the series' first observation 1700-01-01T00:30:00Z"):
        check_rows([(ts("2024-01-01T00:00:00Z"), 1.0)], through, NOW)


def test_a_push_series_that_began_in_1700_takes_2024(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    migrate.upgrade(engine)
    sm = make_sessionmaker(engine)
    settings = Settings(database_url=sqlite_url, api=ApiSettings(allow_push_create=True))
    try:
        first = push_observations(sm, settings, series_key="push:old", frequency="1h",
                                  rows=[(ts("1700-01-01T00:00:00Z"), 1.0)], now=NOW)
        later = push_observations(sm, settings, series_key="push:old",
                                  rows=[(ts("2024-01-01T00:00:00Z"), 2.0)], now=NOW)
        assert (first.counts.new, later.counts.new) == (1, 1)
        with sm() as session:
            stored = session.scalars(select(Observation.value).order_by(Observation.ts)).all()
        assert stored == [1.0, 2.0]
    finally:
        engine.dispose()
