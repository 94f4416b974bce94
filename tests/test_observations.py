"""Nothing a client sends can break a series: pushes are checked row by row against the
series (atomic: one bad row stores nothing), and an admin can delete what got in before,
over the API and the CLI, with the stored forecast and live accuracy following."""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from forecaster.store.tables import Forecast, IngestRun, Observation, make_engine, make_sessionmaker, write_session
from forecaster.usecases.forecasting import refresh_forecast
from forecaster.store.series import series_by_key
from tests.api_server import BASELINE, PUSHED, SPX, Api

PROBLEM = "application/problem+json"
UTC = dt.timezone.utc
HOURS = [f"2024-05-01T{h:02d}:00:00Z" for h in range(24)]


def push(api: Api, key: str, rows: list[dict[str, Any]]) -> httpx.Response:
    return api.client.post(f"/v1/series/{key}/observations", json=rows, headers=api.admin)


def count(api: Api, key: str) -> int:
    return int(api.client.get(f"/v1/series/{key}").json()["observation_count"])


def forecast_target(api: Api, key: str) -> str:
    return str(api.client.get(f"/v1/series/{key}/forecast").json()["target_ts"])


@pytest.mark.parametrize(("rows", "named"), [
    ([{"ts": "2999-01-01T00:00:00Z", "value": 0.4}], "row 1 (ts=2999-01-01T00:00:00Z, value=0.4): ts "
     "2999-01-01T00:00:00Z is in the future"),
    ([{"ts": HOURS[0], "value": 1.0}, {"ts": "2024-03-24T10:17:00Z", "value": 1.0}],
     "row 2 (ts=2024-03-24T10:17:00Z, value=1.0): is off the series' calendar: a 1h series takes timestamps "
     "on the hour (UTC)"),
    ([{"ts": HOURS[0], "value": 1.0}, {"ts": HOURS[1], "value": 1e308}], "row 2 (ts=2024-05-01T01:00:00Z, "
     "value=1e+308): value 1e+308 is outside the representable range"),
    ([{"ts": "1066-10-14T00:00:00Z", "value": 1.0}], "row 1 (ts=1066-10-14T00:00:00Z, value=1.0): ts "
     "1066-10-14T00:00:00Z is before 1700-01-01"),
])
def test_a_bad_row_is_a_422_naming_it_and_the_rule_and_nothing_is_stored(sqlite_api: Api, rows: list[dict[str, Any]],
                                                                         named: str) -> None:
    r = push(sqlite_api, PUSHED, rows)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["detail"] == f"{PUSHED}: {named}" + r.json()["detail"].split(named, 1)[1]
    assert "nothing was stored" in r.json()["detail"]
    assert count(sqlite_api, PUSHED) == 0  # the valid rows of that request were not stored either


def test_the_year_2999_cannot_damage_a_series_and_its_forecast_stays(sqlite_api: Api) -> None:
    before = forecast_target(sqlite_api, BASELINE)
    n = count(sqlite_api, BASELINE)
    r = sqlite_api.client.post(f"/v1/series/{BASELINE}/observations",
                               content=f"ts,value\n2999-01-01T00:00:00Z,0.4\n".encode(),
                               headers={**sqlite_api.admin, "content-type": "text/csv"})
    assert r.status_code == 422 and "row 1" in r.json()["detail"] and "in the future" in r.json()["detail"]
    assert (count(sqlite_api, BASELINE), forecast_target(sqlite_api, BASELINE)) == (n, before)


def test_trading_day_push_follows_midnight_utc_weekdays(sqlite_api: Api) -> None:
    r = push(sqlite_api, SPX, [{"ts": "2024-03-08T00:00:00Z", "value": 1.0}, {"ts": "2024-03-09T00:00:00Z", "value": 2.0}])
    assert r.status_code == 422
    assert "row 2 (ts=2024-03-09T00:00:00Z" in r.json()["detail"] and "Monday to Friday" in r.json()["detail"]


