"""The read side of the API over real HTTP, on SQLite and PostgreSQL: series, observations,
stored forecasts, model versions and predictions from client windows."""

from __future__ import annotations

from urllib.parse import quote

import numpy as np
import pytest
from sqlalchemy.orm import Session

from forecaster.store import registry
from forecaster.config.settings import Settings
from forecaster.store.tables import make_engine
from forecaster.modelling.predictor import Predictor
from tests.api_server import BASELINE, PUSHED, SPX, TRAINED, Api, make_settings, running_api

PROBLEM = "application/problem+json"


def champion_id(api: Api, key: str = TRAINED) -> int:
    versions = api.client.get(f"/v1/series/{key}/models").json()["versions"]
    return int(next(v["id"] for v in versions if v["is_champion"]))


# ---------------------------------------------------------------- forecasts


def test_forecast_is_served_with_its_model_version(api: Api) -> None:
    r = api.client.get(f"/v1/series/{TRAINED}/forecast")
    assert r.status_code == 200, r.text
    body = r.json()
    champ = next(v for v in api.client.get(f"/v1/series/{TRAINED}/models").json()["versions"] if v["is_champion"])
    served = champ["metrics"]["served"]  # what the version's ladder chose on validation
    assert (body["method"], body["served_by"], body["mase"]) == (served["method"], served["label"], served["mase"])
    assert body["model_mase"] == champ["metrics"]["model"]["mase"]  # the recurrent model's figure beside it
    assert body["model_version"] == 2
    assert body["model_version_id"] == champion_id(api)
    assert body["lower"] < body["value"] < body["upper"]
    assert body["level"] == 0.9
    assert body["mase"] > 0
    assert body["target_ts"] == "2024-01-26T00:00:00Z"  # the hour after the last of 600 hourly values


def test_forecast_of_a_series_without_a_model_names_the_baseline(sqlite_api: Api) -> None:
    body = sqlite_api.client.get(f"/v1/series/{BASELINE}/forecast").json()
    assert body["method"] in ("naive", "seasonal_naive")
    assert body["model_version"] == body["method"]
    assert body["model_version_id"] is None and body["mase"] is None


def test_unknown_series_gets_a_404_problem_naming_the_key(sqlite_api: Api) -> None:
    for path in ("/forecast", "", "/observations", "/models"):
        r = sqlite_api.client.get(f"/v1/series/yfinance:NOPE:close{path}")
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith(PROBLEM)
        body = r.json()
        assert body["status"] == 404 and body["title"] == "Not Found" and body["type"].endswith("series-not-found")
        assert "yfinance:NOPE:close" in body["detail"]


def test_series_with_no_data_yet_says_so(sqlite_api: Api) -> None:
    r = sqlite_api.client.get(f"/v1/series/{PUSHED}/forecast")
    assert r.status_code == 404
    assert "no data yet" in r.json()["detail"] and PUSHED in r.json()["detail"]


