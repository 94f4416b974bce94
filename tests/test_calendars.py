"""Trading-day series follow their exchange's calendar (exchange_calendars): the next target
skips holidays, the exchange is set per series, and holiday targets no longer go unscored."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from forecaster.calendar.trading import default_calendar
from forecaster.config.loading import load_settings
from forecaster.store.tables import Forecast
from forecaster.usecases.forecasting import next_target_ts, refresh_after_ingest
from forecaster.usecases.ingest import ingest_series

UTC = dt.timezone.utc


def day(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_the_next_trading_day_skips_exchange_holidays() -> None:
    assert next_target_ts(day("2018-12-31"), "1B", "XNYS") == day("2019-01-02")  # New Year's Day
    assert next_target_ts(day("2024-07-03"), "1B", "XNYS") == day("2024-07-05")  # Independence Day
    assert next_target_ts(day("2024-03-28"), "1B", "XNYS") == day("2024-04-01")  # Good Friday
    assert next_target_ts(day("2024-03-28"), "1B", "XLON") == day("2024-04-02")  # Good Friday, Easter Monday
    assert next_target_ts(day("2018-12-31"), "1B") == day("2019-01-01")  # no exchange: weekdays


def test_the_exchange_is_set_per_series_with_xnys_for_daily_yfinance_bars(tmp_path: Path) -> None:
    path = tmp_path / "forecaster.toml"
    path.write_text('[[series]]\nkey = "yfinance:^GSPC:close"\nsource = "yfinance"\nfrequency = "1B"\n'
                    'params = { ticker = "^GSPC" }\n'
                    '[[series]]\nkey = "yfinance:^FTSE:close"\nsource = "yfinance"\nfrequency = "1B"\n'
                    'exchange = "xlon"\nparams = { ticker = "^FTSE" }\n'
                    '[[series]]\nkey = "yfinance:AAPL:hourly"\nsource = "yfinance"\nfrequency = "1h"\n'
                    'params = { ticker = "AAPL", period = "1mo" }\n')
    s = load_settings(path)
    assert [sp.calendar for sp in s.series] == ["XNYS", "XLON", None]
    assert default_calendar("push", "1B") is None


def test_a_forecast_for_the_day_after_a_holiday_is_scored(tmp_path: Path, sm: sessionmaker[Session]) -> None:
    sessions = pd.bdate_range("2018-11-01", "2018-12-31")
    sessions = sessions[~sessions.isin(pd.to_datetime(["2018-11-22", "2018-12-05", "2018-12-25"]))]
    csv = tmp_path / "spx.csv"
    csv.write_text("ts,value\n" + "".join(f"{d:%Y-%m-%d}T00:00:00Z,{2700 + i}\n" for i, d in enumerate(sessions)))
    (tmp_path / "forecaster.toml").write_text(
        '[[series]]\nkey = "csv:spx"\nsource = "csv"\nfrequency = "1B"\nexchange = "XNYS"\n'
        'params = { path = "spx.csv" }\n')
    s = load_settings(tmp_path / "forecaster.toml")
    assert ingest_series(sm, s, s.series[0], after_write=refresh_after_ingest).status == "ok"
    with sm() as session:
        # A path of 5 trading days (the 1B default): New Year's Day is skipped at every step.
        path = session.execute(select(Forecast.step, Forecast.target_ts).order_by(Forecast.step)).all()
        assert path == [(k + 1, day(d)) for k, d in enumerate(
            ["2019-01-02", "2019-01-03", "2019-01-04", "2019-01-07", "2019-01-08"])]
    with csv.open("a") as f:
        f.write("2019-01-02T00:00:00Z,2510.03\n")
    assert ingest_series(sm, s, s.series[0], after_write=refresh_after_ingest).rows_new == 1
    with sm() as session:
        scored = session.scalars(select(Forecast).where(Forecast.target_ts == day("2019-01-02"))).one()
        assert scored.actual == 2510.03 and scored.error is not None


def test_a_holiday_in_a_source_answer_is_rejected_naming_the_row(tmp_path: Path, sm: sessionmaker[Session]) -> None:
    (tmp_path / "spx.csv").write_text("ts,value\n2018-12-31T00:00:00Z,1\n2019-01-01T00:00:00Z,2\n")
    (tmp_path / "forecaster.toml").write_text(
        '[[series]]\nkey = "csv:spx"\nsource = "csv"\nfrequency = "1B"\nexchange = "XNYS"\n'
        'params = { path = "spx.csv" }\n')
    s = load_settings(tmp_path / "forecaster.toml")
    out = ingest_series(sm, s, s.series[0])
    assert (out.status, out.rows_new, out.rows_rejected) == ("ok", 1, 1)  # the trading day is stored
    assert "csv row ts=2019-01-01T00:00:00Z" in (out.rejection or "") and "XNYS trading days" in (out.rejection or "")


def test_importing_the_api_and_its_forecast_route_leaves_exchange_calendars_out() -> None:
    code = ("import sys, api.app, api.routes.forecasts, forecaster.usecases.forecasting, forecaster.config.loading; "
            "print('exchange_calendars' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