def test_a_csv_body_that_is_not_utf8_is_a_422_naming_the_byte(sqlite_api: Api) -> None:
    body = "ts,value\n2024-05-01T00:00:00Z,1\n".encode() + b"\xff\xfe,2\n"
    r = sqlite_api.client.post(f"/v1/series/{PUSHED}/observations", content=body,
                               headers={**sqlite_api.admin, "content-type": "text/csv"})
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM)
    assert "not valid UTF-8" in r.json()["detail"] and "byte 32" in r.json()["detail"]
    nul = sqlite_api.client.post(f"/v1/series/{PUSHED}/observations", content=b"ts,value\n\"2024,\x00",
                                 headers={**sqlite_api.admin, "content-type": "text/csv"})
    assert nul.status_code == 422, nul.text


# ---------------------------------------------------------------- delete


def damage(url: str, key: str, ts: dt.datetime) -> None:
    """What a push could store before validation existed: a row far in the future, forecast from."""
    engine = make_engine(url)
    try:
        sm = make_sessionmaker(engine)
        with write_session(sm) as session:
            series = series_by_key(session, key)
            session.add(Observation(series_id=series.id, ts=ts, value=0.4))
            session.flush()
            refresh_forecast(session, series)
    finally:
        engine.dispose()


def test_delete_repairs_a_damaged_series_and_is_recorded_like_an_ingest(sqlite_api: Api) -> None:
    url = sqlite_api.settings.database_url
    before, n = forecast_target(sqlite_api, BASELINE), count(sqlite_api, BASELINE)
    damage(url, BASELINE, dt.datetime(2999, 1, 1, tzinfo=UTC))
    assert forecast_target(sqlite_api, BASELINE) == "2999-01-01T01:00:00Z"

    params = {"start": "2999-01-01T00:00:00Z", "end": "2999-12-31T00:00:00Z"}
    assert sqlite_api.client.delete(f"/v1/series/{BASELINE}/observations", params=params).status_code == 401
    r = sqlite_api.client.delete(f"/v1/series/{BASELINE}/observations", params=params, headers=sqlite_api.admin)
    assert r.status_code == 200, r.text
    assert (r.json()["deleted"], r.json()["forecast"]["target_ts"]) == (1, before)
    assert (count(sqlite_api, BASELINE), forecast_target(sqlite_api, BASELINE)) == (n, before)
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            run = session.get(IngestRun, r.json()["ingest_run_id"])
            assert run is not None and (run.source, run.status, run.rows_deleted) == ("delete", "ok", 1)
            # the forecast made from the bad row (for 2999-01-01 01:00) is gone: it would never be scored
            targets = session.scalars(select(Forecast.target_ts)).all()
            assert all(t.year < 2999 for t in targets)
    finally:
        engine.dispose()


def test_deleting_a_scored_target_takes_its_actual_out_of_live_accuracy(sqlite_api: Api) -> None:
    url = sqlite_api.settings.database_url
    rows = [{"ts": t, "value": float(i)} for i, t in enumerate(HOURS[:12])]
    assert push(sqlite_api, PUSHED, rows).status_code == 200
    assert push(sqlite_api, PUSHED, [{"ts": HOURS[12], "value": 12.5}]).status_code == 200  # scores 12:00's forecast
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            scored = session.scalars(select(Forecast).where(Forecast.actual.is_not(None))).all()
            assert [f.target_ts.hour for f in scored] == [12]
        r = sqlite_api.client.delete(f"/v1/series/{PUSHED}/observations", headers=sqlite_api.admin,
                                     params={"start": HOURS[12], "end": HOURS[12]})
        assert r.status_code == 200 and r.json()["deleted"] == 1
        assert r.json()["forecast"]["target_ts"] == HOURS[12]  # recomputed from what remains
        with make_sessionmaker(engine)() as session:
            assert session.scalars(select(Forecast).where(Forecast.actual.is_not(None))).all() == []
    finally:
        engine.dispose()


