"""The fast serving paths: the cached forecast GET stays fresh on every replica, and the predict
body's fast parse answers exactly what the full validation answers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from api.routes.models import _fast_windows
from forecaster.store import registry
from forecaster.store.tables import Forecast, Series, make_engine, make_sessionmaker, write_session
from forecaster.usecases.forecasting import refresh_forecast
from forecaster.store.series import series_by_key
from tests.api_server import (  # noqa: F401
    BASELINE, TRAINED, api_db, api_template, copy_database, make_settings, running_api, sqlite_api_db,
)

PROBLEM = "application/problem+json"


def _reads(api: Any) -> dict[str, float]:
    """forecaster_forecast_reads_total by source, from the replica's /metrics."""
    out = {"cache": 0.0, "database": 0.0}
    for line in api.client.get("/metrics").text.splitlines():
        if line.startswith("forecaster_forecast_reads_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('source="')[1].split('"')[0]] = float(value)
    return out


def test_a_change_by_any_process_is_on_the_next_get_of_every_replica(api_db: str) -> None:  # noqa: F811
    settings = make_settings(api_db)
    path = f"/v1/series/{TRAINED}/forecast"
    with running_api(settings) as a, running_api(settings) as b:  # two API replicas on one database
        for replica in (a, b):
            for _ in range(3):  # served from each replica's cache after the first
                assert replica.client.get(path).json()["model_version"] == 2
            assert _reads(replica) == {"cache": 2, "database": 1}, "the cache served nothing"
        # A third writer (here: this test's own connection, as a worker would) moves the champion.
        engine = make_engine(api_db)
        with write_session(make_sessionmaker(engine)) as session:
            registry.promote(session, series_key=TRAINED, version=1)
            refresh_forecast(session, series_by_key(session, TRAINED))
        assert a.client.get(path).json()["model_version"] == 1
        assert b.client.get(path).json()["model_version"] == 1
        # A promotion through one replica is on the next GET of the other (forced: v2 ties v1 on the same data).
        r = a.client.post(f"/v1/series/{TRAINED}/promote", json={"version": 2, "force": True}, headers=a.admin)
        assert r.status_code == 200, r.text
        assert b.client.get(path).json()["model_version"] == 2
        assert a.client.get(path).json()["model_version"] == 2
        # An update in place of a row the read uses is seen too (no new row, no new id).
        with write_session(make_sessionmaker(engine)) as session:
            f = session.scalar(select(Forecast).join(Series).where(Series.key == TRAINED, Forecast.step == 1)
                               .order_by(Forecast.id.desc()).limit(1))
            f.value = 123.5
        assert b.client.get(path).json()["value"] == 123.5
        assert a.client.get(path).json()["value"] == 123.5
        engine.dispose()
        before = _reads(b)
        b.client.get(path)
        assert _reads(b)["cache"] == before["cache"] + 1, "an unchanged forecast was read again"


@pytest.mark.postgres
def test_on_postgresql_a_write_to_one_series_leaves_the_others_cached(pg_url: str, api_template: Any) -> None:  # noqa: F811
    copy_database(api_template, pg_url)
    with running_api(make_settings(pg_url)) as api:
        other = f"/v1/series/{BASELINE}/forecast"
        first = api.client.get(other).json()
        r = api.client.post(f"/v1/series/{TRAINED}/promote", json={"version": 1}, headers=api.admin)
        assert r.status_code == 200, r.text
        before = _reads(api)
        assert api.client.get(other).json() == first
        assert _reads(api)["cache"] == before["cache"] + 1


def test_the_fast_predict_parse_takes_the_common_body_and_leaves_the_rest_to_validation() -> None:
    got = _fast_windows(b'{"windows": [[1, 2.5, -3e2], [4, 5, 6]]}')
    assert got is not None and got.dtype == np.float64
    np.testing.assert_array_equal(got, [[1, 2.5, -300], [4, 5, 6]])
    for body in (
        b'{"windows": [[1, 2], [3]]}',  # ragged: the full path names the short window
        b'{"windows": [[NaN, 1]]}', b'{"windows": [[1e400, 1]]}', b'{"windows": [[null, 1]]}',
        b'{"windows": []}', b'{"windows": [[]]}', b'{"windows": [1, 2]}', b'{"windows": [[[1]]]}',
        b'{"windows": [["a", 1]]}', b'{"windows": [[1]], "extra": 1}', b'[[1, 2]]', b'{"windows": ',
        b'{"windows": [[1, 2]], "last_ts": ["2024-01-01T00:00:00Z"]}',  # timestamps: the full path
    ):
        assert _fast_windows(body) is None, body


W = ", ".join(["1.5"] * 23)  # 23 values: with one more, a window of the template's model (24)


@pytest.mark.parametrize("body, needle", [
    (f'{{"windows": [[{W}, 1], [{W}]]}}'.encode(), "windows[1] has 23 values"),
    (f'{{"windows": [[{W}, NaN]]}}'.encode(), "windows[0][23] = nan"),
    (f'{{"windows": [[{W}, null]]}}'.encode(), "valid number"),
])
def test_predict_bodies_the_fast_parse_declines_get_the_full_validations_422(
    sqlite_api_db: str, body: bytes, needle: str  # noqa: F811
) -> None:
    with running_api(make_settings(sqlite_api_db)) as api:
        versions = api.client.get(f"/v1/series/{TRAINED}/models").json()["versions"]
        mv = next(v["id"] for v in versions if v["is_champion"])
        r = api.client.post(f"/v1/models/{mv}/predict", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM), r.text
        assert needle in r.text, r.text


@pytest.mark.postgres
def test_concurrent_gets_never_see_a_value_older_than_their_request(pg_url: str, api_template: Any) -> None:  # noqa: F811
    """The probe answers requests that arrive during a probe statement with the *next* statement:
    every GET sent after a commit sees it, however many GETs are in flight."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    copy_database(api_template, pg_url)
    engine = make_engine(pg_url)
    sm = make_sessionmaker(engine)
    path = f"/v1/series/{TRAINED}/forecast"
    with running_api(make_settings(pg_url)) as api, ThreadPoolExecutor(16) as pool, \
            httpx.Client(base_url=api.url, limits=httpx.Limits(max_connections=16)) as client:
        def hammer(n: int) -> list[float]:
            return list(pool.map(lambda _: client.get(path).json()["value"], range(n)))

        hammer(32)
        for i in range(6):
            with write_session(sm) as session:
                f = session.scalar(select(Forecast).join(Series).where(Series.key == TRAINED, Forecast.step == 1)
                                   .order_by(Forecast.id.desc()).limit(1))
                f.value = 1000.0 + i
            assert set(hammer(48)) == {1000.0 + i}, f"a GET after write {i} saw an older value"
        reads = _reads(api)
        assert reads["cache"] > reads["database"], reads  # and the cache did the serving
    engine.dispose()


def test_a_cache_hit_answers_exactly_what_the_route_answers_and_is_counted_under_its_template(
    sqlite_api_db: str,  # noqa: F811
) -> None:
    path = f"/v1/series/{TRAINED}/forecast"
    with running_api(make_settings(sqlite_api_db)) as api:
        first = api.client.get(path)  # a miss: routed, read, cached
        second = api.client.get(path)  # a hit: answered before routing
        assert _reads(api) == {"cache": 1, "database": 1}
        assert second.status_code == first.status_code == 200
        assert second.content == first.content
        assert second.headers["content-type"] == first.headers["content-type"] == "application/json"
        assert second.headers["content-length"] == first.headers["content-length"]
        metrics = api.client.get("/metrics").text
        assert 'forecaster_http_requests_total{method="GET",route="/v1/series/{key}/forecast",status="200"} 2.0' \
            in metrics
        method = first.json()["method"]
        assert f'forecaster_forecasts_served_total{{method="{method}",series="{TRAINED}"}} 2.0' in metrics
        # What the route would not match still goes to the app: unknown keys, nested paths, HEAD.
        assert api.client.get("/v1/series/nope/forecast").status_code == 404
        assert api.client.get(f"/v1/series/{TRAINED}/x/forecast").status_code == 404
        assert api.client.post(path).status_code == 405


@pytest.mark.postgres
def test_on_postgresql_racing_pushes_leave_the_forecast_made_from_the_newest_observation(
    pg_url: str, api_template: Any,  # noqa: F811
) -> None:
    """One client pushes the newest hour while three re-push older hours with new values: after every
    round the served forecast is the next step after the newest stored observation, never one behind,
    and its value is what the baseline makes of every stored row, none of the older batches missed."""
    import datetime as dt
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from forecaster.modelling.baseline import BASELINE_TAIL
    from forecaster.store.observations import load_values
    from forecaster.modelling.baseline import baseline_path
    from tests.api_server import PUSHED

    copy_database(api_template, pg_url)
    engine = make_engine(pg_url)
    sm = make_sessionmaker(engine)
    start = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)
    hour = dt.timedelta(hours=1)

    def rows(first: int, n: int, seed: int) -> list[dict[str, Any]]:
        values = np.random.default_rng(seed).normal(100, 5, n)
        return [{"ts": (start + (first + i) * hour).isoformat(), "value": float(v)} for i, v in enumerate(values)]

    with running_api(make_settings(pg_url)) as api, ThreadPoolExecutor(4) as pool:
        clients = [httpx.Client(base_url=api.url, headers=api.admin, timeout=30) for _ in range(4)]
        path = f"/v1/series/{PUSHED}/observations"
        assert clients[0].post(path, json=rows(0, 48, 0)).status_code == 200
        stale = []
        for r in range(48, 88):
            barrier = threading.Barrier(4)

            def push(i: int, r: int = r, barrier: threading.Barrier = barrier) -> int:
                body = rows(r, 1, r) if i == 0 else rows(r - 24 * i, 12, 1000 * r + i)  # the newest / older hours
                barrier.wait()
                return clients[i].post(path, json=body).status_code

            assert list(pool.map(push, range(4))) == [200] * 4
            got = api.client.get(f"/v1/series/{PUSHED}/forecast").json()
            with sm() as session:  # what the baseline makes of every stored row, the older batches' too
                _, values = load_values(session, series_by_key(session, PUSHED).id, tail=BASELINE_TAIL)
            expected = float(baseline_path(values, 24, 0.9, 24)[1][0])  # step 1 of the hourly path (24 steps)
            if dt.datetime.fromisoformat(got["target_ts"]) != start + (r + 1) * hour or got["value"] != expected:
                stale.append((r, got["target_ts"], got["value"], expected))
        for client in clients:
            client.close()
    engine.dispose()
    assert not stale, f"{len(stale)} of 40 rounds served a forecast not made from every stored row: {stale[:3]}"
