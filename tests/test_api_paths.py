"""Forecast paths over HTTP: the GET's path, ?h=, CSV, the cache, POST /v1/forecast, predict; stored
paths scored step by step as actuals arrive; an old database's one-step forecasts still serve."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import func, select, text

from forecaster.store import forecasts, migrate, registry
from forecaster.store.observations import upsert
from forecaster.store.series import series_by_key
from forecaster.store.tables import Forecast, Series, make_engine, make_sessionmaker, write_session
from forecaster.usecases.forecasting import get_forecast
from tests.api_server import BASELINE, TRAINED, Api

PROBLEM = "application/problem+json"
HOUR = dt.timedelta(hours=1)


def test_the_forecast_get_serves_the_whole_path_step_one_as_its_flat_fields(api: Api) -> None:
    body = api.client.get(f"/v1/series/{TRAINED}/forecast").json()
    path = body["path"]
    assert [p["step"] for p in path] == list(range(1, 25))  # hourly: one day of steps by default
    first = path[0]
    assert (first["value"], first["lower"], first["upper"], first["target_ts"]) == (
        body["value"], body["lower"], body["upper"], body["target_ts"])
    targets = [dt.datetime.fromisoformat(p["target_ts"]) for p in path]
    assert all(b - a == HOUR for a, b in zip(targets, targets[1:], strict=False))
    assert all(p["lower"] < p["value"] < p["upper"] for p in path)
    # A baseline serves a path too (no model yet): its band widens as its k-step errors do.
    base = api.client.get(f"/v1/series/{BASELINE}/forecast").json()
    assert base["model_version"] in ("naive", "seasonal_naive") and len(base["path"]) == 24


def test_h_cuts_the_path_and_a_bad_h_is_a_422_naming_the_horizon(api: Api) -> None:
    url = f"/v1/series/{TRAINED}/forecast"
    whole = api.client.get(url).json()
    three = api.client.get(url, params={"h": 3}).json()
    assert three["path"] == whole["path"][:3] and three["value"] == whole["value"]
    for bad in ("0", "25", "-1", "two", "1.5", ""):
        r = api.client.get(url, params={"h": bad})
        assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM), (bad, r.text)
        detail = r.json()["detail"]
        assert f"h={bad!r}" in detail and "from 1 to 24" in detail, r.text  # the value sent and the horizon
        assert api.client.get(url, params={"h": bad}, headers={"Accept": "text/csv"}).status_code == 422
    assert api.client.get("/v1/series/nope:x/forecast", params={"h": "two"}).status_code == 404  # no horizon to name


def test_csv_and_json_paths_agree_and_the_cached_json_never_answers_another_form(api: Api) -> None:
    url = f"/v1/series/{TRAINED}/forecast"
    api.client.get(url)
    whole = api.client.get(url).json()  # now from the cache
    r = api.client.get(url, headers={"Accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == ["step", "target_ts", "value", "lower", "upper"] and len(rows) == 24
    for row, p in zip(rows, whole["path"], strict=True):
        assert int(row["step"]) == p["step"] and row["target_ts"] == p["target_ts"]
        assert (float(row["value"]), float(row["lower"]), float(row["upper"])) == (p["value"], p["lower"], p["upper"])
    short = api.client.get(url, params={"h": 2}, headers={"Accept": "text/csv"})
    assert short.text.count("\n") == 3  # a header and two steps
    assert len(api.client.get(url, params={"h": 2}).json()["path"]) == 2  # a cached whole path is cut, not sent
    assert len(api.client.get(url).json()["path"]) == 24


def test_csv_cells_are_the_json_text_and_accept_is_negotiated_before_the_cache_answers(api: Api) -> None:
    url = f"/v1/series/{TRAINED}/forecast"
    miss, hit = api.client.get(url), api.client.get(url)  # the second from the response cache (the fast path)
    assert hit.content == miss.content and hit.headers["vary"] == miss.headers["vary"] == "Accept"
    # Numbers and times as the JSON writes them (its text, not its parsed floats): the CSV has the same text.
    whole = json.loads(hit.text, parse_float=str, parse_int=str)["path"]
    for accept in ("text/csv", "Text/CSV; charset=utf-8", "text/*", "application/json;q=0.5, text/csv"):
        r = api.client.get(url, headers={"Accept": accept})
        assert r.headers["content-type"].startswith("text/csv") and r.headers["vary"] == "Accept", accept
        lines = r.text.splitlines()
        assert lines[0] == "step,target_ts,value,lower,upper"
        assert lines[1:] == [",".join(p[k] for k in ("step", "target_ts", "value", "lower", "upper")) for p in whole]
    for accept in ("application/json, text/csv;q=0.5", "text/csv;q=0", "*/*", "text/html,*/*;q=0.8"):
        r = api.client.get(url, headers={"Accept": accept})
        assert r.headers["content-type"] == "application/json" and r.content == hit.content, accept


def test_post_forecast_returns_paths_cut_to_h_and_predict_returns_a_path_per_window(api: Api) -> None:
    r = api.client.post("/v1/forecast", json={"keys": [TRAINED, BASELINE, "nope:x"], "h": 4})
    results = {x["series_key"]: x for x in r.json()["results"]}
    assert [len(results[k]["forecast"]["path"]) for k in (TRAINED, BASELINE)] == [4, 4]
    assert results["nope:x"]["status"] == 404
    version = api.client.get(f"/v1/series/{TRAINED}/forecast").json()["model_version_id"]
    windows = [[float(i % 24) / 10 for i in range(k, k + 24)] for k in range(3)]
    out = api.client.post(f"/v1/models/{version}/predict", json={"windows": windows}).json()
    assert out["horizon"] == 24 and len(out["paths"]) == 3 and all(len(p) == 24 for p in out["paths"])
    assert out["predictions"] == [p[0] for p in out["paths"]]


def test_an_actual_scores_every_stored_forecast_that_targeted_it_under_its_step(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    sm = make_sessionmaker(engine)
    from forecaster.config.settings import SeriesSpec
    from forecaster.store.series import sync_series

    t0 = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    with write_session(sm) as session:
        series = sync_series(session, SeriesSpec(key="push:paths", source="push", frequency="1h", horizon=3))
        upsert(session, series, pd.DataFrame({"ts": [t0], "value": [1.0]}))
        # Two paths: from t0 (targets t0+1h..t0+3h) and from t0+1h (targets t0+2h..t0+4h).
        for origin, base in ((t0, 10.0), (t0 + HOUR, 20.0)):
            forecasts.store_path(session, series, model_version_id=None, method="naive", origin_ts=origin,
                                 points=[(origin + k * HOUR, base + k, None, None) for k in (1, 2, 3)], level=None)
        upsert(session, series, pd.DataFrame({"ts": [t0 + HOUR, t0 + 2 * HOUR], "value": [5.0, 7.0]}))
    with sm() as session:
        scored = session.execute(select(Forecast.origin_ts, Forecast.step, Forecast.target_ts, Forecast.actual,
                                        Forecast.error).where(Forecast.actual.is_not(None))
                                 .order_by(Forecast.target_ts, Forecast.step)).all()
    assert [(o, s, t, a, e) for o, s, t, a, e in scored] == [
        (t0, 1, t0 + HOUR, 5.0, 5.0 - 11.0),
        (t0 + HOUR, 1, t0 + 2 * HOUR, 7.0, 7.0 - 21.0),
        (t0, 2, t0 + 2 * HOUR, 7.0, 7.0 - 12.0),
    ]
    engine.dispose()


def test_an_old_database_migrates_and_its_stored_forecast_still_serves_as_a_one_step_path(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate.upgrade(engine, "0005")
    with engine.begin() as conn:  # rows as revision 0005 wrote them: no step, no origin
        conn.execute(text("INSERT INTO series (id, key, source, params, frequency, created_at) VALUES "
                          "(1, 'push:old', 'push', '{}', '1h', '2024-05-01 00:00:00')"))
        conn.execute(text("INSERT INTO forecasts (series_id, method, made_at, target_ts, value, lower, upper, level) "
                          "VALUES (1, 'naive', '2024-05-01 00:00:00', '2024-05-01 01:00:00', 3.5, 3.0, 4.0, 0.9)"))
    migrate.upgrade(engine)
    with make_sessionmaker(engine)() as session:
        view = get_forecast(session, series_key="push:old")
        row = session.scalars(select(Forecast)).one()
        assert series_by_key(session, "push:old").horizon is None  # the frequency's default applies
    assert (view.value, view.lower, view.upper) == (3.5, 3.0, 4.0)
    assert [(p.step, p.value) for p in view.path] == [(1, 3.5)] and (row.step, row.origin_ts) == (1, None)
    engine.dispose()


def test_live_accuracy_is_reported_per_step_and_metrics_show_the_first_and_last(api: Api) -> None:
    engine = make_engine(api.settings.database_url)
    sm = make_sessionmaker(engine)
    t0 = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    key = "push:days"  # paths of 5 business days
    days = [t0 + dt.timedelta(days=d) for d in range(14) if (t0 + dt.timedelta(days=d)).weekday() < 5]
    from forecaster.config.settings import SeriesSpec
    from forecaster.store.series import sync_series

    with write_session(sm) as session:
        series = sync_series(session, SeriesSpec(key=key, source="push", frequency="1B", horizon=5))
        upsert(session, series, pd.DataFrame({"ts": days[:1], "value": [100.0]}))
        for i in range(4):  # a path from each of the first four days: step k targets day i + k
            forecasts.store_path(session, series, model_version_id=None, method="naive", origin_ts=days[i],
                                 points=[(days[i + k], 100.0 + i, 100.0 + i - 1.5, 100.0 + i + 1.5)
                                         for k in range(1, 6)], level=0.9)
            upsert(session, series, pd.DataFrame({"ts": [days[i + 1]], "value": [101.0 + i]}))
    engine.dispose()
    body = api.client.get(f"/v1/series/{key}/accuracy").json()
    row = next(r for r in body["rows"] if r["method"] == "naive")
    by = {s["step"]: s for s in row["by_step"]}
    # Day i+1's actual (101 + i) scored the paths made at days <= i: path j at step i + 1 - j.
    assert (by[1]["count"], by[2]["count"], by[3]["count"], by[4]["count"]) == (4, 3, 2, 1)
    assert by[1]["mae"] == pytest.approx(1.0) and by[2]["mae"] == pytest.approx(2.0)  # k steps of +1 a day
    assert by[2]["mase"] == pytest.approx(1.0)  # the naive forecast made at the same origin is the same
    assert (row["count"], row["mae"]) == (by[1]["count"], by[1]["mae"])  # the flat figures are step 1
    assert by[1]["coverage"] == 1.0 and by[2]["coverage"] == 0.0  # +-1.5 holds one day's drift, not two
    page = api.client.get(f"/series/{key}").text  # the dashboard's by-step table: what serves, step by step
    steps = re.findall(r'<tr data-step="(\d+)"><td>\d+</td><td class="n">(\d+)</td>', page)
    assert steps == [("1", "4"), ("2", "3"), ("3", "2"), ("4", "1")]
    text = api.client.get("/metrics").text
    assert f'forecaster_live_mase_by_step{{series="{key}",step="1"}} 1.0' in text
    assert 'step="2"' not in text  # only the first and the last step: bounded labels


def test_the_series_page_draws_the_served_path_as_a_fan_after_the_last_observation(api: Api) -> None:
    from urllib.parse import quote

    body = api.client.get(f"/v1/series/{TRAINED}/forecast").json()
    page = api.client.get(f"/series/{quote(TRAINED, safe='')}").text
    fan = re.search(r'<g class="fan" data-steps="(\d+)">(.*?)</g>', page, re.S)
    assert fan is not None and fan.group(1) == "24"
    assert '<path class="fanband" d="M' in fan.group(2) and '<path class="fanline" d="M' in fan.group(2)
    last = body["path"][-1]
    assert f"step 24: {last['target_ts'][:16].replace('T', ' ')} UTC" in fan.group(2)
    assert "the path: 24 steps and their intervals" in page
    versions = api.client.get(f"/v1/series/{TRAINED}/models").json()["versions"]
    champion = next(v for v in versions if v["is_champion"])
    step1 = champion["metrics"]["served"]["mase_steps"][0]
    assert f'<div class="muted small step1">step 1: {step1:.3f}</div>' in page  # the versions table: mean and step 1


def _push_series(sm: Any, key: str, horizon: int) -> Any:
    from forecaster.config.settings import SeriesSpec
    from forecaster.store.series import sync_series

    with write_session(sm) as session:
        return sync_series(session, SeriesSpec(key=key, source="push", frequency="1h", horizon=horizon)).id


def test_store_path_keeps_the_served_path_only_while_it_says_the_same_and_latest_reads_step_one(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    sm = make_sessionmaker(engine)
    sid = _push_series(sm, "push:store", 3)
    t0 = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)

    def path(origin: dt.datetime, values: list[float]) -> list[forecasts.PathRow]:
        return [(origin + k * HOUR, v, v - 1, v + 1) for k, v in enumerate(values, start=1)]

    with write_session(sm) as session:
        series = session.get(Series, sid)
        first = forecasts.store_path(session, series, model_version_id=None, method="naive", origin_ts=t0,
                                     points=path(t0, [1.0, 2.0, 3.0]), level=0.9)
        again = forecasts.store_path(session, series, model_version_id=None, method="naive", origin_ts=t0,
                                     points=path(t0, [1.0, 2.0, 3.0]), level=0.9)
        assert again.id == first.id  # the same path: nothing stored
        # The same step 1 but another length (the horizon changed): a new path, served whole.
        longer = forecasts.store_path(session, series, model_version_id=None, method="naive", origin_ts=t0,
                                      points=path(t0, [1.0, 2.0, 3.0, 4.0]), level=0.9)
        assert longer.id != first.id and forecasts.latest(session, sid) is longer
        rows = forecasts.path_rows(session, longer)
        assert [(r.step, r.value) for r in rows] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
        assert len({r.made_at for r in rows}) == 1 and {r.origin_ts for r in rows} == {t0}
        # A shorter path made later from newer data: its step 1 is what serves, and so is its method,
        # though the older, longer path targets later times.
        short = forecasts.store_path(session, series, model_version_id=None, method="seasonal_naive",
                                     origin_ts=t0 + HOUR, points=path(t0 + HOUR, [9.0]), level=0.9)
        assert forecasts.latest(session, sid) is short
        assert forecasts.latest_methods(session, [sid]) == {sid: "seasonal_naive"}
        assert [r.step for r in forecasts.path_rows(session, short)] == [1]
        # store(): a path of one step, origin unknown, deduplicated the same way.
        one = forecasts.store(session, series, model_version_id=None, method="naive", target_ts=t0 + 2 * HOUR,
                              value=5.0, lower=None, upper=None, level=None)
        assert (one.step, one.origin_ts) == (1, None) and forecasts.latest(session, sid) is one
        assert forecasts.store(session, series, model_version_id=None, method="naive", target_ts=t0 + 2 * HOUR,
                               value=5.0, lower=None, upper=None, level=None).id == one.id
        with pytest.raises(ValueError, match="origin"):  # steps after an unknown origin could not be found again
            forecasts.store_path(session, series, model_version_id=None, method="naive", origin_ts=None,
                                 points=path(t0, [1.0, 2.0]), level=None)
        assert session.scalar(select(func.count()).select_from(Forecast)) == 3 + 4 + 1 + 1
    engine.dispose()


def test_scored_errors_reads_one_step_of_a_versions_paths(api_db: str) -> None:
    engine = make_engine(api_db)
    sm = make_sessionmaker(engine)
    t0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)  # past the template's data: targets nothing else forecast
    with write_session(sm) as session:
        series = series_by_key(session, TRAINED)
        mv = registry.champion_of(session, series.id)
        assert mv is not None
        upsert(session, series, pd.DataFrame({"ts": [t0], "value": [0.0]}))
        for i, origin in enumerate((t0, t0 + HOUR)):
            forecasts.store_path(session, series, model_version_id=mv.id, method="model", origin_ts=origin,
                                 points=[(origin + k * HOUR, 10.0 * i + k, None, None) for k in (1, 2)], level=None)
        upsert(session, series, pd.DataFrame({"ts": [t0 + HOUR, t0 + 2 * HOUR], "value": [100.0, 200.0]}))
        step1 = forecasts.scored_errors(session, mv.id, 100)
        step2 = forecasts.scored_errors(session, mv.id, 100, step=2)
    assert step1[-2:] == [(t0 + HOUR, 100.0 - 1.0), (t0 + 2 * HOUR, 200.0 - 11.0)]
    assert step2[-1:] == [(t0 + 2 * HOUR, 200.0 - 2.0)]  # the path from t0, two steps on
    engine.dispose()


def test_deleting_the_newest_observation_unscores_every_step_and_drops_only_paths_made_from_it(db_url: str) -> None:
    from forecaster.config.settings import Settings
    from forecaster.usecases.observations import delete_observations

    engine = make_engine(db_url)
    migrate.upgrade(engine)
    sm = make_sessionmaker(engine)
    key = "push:delete"
    settings = Settings(database_url=db_url, series=[{"key": key, "source": "push", "frequency": "1h",
                                                       "horizon": 3}])
    sid = _push_series(sm, key, 3)
    t = [dt.datetime(2024, 5, 1, tzinfo=dt.UTC) + i * HOUR for i in range(6)]
    with write_session(sm) as session:
        series = session.get(Series, sid)
        for i, value in enumerate((1.0, 5.0, 7.0)):  # observe t_i, then forecast three steps from it
            upsert(session, series, pd.DataFrame({"ts": [t[i]], "value": [value]}))
            forecasts.store_path(session, series, model_version_id=None, method="naive", origin_ts=t[i],
                                 points=[(t[i + k], 10.0 * (i + 1) + k, None, None) for k in (1, 2, 3)], level=None)

    def rows() -> list[tuple[dt.datetime | None, int, float | None]]:
        with sm() as session:
            return [(o, s, a) for o, s, a in session.execute(
                select(Forecast.origin_ts, Forecast.step, Forecast.actual).where(Forecast.value >= 10)
                .order_by(Forecast.origin_ts, Forecast.step))]

    assert rows() == [(t[0], 1, 5.0), (t[0], 2, 7.0), (t[0], 3, None), (t[1], 1, 7.0), (t[1], 2, None),
                      (t[1], 3, None), (t[2], 1, None), (t[2], 2, None), (t[2], 3, None)]
    delete_observations(sm, settings, series_key=key, start=t[2], end=t[2])
    # t2's actual leaves every forecast of it (step 2 from t0, step 1 from t1); the path made from t2
    # goes; the paths made from t0 and t1 stay whole: their later steps still forecast t3 and t4.
    assert rows() == [(t[0], 1, 5.0), (t[0], 2, None), (t[0], 3, None), (t[1], 1, None), (t[1], 2, None),
                      (t[1], 3, None)]
    with sm() as session:
        served = get_forecast(session, series_key=key)  # the baseline's path from what remains (t1)
    assert [p.target_ts for p in served.path] == t[2:5] and served.value == 5.0
    with write_session(sm) as session:  # t2 comes back: every forecast of it is scored again
        upsert(session, session.get(Series, sid), pd.DataFrame({"ts": [t[2]], "value": [7.0]}))
    assert [a for o, s, a in rows() if (o, s) in ((t[0], 2), (t[1], 1))] == [7.0, 7.0]
    engine.dispose()


def test_deleting_an_old_observation_leaves_the_served_path_whole(api: Api) -> None:
    url = f"/v1/series/{BASELINE}/forecast"
    before = api.client.get(url).json()
    assert len(before["path"]) == 24
    first = api.client.get(f"/v1/series/{BASELINE}/observations", params={"limit": 3}).json()["observations"][2]
    r = api.client.delete(f"/v1/series/{BASELINE}/observations", params={"start": first["ts"], "end": first["ts"]},
                          headers=api.admin)
    assert r.status_code == 200 and r.json()["deleted"] == 1
    after = api.client.get(url).json()
    assert after["path"] == before["path"] and len(r.json()["forecast"]["path"]) == 24
