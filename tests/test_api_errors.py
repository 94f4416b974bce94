"""How the API fails and how it is watched: problems for a lost database and for bugs,
Prometheus metrics, readiness, the torch-free read path, and the documented routes."""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import update

import api.app as api_app
import api.server as api_server_module
from api.app import create_app
from forecaster import plugins
from forecaster.config.settings import Settings
from forecaster.store.tables import ModelVersion, make_engine, make_sessionmaker, write_session
from tests.api_server import ADMIN_KEY, BASELINE, TRAINED, Api, make_settings, running_api, wait_for

ROOT = Path(__file__).resolve().parent.parent
PROBLEM = "application/problem+json"


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://postgres@127.0.0.1:1/x",  # nothing listens on port 1
    "sqlite:////nonexistent-dir/for/forecaster.db",  # a file that cannot be opened
])
def test_an_unreachable_database_is_a_503_problem(url: str) -> None:
    with running_api(make_settings(url)) as down:
        for method, path in [("GET", f"/v1/series/{TRAINED}/forecast"), ("GET", "/v1/series"),
                             ("GET", "/readyz"), ("POST", "/v1/models/1/predict")]:
            body = {"windows": [[1.0] * 24]} if method == "POST" else None
            r = down.client.request(method, path, json=body)
            assert r.status_code == 503, (path, r.text)
            assert r.headers["content-type"].startswith(PROBLEM)
            assert r.headers["retry-after"] == "5"
            assert r.json()["detail"].startswith("the database is unavailable")
            assert "Traceback" not in r.text and "postgres@" not in r.text and "nonexistent" not in r.text
        assert down.client.get("/healthz").status_code == 200  # alive, just not ready
        metrics = down.client.get("/metrics")
        assert metrics.status_code == 200 and "forecaster_database_up 0.0" in metrics.text


def test_readyz_is_503_until_the_schema_is_migrated(tmp_path: Path) -> None:
    with running_api(make_settings(f"sqlite:///{tmp_path / 'empty.db'}")) as fresh:
        r = fresh.client.get("/readyz")
        assert r.status_code == 503
        assert "forecaster migrate" in r.json()["detail"] and "none" in r.json()["detail"]


def test_readyz_answers_when_the_schema_is_at_head(api: Api) -> None:
    r = api.client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["schema_revision"] == r.json()["head_revision"]


def test_an_unexpected_exception_is_a_500_problem_without_a_traceback(
    sqlite_api_db: str, caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(make_settings(sqlite_api_db))

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals: /etc/shadow")

    with caplog.at_level(logging.ERROR, logger="forecaster"), running_api(app.state.forecaster.settings, app) as a:
        r = a.client.get("/boom")
        assert r.status_code == 500
        assert r.headers["content-type"].startswith(PROBLEM)
        assert r.json() == {"type": "urn:forecaster:problem:internal", "title": "Internal Server Error",
                            "status": 500, "detail": "an unexpected error occurred; the server log has the details"}
        assert a.client.get("/healthz").status_code == 200  # still serving
        assert 'route="/boom",status="500"' in a.client.get("/metrics").text
    logged = [rec for rec in caplog.records if rec.getMessage().startswith("api.unhandled")]
    assert logged and logged[0].exc_info is not None  # the traceback went to the log


def test_a_broken_stored_model_is_a_500_not_a_stack_trace(sqlite_api_db: str) -> None:
    engine = make_engine(sqlite_api_db)
    with write_session(make_sessionmaker(engine)) as session:  # a version this code cannot load
        session.execute(update(ModelVersion).where(ModelVersion.version == 2).values(hyperparameters={"format": 99}))
    engine.dispose()
    with running_api(make_settings(sqlite_api_db)) as a:
        mv_id = a.client.get(f"/v1/series/{TRAINED}").json()["champion_model_version_id"]
        r = a.client.post(f"/v1/models/{mv_id}/predict", json={"windows": [[0.0] * 24]})
        assert r.status_code == 500
        assert r.headers["content-type"].startswith(PROBLEM)
        assert "Traceback" not in r.text and "format" not in r.text
        assert a.client.get(f"/v1/series/{TRAINED}/forecast").status_code == 200  # reads are unaffected


def test_unknown_routes_and_methods_are_problems_too(sqlite_api: Api) -> None:
    r = sqlite_api.client.get("/v2/anything")
    assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM)
    assert "/v2/anything" in r.json()["detail"]
    r = sqlite_api.client.delete(f"/v1/series/{TRAINED}/forecast")
    assert r.status_code == 405 and r.headers["content-type"].startswith(PROBLEM)


