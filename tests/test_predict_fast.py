"""POST /v1/models/{id}/predict answered before routing (``PredictFastPath``): the same bytes, headers,
problems and metrics as the route, and everything it does not take left to the route."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import exc as sa_exc

from api.routes import models
from tests.api_server import (  # noqa: F401
    TRAINED,
    Api,
    api_template,
    make_settings,
    running_api,
    sqlite_api,
    sqlite_api_db,
)
from tests.test_api import _predictor, champion_id

PROBLEM = "application/problem+json"
ROUTE = "/v1/models/{model_version_id}/predict"


@pytest.fixture
def replays(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """The bodies the fast path handed on to the route (``_replay``), in order."""
    seen: list[bytes] = []
    real = models._replay

    def spy(raw: bytes, receive: Any) -> Any:
        seen.append(raw)
        return real(raw, receive)

    monkeypatch.setattr(models, "_replay", spy)
    yield seen


def _post(api: Api, path: str, body: bytes, content_type: str = "application/json") -> httpx.Response:
    return api.client.post(path, content=body, headers={"content-type": content_type})


def _windows(batch: int, window: int = 24) -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.sin(np.arange(window)[None, :] / 4 + rng.uniform(0, 6, (batch, 1))) * rng.uniform(0.5, 3, (batch, 1))


def test_the_fast_path_sends_the_routes_bytes_and_the_models_exact_values(
    sqlite_api: Api, replays: list[bytes], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    mv = champion_id(sqlite_api)
    windows = _windows(64)
    body = json.dumps({"windows": windows.tolist()}).encode()
    fast = _post(sqlite_api, f"/v1/models/{mv}/predict", body)
    assert fast.status_code == 200 and replays == [], "the common body went to the route"
    monkeypatch.setattr(models, "LOOP_PARSE_BYTES", 0)  # now the fast path declines it: the route answers
    routed = _post(sqlite_api, f"/v1/models/{mv}/predict", body)
    assert routed.status_code == 200 and replays == [body]
    assert fast.content == routed.content
    for name in ("content-type", "content-length"):
        assert fast.headers[name] == routed.headers[name]
    assert fast.headers["content-type"] == "application/json"
    out = fast.json()
    assert list(out) == ["model_version_id", "series_key", "version", "window", "horizon", "predictions", "paths"]
    assert (out["model_version_id"], out["series_key"], out["version"], out["window"]) == (mv, TRAINED, 2, 24)
    paths = _predictor(sqlite_api.settings.database_url, mv).predict_paths(windows)
    assert out["horizon"] == paths.shape[1]
    assert out["paths"] == paths.tolist()  # the same doubles: JSON's shortest round-trip digits
    assert out["predictions"] == paths[:, 0].tolist()


def test_a_small_batch_is_run_on_the_event_loop_once_the_model_is_loaded_and_answers_the_same(
    sqlite_api: Api, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """The first pass loads the model on the torch thread; later ones of at most ``INLINE_WINDOWS`` windows
    run where the request was read (no hand-off to wait for) while the loop serves predicts only, larger
    ones and those beside other traffic on the torch thread, with the same bytes either way."""
    from api import predictors

    ran_on: list[str] = []
    real = models._run_predict

    def spy(*args: Any) -> bytes:
        ran_on.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(models, "_run_predict", spy)
    monkeypatch.setattr(models, "QUIET_S", 0.0)  # predicts only from the first on (the loop is "alone")
    mv = champion_id(sqlite_api)
    small = json.dumps({"windows": _windows(64).tolist()}).encode()
    large = json.dumps({"windows": _windows(predictors.INLINE_WINDOWS + 1).tolist()}).encode()
    first, again, big = (_post(sqlite_api, f"/v1/models/{mv}/predict", b) for b in (small, small, large))
    assert first.status_code == again.status_code == big.status_code == 200
    assert first.content == again.content and len(big.json()["paths"]) == predictors.INLINE_WINDOWS + 1
    # Another request in the last QUIET_S: the loop is not serving predicts only, the pass is handed off.
    monkeypatch.setattr(models, "QUIET_S", 3600.0)
    assert sqlite_api.client.get("/v1/series").status_code == 200
    assert _post(sqlite_api, f"/v1/models/{mv}/predict", small).content == first.content
    torch_thread = [name.startswith("forecaster-torch") for name in ran_on]
    assert torch_thread == [True, False, True, True], ran_on


def test_errors_of_the_run_are_the_routes_problems(
    sqlite_api: Api, replays: list[bytes], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    mv = champion_id(sqlite_api)
    cases = [
        (f"/v1/models/{mv}/predict", {"windows": [[0.5] * 23] * 2}, 422, ["windows[0] has 23 values", "(2, 24)"]),
        ("/v1/models/424242/predict", {"windows": [[0.5] * 24]}, 404, ["424242"]),
        (f"/v1/models/{mv}/predict", {"windows": [[1e308] * 24]}, 422, ["not a finite number"]),
    ]
    fast = [_post(sqlite_api, path, json.dumps(body).encode()) for path, body, _, _ in cases]
    assert replays == [], "the fast path handed its own errors to the route"
    monkeypatch.setattr(models, "LOOP_PARSE_BYTES", 0)
    routed = [_post(sqlite_api, path, json.dumps(body).encode()) for path, body, _, _ in cases]
    for (_, _, status, needles), a, b in zip(cases, fast, routed, strict=True):
        assert a.status_code == b.status_code == status, a.text
        assert a.headers["content-type"] == b.headers["content-type"] == PROBLEM
        assert a.json() == b.json()
        assert all(n in a.json()["detail"] for n in needles), a.text


def test_what_the_fast_path_does_not_take_goes_to_the_route(sqlite_api: Api, replays: list[bytes]) -> None:  # noqa: F811
    mv = champion_id(sqlite_api)
    ok = json.dumps({"windows": [[0.5] * 24]}).encode()
    r = _post(sqlite_api, f"/v1/models/{mv}/predict", ok, "text/plain")
    assert r.status_code == 415 and "text/plain" in r.json()["detail"] and replays == []  # not even read
    r = _post(sqlite_api, f"/v1/models/{mv}/predict", ok, "application/vnd.api+json; charset=utf-8")
    assert r.status_code == 200 and replays == []  # JSON as require_json reads it: the fast path
    ragged = json.dumps({"windows": [[0.5] * 24, [0.5] * 23]}).encode()
    r = _post(sqlite_api, f"/v1/models/{mv}/predict", ragged)  # the route's validation names the short window
    assert r.status_code == 422 and "windows[1] has 23 values" in r.json()["detail"]
    r = _post(sqlite_api, f"/v1/models/{mv}/predict", b'{"windows": [[0.5, "x"]]}')
    assert r.status_code == 422 and "windows[0][1]" in r.json()["detail"]
    r = _post(sqlite_api, f"/v1/models/{mv}/predict", b"")
    assert r.status_code == 422 and "empty" in r.json()["detail"]
    assert len(replays) == 3
    r = _post(sqlite_api, f"/v1/models/{2**63}/predict", ok)  # past the id's range: the route's own 422
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert sqlite_api.client.get(f"/v1/models/{mv}/predict").status_code == 405
    assert len(replays) == 3


def test_a_fast_path_request_is_counted_under_the_routes_template(sqlite_api: Api) -> None:  # noqa: F811
    mv = champion_id(sqlite_api)
    assert _post(sqlite_api, f"/v1/models/{mv}/predict", json.dumps({"windows": [[0.5] * 24] * 3}).encode()) \
        .status_code == 200
    text = sqlite_api.client.get("/metrics").text
    assert f'forecaster_http_requests_total{{method="POST",route="{ROUTE}",status="200"}} 1.0' in text
    assert "forecaster_predictions_total 3.0" in text


def test_the_routes_body_cap_holds_on_the_fast_path(sqlite_api_db: str) -> None:  # noqa: F811
    with running_api(make_settings(sqlite_api_db, api={"max_predict_batch": 1})) as small:  # cap ~11.6 KB
        path = f"/v1/models/{champion_id(small)}/predict"
        big = json.dumps({"windows": [[0.5] * 24] * 100}).encode()
        for r in (_post(small, path, big),  # announced by Content-Length
                  small.client.post(path, content=iter([big[:8000], big[8000:]]),  # chunked: counted
                                    headers={"content-type": "application/json"})):
            assert r.status_code == 413 and r.headers["content-type"] == PROBLEM, r.text
            assert "api.max_predict_batch = 1 windows" in r.json()["detail"] and r.json()["limit"] < len(big)


def test_a_storage_error_is_answered_by_the_routes_handler(
    sqlite_api: Api, replays: list[bytes], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    mv = champion_id(sqlite_api)

    def down(model_version_id: int) -> None:
        raise sa_exc.OperationalError("SELECT 1", {}, Exception("the database is gone"))

    monkeypatch.setattr(sqlite_api.app.state.forecaster.predictors, "cached", down)
    r = _post(sqlite_api, f"/v1/models/{mv}/predict", json.dumps({"windows": [[0.5] * 24]}).encode())
    assert r.status_code == 503 and r.headers["content-type"] == PROBLEM and r.headers["retry-after"] == "5"
    assert "gone" not in r.text  # the driver's text goes to the log only
    assert len(replays) == 1
