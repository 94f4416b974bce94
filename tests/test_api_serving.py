"""The fast serving paths: the cached forecast GET stays fresh on every replica, and the predict
body's fast parse answers exactly what the full validation answers."""

from __future__ import annotations

import numpy as np
import pytest

from api.routes.models import _fast_windows
from forecaster import registry
from forecaster.db import make_engine, make_sessionmaker, write_session
from forecaster.forecasting import refresh_forecast
from forecaster.ingest import series_by_key
from tests.api_server import TRAINED, api_template, make_settings, running_api, sqlite_api_db  # noqa: F401

PROBLEM = "application/problem+json"


def test_a_change_by_any_process_is_on_the_next_get_of_every_replica(sqlite_api_db: str) -> None:  # noqa: F811
    settings = make_settings(sqlite_api_db)
    path = f"/v1/series/{TRAINED}/forecast"
    with running_api(settings) as a, running_api(settings) as b:  # two API replicas on one database
        for replica in (a, b):
            for _ in range(3):  # served from each replica's cache after the first
                assert replica.client.get(path).json()["model_version"] == 2
        # A third writer (here: this test's own connection, as the scheduler would) moves the champion.
        engine = make_engine(sqlite_api_db)
        with write_session(make_sessionmaker(engine)) as session:
            registry.promote(session, series_key=TRAINED, version=1)
            refresh_forecast(session, series_by_key(session, TRAINED))
        engine.dispose()
        assert a.client.get(path).json()["model_version"] == 1
        assert b.client.get(path).json()["model_version"] == 1
        # A promotion through one replica is on the next GET of the other.
        r = a.client.post(f"/v1/series/{TRAINED}/promote", json={"version": 2}, headers=a.admin)
        assert r.status_code == 200, r.text
        assert b.client.get(path).json()["model_version"] == 2
        assert a.client.get(path).json()["model_version"] == 2


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