def test_a_body_that_is_not_json_is_a_422_problem(sqlite_api: Api) -> None:
    r = sqlite_api.client.post("/v1/forecast", content=b"{keys: nope", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM)
    assert "not valid JSON" in r.json()["detail"]


def test_ids_and_versions_past_64_bits_are_client_errors_naming_the_value(sqlite_api: Api) -> None:
    """Found by schemathesis: integers past what the database holds reached the driver (500)."""
    huge = 234485799948802636726383325216768
    for method, path, body in [("GET", f"/v1/models/{huge}", None),
                               ("POST", f"/v1/models/{huge}/predict", {"windows": [[1.0] * 24]}),
                               ("GET", f"/v1/jobs/runs/{huge}", None)]:
        r = sqlite_api.client.request(method, path, json=body, headers=sqlite_api.admin)
        assert r.status_code == 422, (path, r.text)
        assert r.headers["content-type"].startswith(PROBLEM) and str(huge) in r.json()["detail"]
    assert sqlite_api.client.get(f"/v1/models/{2**63 - 1}").status_code == 404  # the largest id: just unknown
    r = sqlite_api.client.post(f"/v1/series/{TRAINED}/promote", json={"version": 207699572431261643309056},
                               headers=sqlite_api.admin)
    assert r.status_code == 422 and "body.version = 207699572431261643309056" in r.json()["detail"]


def test_a_csv_push_that_is_not_utf8_is_a_422_naming_the_problem(sqlite_api: Api) -> None:
    body = b"ts,value\n2024-01-01T00:00:00Z,\xff\xfe1\n"
    r = sqlite_api.client.post("/v1/series/push:meter/observations", content=body,
                               headers={**sqlite_api.admin, "content-type": "text/csv"})
    assert r.status_code in (415, 422) and r.headers["content-type"].startswith(PROBLEM)
    assert "UTF-8" in r.json()["detail"]


def test_predicting_from_values_too_large_for_the_model_is_a_422_not_null(sqlite_api: Api) -> None:
    versions = sqlite_api.client.get(f"/v1/series/{TRAINED}/models").json()["versions"]
    model_id = versions[0]["id"]
    window = versions[0]["hyperparameters"]["window"]
    r = sqlite_api.client.post(f"/v1/models/{model_id}/predict", json={"windows": [[1e308] * window]})
    assert r.status_code == 422, r.text
    assert "windows[0]: the forecast is not a finite number (largest value sent: 1e+308)" in r.json()["detail"]
    assert "null" not in r.text.replace('"null"', "")
    ok = sqlite_api.client.post(f"/v1/models/{model_id}/predict", json={"windows": [[0.5] * window]})
    assert ok.status_code == 200 and all(isinstance(p, float) for p in ok.json()["predictions"])


def test_observations_near_the_largest_float_never_make_a_forecast_null_or_a_500(sqlite_api: Api) -> None:
    """Found by schemathesis: after pushes of values near 1e308, moving the champion overflowed in the model."""
    import datetime as dt

    from sqlalchemy import func, select

    from forecaster.store.tables import Observation
    from forecaster.store.series import series_by_key

    engine = make_engine(sqlite_api.settings.database_url)
    try:
        with write_session(make_sessionmaker(engine)) as session:  # as stored before any range check existed
            series = series_by_key(session, TRAINED)
            last = session.scalar(select(func.max(Observation.ts)).where(Observation.series_id == series.id))
            session.add_all(Observation(series_id=series.id, ts=last + dt.timedelta(hours=i + 1),
                                        value=1.7e308 if i % 2 else -1.7e308) for i in range(30))
    finally:
        engine.dispose()
    for action in ("baseline", "rollback"):
        r = sqlite_api.client.post(f"/v1/series/{TRAINED}/{action}", headers=sqlite_api.admin)
        assert r.status_code == 200, r.text
        forecast = sqlite_api.client.get(f"/v1/series/{TRAINED}/forecast")
        assert forecast.status_code == 200
        assert isinstance(forecast.json()["value"], float) and abs(forecast.json()["value"]) <= 1.8e308
        assert "Infinity" not in forecast.text and "NaN" not in forecast.text
    assert sqlite_api.client.get(f"/series/{TRAINED}").status_code == 200  # the chart draws it too


def test_the_dashboard_draws_a_series_whose_timestamps_reach_year_9999(sqlite_api: Api) -> None:
    """Found by schemathesis: far-future pushed timestamps made the chart's time axis overflow (500)."""
    import datetime as dt

    from forecaster.store.tables import Observation
    from forecaster.store.series import series_by_key

    engine = make_engine(sqlite_api.settings.database_url)
    try:
        with write_session(make_sessionmaker(engine)) as session:  # as stored before any calendar check existed
            series = series_by_key(session, BASELINE)
            session.add_all(Observation(series_id=series.id, ts=dt.datetime(9999, 12, 31, h, tzinfo=dt.timezone.utc),
                                        value=1.0) for h in (20, 21, 22))
    finally:
        engine.dispose()
    r = sqlite_api.client.get(f"/series/{BASELINE}")
    assert r.status_code == 200, r.text[:500]
    assert "<svg" in r.text