def test_batch_forecast_reports_unknown_keys_per_key(api: Api) -> None:
    r = api.client.post("/v1/forecast", json={"keys": [TRAINED, "nope:x", BASELINE, TRAINED]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["series_key"] for x in results] == [TRAINED, "nope:x", BASELINE]
    assert [x["status"] for x in results] == [200, 404, 200]
    assert results[0]["forecast"]["model_version"] == 2
    assert "nope:x" in results[1]["detail"] and results[1]["forecast"] is None


def test_batch_forecast_needs_at_least_one_key(sqlite_api: Api) -> None:
    r = sqlite_api.client.post("/v1/forecast", json={"keys": []})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith(PROBLEM)
    assert "body.keys" in r.json()["detail"]


# ---------------------------------------------------------------- series and observations


def test_series_list_shows_counts_last_observation_and_champion(api: Api) -> None:
    r = api.client.get("/v1/series")
    assert r.status_code == 200
    series = {s["key"]: s for s in r.json()["series"]}
    assert set(series) == {TRAINED, BASELINE, PUSHED, SPX}
    trained = series[TRAINED]
    assert trained["observation_count"] == 600
    assert trained["last_observation_ts"] == "2024-01-25T23:00:00Z"
    assert trained["champion_version"] == 2 and trained["frequency"] == "1h" and trained["source"] == "sine"
    assert series[BASELINE]["champion_version"] is None
    assert series[SPX]["observation_count"] == 0 and series[SPX]["unit"] == "USD"


def test_keys_with_caret_colon_and_comma_work_raw_and_url_encoded(api: Api) -> None:
    rows = [{"ts": f"2024-03-{d:02d}T00:00:00Z", "value": 5000.0 + d} for d in (4, 5, 6, 7, 8)]
    r = api.client.post(f"/v1/series/{quote(SPX, safe='')}/observations", json=rows, headers=api.admin)
    assert r.status_code == 200, r.text
    for key in (SPX, quote(SPX, safe=""), quote(SPX, safe=":")):
        f = api.client.get(f"/v1/series/{key}/forecast")
        assert f.status_code == 200, (key, f.text)
        assert f.json()["series_key"] == SPX
        assert f.json()["target_ts"] == "2024-03-11T00:00:00Z"  # Friday is followed by Monday (1B: midnight UTC of each weekday)
    assert api.client.get(f"/v1/series/{quote(SPX, safe='')}").json()["observation_count"] == 5


def test_observations_page_through_with_a_cursor(api: Api) -> None:
    seen, cursor, pages = [], None, 0
    while True:
        params: dict[str, str | int] = {"limit": 250}
        if cursor:
            params["cursor"] = cursor
        r = api.client.get(f"/v1/series/{TRAINED}/observations", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += page["observations"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 600
    stamps = [o["ts"] for o in seen]
    assert stamps == sorted(stamps) and len(set(stamps)) == 600


def test_observations_filter_by_time_range(api: Api) -> None:
    r = api.client.get(f"/v1/series/{TRAINED}/observations",
                       params={"start": "2024-01-02T00:00:00Z", "end": "2024-01-02T05:00:00+00:00"})
    body = r.json()
    assert [o["ts"] for o in body["observations"]] == [f"2024-01-02T0{h}:00:00Z" for h in range(6)]
    assert body["next_cursor"] is None


@pytest.mark.parametrize(("params", "named"), [
    ({"start": "2024-01-02T00:00:00"}, "start"),
    ({"limit": 10001}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"start": "2024-01-03T00:00:00Z", "end": "2024-01-02T00:00:00Z"}, "before start"),
])
def test_bad_observation_queries_are_422_naming_the_parameter(sqlite_api: Api, params: dict[str, str | int],
                                                              named: str) -> None:
    r = sqlite_api.client.get(f"/v1/series/{TRAINED}/observations", params=params)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith(PROBLEM)
    assert named in r.json()["detail"]


# ---------------------------------------------------------------- models and predictions


def test_models_list_versions_with_metrics_lineage_and_no_weights(api: Api) -> None:
    r = api.client.get(f"/v1/series/{TRAINED}/models")
    assert r.status_code == 200
    versions = r.json()["versions"]
    assert [v["version"] for v in versions] == [2, 1]
    assert [v["is_champion"] for v in versions] == [True, False]
    one = api.client.get(f"/v1/models/{versions[0]['id']}").json()
    assert one["metrics"]["model"]["mase"] > 0 and "naive" in one["metrics"]
    assert one["lineage"]["row_count"] == 600
    assert one["hyperparameters"]["window"] == 24
    assert one["weights_bytes"] > 0 and "weights" not in one
    missing = api.client.get("/v1/models/999999")
    assert missing.status_code == 404 and "999999" in missing.json()["detail"]


def _predictor(url: str, model_version_id: int) -> Predictor:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            return Predictor.from_artifact(*registry.load_artifact(session, model_version_id=model_version_id).parts())
    finally:
        engine.dispose()


def test_predict_matches_the_predictor_called_directly(api: Api, api_settings: Settings) -> None:
    mv_id = champion_id(api)
    rng = np.random.default_rng(0)
    phase, scale = rng.uniform(0, 6, (64, 1)), rng.uniform(0.5, 2, (64, 1))
    windows = np.sin(np.arange(24)[None, :] / 24 * 2 * np.pi + phase) * scale  # (64, 24)
    r = api.client.post(f"/v1/models/{mv_id}/predict", json={"windows": windows.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version_id"] == mv_id and body["series_key"] == TRAINED and body["version"] == 2
    assert body["window"] == 24
    expected = _predictor(api_settings.database_url, mv_id).predict(windows)
    np.testing.assert_allclose(body["predictions"], expected, rtol=1e-6, atol=1e-9)


def test_predict_with_a_wrong_window_length_is_422_naming_the_shape(sqlite_api: Api) -> None:
    mv_id = champion_id(sqlite_api)
    r = sqlite_api.client.post(f"/v1/models/{mv_id}/predict", json={"windows": [[0.0] * 24, [0.0] * 23]})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith(PROBLEM)
    detail = r.json()["detail"]
    assert "windows[1] has 23 values" in detail and "exactly 24" in detail and "(2, 24)" in detail


def test_predict_batch_over_the_limit_is_a_413_problem(sqlite_api_db: str) -> None:
    with running_api(make_settings(sqlite_api_db, api={"max_predict_batch": 4})) as small:
        r = small.client.post(f"/v1/models/{champion_id(small)}/predict", json={"windows": [[0.0] * 24] * 5})
        assert r.status_code == 413
        assert r.headers["content-type"].startswith(PROBLEM)
        assert "5 windows" in r.json()["detail"] and "at most 4" in r.json()["detail"]
        ok = small.client.post(f"/v1/models/{champion_id(small)}/predict", json={"windows": [[0.0] * 24] * 4})
        assert ok.status_code == 200 and len(ok.json()["predictions"]) == 4


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_predict_refuses_non_finite_values_with_a_422(sqlite_api: Api, token: str) -> None:
    body = '{"windows": [[' + ", ".join(["0.5"] * 23 + [token]) + "]]}"
    r = sqlite_api.client.post(f"/v1/models/{champion_id(sqlite_api)}/predict", content=body,
                        headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith(PROBLEM)
    assert "windows[0][23]" in r.json()["detail"] and "finite" in r.json()["detail"]


def test_predict_for_an_unknown_model_is_404(sqlite_api: Api) -> None:
    r = sqlite_api.client.post("/v1/models/424242/predict", json={"windows": [[0.0] * 24]})
    assert r.status_code == 404 and "424242" in r.json()["detail"]