@pytest.mark.parametrize(("params", "status", "named"), [
    ({"start": HOURS[2], "end": HOURS[1]}, 422, "is before start"),
    ({"start": HOURS[1]}, 422, "end"),
    ({"start": "2024-05-01T00:00:00", "end": HOURS[1]}, 422, "start"),
])
def test_a_bad_delete_range_is_a_422_naming_it(sqlite_api: Api, params: dict[str, str], status: int,
                                               named: str) -> None:
    r = sqlite_api.client.delete(f"/v1/series/{BASELINE}/observations", params=params, headers=sqlite_api.admin)
    assert r.status_code == status and r.headers["content-type"].startswith(PROBLEM)
    assert named in r.json()["detail"]


def test_delete_of_an_unknown_series_is_a_404(sqlite_api: Api) -> None:
    r = sqlite_api.client.delete("/v1/series/nope:x/observations", headers=sqlite_api.admin,
                                 params={"start": HOURS[0], "end": HOURS[1]})
    assert r.status_code == 404 and "nope:x" in r.json()["detail"]


def test_cli_deletes_a_range_and_names_a_bad_time(tmp_path: Path, sqlite_api_db: str) -> None:
    config = tmp_path / "forecaster.toml"
    config.write_text(f'database_url = "{sqlite_api_db}"\n[[series]]\nkey = "{BASELINE}"\nsource = "sine"\n'
                      'frequency = "1h"\nparams = { length = 200, seed = 2, noise = 0.3 }\n')
    damage(sqlite_api_db, BASELINE, dt.datetime(2999, 1, 1, tzinfo=UTC))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "forecaster.cli", "--config", str(config), *args],
                              capture_output=True, text=True, timeout=120)

    bad = cli("observations", "delete", BASELINE, "--start", "2999-01-01", "--end", "2999-12-31T00:00:00Z")
    assert bad.returncode == 2 and "--start '2999-01-01' has no UTC offset" in bad.stderr
    assert "Traceback" not in bad.stderr
    ok = cli("observations", "delete", BASELINE, "--start", "2999-01-01T00:00:00Z", "--end", "2999-12-31T00:00:00Z")
    assert ok.returncode == 0, ok.stderr
    assert f"{BASELINE}: deleted 1 observations" in ok.stdout and "next forecast 2024-01-09 08:00 UTC" in ok.stdout


def test_times_past_year_9999_in_utc_are_a_422_on_every_observations_route(sqlite_api: Api) -> None:
    far = "9999-12-31T23:00:00-05:00"
    base = f"/v1/series/{BASELINE}/observations"
    r = sqlite_api.client.get(base, params={"start": far})
    assert r.status_code == 422 and "outside the representable range" in r.json()["detail"]
    r = sqlite_api.client.delete(base, params={"start": HOURS[0], "end": far}, headers=sqlite_api.admin)
    assert r.status_code == 422 and "outside the representable range" in r.json()["detail"]
    r = push(sqlite_api, PUSHED, [{"ts": far, "value": 1.0}])
    assert r.status_code == 422 and "row 1" in r.json()["detail"]


# ---------------------------------------------------------------- cursors


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    b64(b"0001-01-01T00:00:00+05:00"),  # before year 1 in UTC
    b64(b"9999-12-31T23:00:00-05:00"),  # past year 9999 in UTC
    b64(b"2024-01-01T00:00:00"),  # no offset
    b64(b"\xff\xfe"), b64(b"yesterday"), b64(b""), "a", "!!!", "\u00e9t\u00e9", "%00",
])
def test_a_cursor_this_api_did_not_give_out_is_a_422_naming_it(api: Api, cursor: str) -> None:
    r = api.client.get(f"/v1/series/{BASELINE}/observations", params={"cursor": cursor, "limit": 5})
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM), r.text
    assert f"cursor {cursor!r} is not one this API gave out" in r.json()["detail"]
    first = api.client.get(f"/v1/series/{BASELINE}/observations", params={"limit": 5}).json()
    again = api.client.get(f"/v1/series/{BASELINE}/observations", params={"cursor": first["next_cursor"], "limit": 5})
    assert again.status_code == 200 and again.json()["observations"][0]["ts"] > first["observations"][-1]["ts"]