def test_triggering_a_job_for_an_empty_list_of_keys_is_a_422_like_forecast(sqlite_api: Api) -> None:
    for path in ("/v1/jobs/train", "/v1/jobs/ingest", "/v1/forecast"):
        r = sqlite_api.client.post(path, json={"keys": []}, headers=sqlite_api.admin)
        assert r.status_code == 422, (path, r.text)
        assert "body.keys" in r.json()["detail"] and "at least 1 item" in r.json()["detail"]
    assert sqlite_api.client.get("/v1/jobs/runs", headers=sqlite_api.admin).json()["runs"] == []  # nothing queued


@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_serve_refuses_a_port_outside_1_to_65535_naming_it(tmp_path: Path, port: str) -> None:
    cfg = tmp_path / "forecaster.toml"
    cfg.write_text(f'database_url = "sqlite:///{tmp_path / "f.db"}"\n', encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "forecaster.cli", "--config", str(cfg), "serve", "--port", port],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: --port {port} is not a TCP port: use 1-65535"


def test_serve_refuses_a_bad_port_given_in_code_too() -> None:
    from forecaster.errors import InvalidInput

    with pytest.raises(InvalidInput, match="--port 99999 is not a TCP port: use 1-65535"):
        api_server_module.serve(make_settings("sqlite://"), port=99999)


def test_an_oversized_body_is_a_413_problem(sqlite_api_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_app, "MAX_BODY_BYTES", 1000)
    with running_api(make_settings(sqlite_api_db)) as small:
        big = json.dumps({"keys": ["k" * 100] * 20}).encode()  # ~2 kB
        r = small.client.post("/v1/forecast", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert r.headers["content-type"].startswith(PROBLEM)
        assert "over 1000 bytes" in r.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield big[:600]
            yield big[600:]

        r = small.client.post("/v1/forecast", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert r.headers["content-type"].startswith(PROBLEM)
        assert small.client.post("/v1/forecast", json={"keys": [TRAINED]}).status_code == 200


# ---------------------------------------------------------------- metrics


def test_metrics_count_requests_by_route_template_and_read_run_outcomes_from_the_database(api: Api) -> None:
    for _ in range(2):
        r = api.client.get(f"/v1/series/{TRAINED}/forecast")
        assert r.status_code == 200
    served = r.json()["method"]  # model, or the candidate the version serves
    assert api.client.get("/v1/series/nope:x/forecast").status_code == 404
    text = api.client.get("/metrics").text
    assert 'forecaster_http_requests_total{method="GET",route="/v1/series/{key}/forecast",status="200"} 2.0' in text
    assert 'forecaster_http_requests_total{method="GET",route="/v1/series/{key}/forecast",status="404"} 1.0' in text
    assert "nope:x" not in text  # raw paths never become labels
    assert f'forecaster_forecasts_served_total{{method="{served}",series="sine:trained"}} 2.0' in text
    route = 'route="/v1/series/{key}/forecast"'
    assert f'forecaster_http_request_duration_seconds_bucket{{le="0.005",method="GET",{route}}}' in text
    assert re.search(r'forecaster_model_age_seconds\{series="sine:trained",version="2"\} \d', text)
    assert 'forecaster_ingest_runs{status="ok"} 2.0' in text  # the template's two ingests
    assert "forecaster_database_up 1.0" in text


# ---------------------------------------------------------------- torch stays off the read path


def test_reading_a_forecast_never_imports_torch(sqlite_api_db: str) -> None:
    script = textwrap.dedent(f"""
        import json, sys
        from tests.api_server import make_settings, running_api
        with running_api(make_settings({sqlite_api_db!r})) as api:
            statuses = [api.client.get(p).status_code for p in (
                "/v1/series/{TRAINED}/forecast", "/v1/series", "/v1/series/{TRAINED}/models", "/metrics")]
            statuses.append(api.client.post("/v1/forecast", json={{"keys": ["{TRAINED}"]}}).status_code)
        print(json.dumps({{"statuses": statuses,
                           "loaded": sorted(m for m in ("torch", "forecaster.modelling.predictor", "forecaster.modelling.network")
                                            if m in sys.modules)}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"statuses": [200, 200, 200, 200, 200], "loaded": []}


# ---------------------------------------------------------------- serving


def test_app_from_env_builds_the_app_from_the_file_named_by_forecaster_config(
    sqlite_api_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "forecaster.toml"
    config.write_text(f'database_url = "{sqlite_api_db}"\napi_keys = ["{ADMIN_KEY}"]\n\n'
                      '[[series]]\nkey = "sine:trained"\nsource = "sine"\nfrequency = "1h"\n', encoding="utf-8")
    for name in [k for k in os.environ if k.startswith("FORECASTER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FORECASTER_CONFIG", str(config))
    monkeypatch.setattr(api_app, "configure_logging", lambda level: None)  # keep pytest's log capture
    app = api_app.app_from_env()
    settings = app.state.forecaster.settings
    assert settings.config_path == str(config.resolve()) and settings.database_url == sqlite_api_db
    with running_api(settings, app) as a:
        r = a.client.get(f"/v1/series/{TRAINED}/forecast")
        assert r.status_code == 200 and r.json()["model_version"] == 2


def test_serve_gives_uvicorn_the_factory_and_the_config_path_when_there_are_several_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[object, dict[str, object]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.setattr(api_server_module, "configure_logging", lambda level: None)
    monkeypatch.delenv("FORECASTER_CONFIG", raising=False)
    settings = make_settings(f"sqlite:///{tmp_path / 'x.db'}", config_path=str(tmp_path / "forecaster.toml"))
    serve = plugins.load("api")  # the entry point `forecaster serve` and `forecaster up` call

    serve(settings, host="127.0.0.1", port=8123, workers=3)
    app, kw = calls[-1]
    assert app == "api.app:app_from_env" and kw["factory"] is True and kw["workers"] == 3
    assert (kw["host"], kw["port"]) == ("127.0.0.1", 8123)
    assert os.environ["FORECASTER_CONFIG"] == str(tmp_path / "forecaster.toml")

    serve(settings, host="127.0.0.1", port=8124)
    app, kw = calls[-1]
    assert app.state.forecaster.settings is settings and "workers" not in kw  # type: ignore[attr-defined]


# ---------------------------------------------------------------- documentation


DESIGN_PLACES = (ROOT / "DESIGN.md", ROOT / "docs" / "DESIGN.md", ROOT.parent / "shared" / "DESIGN.md")


def _design_routes() -> set[tuple[str, str]]:
    found = next((p for p in DESIGN_PLACES if p.exists()), None)
    if found is None:
        pytest.skip(f"DESIGN.md not found (looked in {', '.join(map(str, DESIGN_PLACES))})")
    text = found.read_text(encoding="utf-8")
    section = text.split("## HTTP API", 1)[1].split("\n## ", 1)[0]
    return {(m, re.sub(r"\{[^}]*\}", "{}", p)) for m, p in re.findall(r"`(GET|POST|PUT|DELETE) (/[^`\s]*)`", section)}




def test_every_route_in_the_design_is_in_the_openapi_schema() -> None:
    design = _design_routes()
    assert ("POST", "/v1/models/{}/predict") in design  # the parser found the section
    schema = create_app(Settings(database_url="sqlite://")).openapi()
    served = {(m.upper(), re.sub(r"\{[^}]*\}", "{}", p)) for p, ops in schema["paths"].items() for m in ops}
    assert design <= served, sorted(design - served)
    admin = {("POST", "/v1/series/{}/promote"), ("POST", "/v1/series/{}/rollback"), ("POST", "/v1/series/{}/baseline"),
             ("POST", "/v1/jobs/ingest"),
             ("POST", "/v1/jobs/train"), ("GET", "/v1/jobs/runs"), ("GET", "/v1/jobs/runs/{}")}
    assert admin <= served


def test_openapi_documents_examples_and_problem_bodies(sqlite_api: Api) -> None:
    assert sqlite_api.client.get("/docs").status_code == 200
    schema = sqlite_api.client.get("/openapi.json").json()
    forecast = schema["paths"]["/v1/series/{key}/forecast"]["get"]
    assert forecast["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ForecastOut")
    assert set(forecast["responses"]["404"]["content"]) == {PROBLEM}
    assert schema["components"]["schemas"]["ForecastOut"]["examples"][0]["model_version"] == 3
    push = schema["paths"]["/v1/series/{key}/observations"]["post"]
    assert {"application/json", "text/csv"} <= set(push["requestBody"]["content"])
    assert "APIKeyHeader" in schema["components"]["securitySchemes"]


def test_api_never_imports_jobs() -> None:
    for path in (ROOT / "api").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            assert not any(n == "jobs" or n.startswith("jobs.") for n in names), f"{path} imports {names}"
