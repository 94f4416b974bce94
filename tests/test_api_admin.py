"""Admin endpoints over real HTTP, on SQLite and PostgreSQL: pushing observations, promotion
and rollback seen by another process, triggered jobs, and the API-key check."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api_server import ADMIN_KEY, BASELINE, PUSHED, TRAINED, Api, make_settings, running_api, wait_for

PROBLEM = "application/problem+json"
HOURS = [f"2024-05-01T{h:02d}:00:00Z" for h in range(24)]


def push_json(api: Api, key: str, rows: list[dict[str, Any]], **params: str) -> httpx.Response:
    return api.client.post(f"/v1/series/{key}/observations", json=rows, params=params, headers=api.admin)


def push_csv(api: Api, key: str, text: str, **params: str) -> httpx.Response:
    return api.client.post(f"/v1/series/{key}/observations", content=text.encode(), params=params,
                           headers={**api.admin, "content-type": "text/csv"})


# ---------------------------------------------------------------- push


def test_pushed_json_and_csv_show_up_and_a_second_identical_push_is_all_unchanged(api: Api) -> None:
    rows = [{"ts": t, "value": float(i)} for i, t in enumerate(HOURS[:12])]
    first = push_json(api, PUSHED, rows)
    assert first.status_code == 200, first.text
    assert first.json() | {"forecast": None, "ingest_run_id": 0} == {
        "series_key": PUSHED, "created": True, "new": 12, "updated": 0, "unchanged": 0, "rejected": 0, "notes": [],
        "forecast": None, "ingest_run_id": 0,
    }
    assert first.json()["forecast"]["target_ts"] == "2024-05-01T12:00:00Z"  # refreshed in the same transaction

    csv = "ts,value\n" + "".join(f"{t},{i}\n" for i, t in enumerate(HOURS[12:], start=12))
    second = push_csv(api, PUSHED, csv)
    assert second.status_code == 200, second.text
    assert (second.json()["new"], second.json()["created"]) == (12, False)
    assert second.json()["forecast"]["target_ts"] == "2024-05-02T00:00:00Z"

    page = api.client.get(f"/v1/series/{PUSHED}/observations").json()
    assert [(o["ts"], o["value"]) for o in page["observations"]] == [(t, float(i)) for i, t in enumerate(HOURS)]

    again = push_csv(api, PUSHED, csv)
    assert (again.json()["new"], again.json()["updated"], again.json()["unchanged"]) == (0, 0, 12)
    changed = push_json(api, PUSHED, [{"ts": HOURS[0], "value": 99.0}, {"ts": "2024-05-01T01:30:00+00:30",
                                                                        "value": 1.0}])  # = 01:00Z
    assert (changed.json()["new"], changed.json()["updated"], changed.json()["unchanged"]) == (0, 1, 1)
    assert api.client.get(f"/v1/series/{PUSHED}").json()["observation_count"] == 24


def test_push_with_a_naive_timestamp_is_422_naming_the_row(sqlite_api: Api) -> None:
    r = push_json(sqlite_api, PUSHED, [{"ts": HOURS[0], "value": 1}, {"ts": "2024-05-01T01:00:00", "value": 2}])
    assert r.status_code == 422
    assert r.headers["content-type"].startswith(PROBLEM)
    assert "row 2: timestamp '2024-05-01T01:00:00' has no UTC offset" in r.json()["detail"]

    r = push_csv(sqlite_api, PUSHED, f"ts,value\n{HOURS[0]},1\n{HOURS[1]},2\n2024-05-01 02:00:00,3\n")
    assert r.status_code == 422
    assert "row 3" in r.json()["detail"] and "no UTC offset" in r.json()["detail"]
    assert sqlite_api.client.get(f"/v1/series/{PUSHED}").json()["observation_count"] == 0  # nothing half-written


@pytest.mark.parametrize(("body", "content_type", "named"), [
    ("ts,value\n2024-05-01T00:00:00Z,lots\n", "text/csv", "row 1: value 'lots'"),
    ("time,reading\n2024-05-01T00:00:00Z,1\n", "text/csv", "header"),
    ('{"ts": "2024-05-01T00:00:00Z"}', "application/json", "body"),
    ("", "application/json", "empty"),
    ("ts,value\n", "text/plain", "text/plain"),
])
def test_bad_push_bodies_are_refused_naming_what_is_wrong(sqlite_api: Api, body: str, content_type: str,
                                                          named: str) -> None:
    r = sqlite_api.client.post(f"/v1/series/{PUSHED}/observations", content=body.encode(),
                        headers={**sqlite_api.admin, "content-type": content_type})
    assert r.status_code in (415, 422), r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert named in r.json()["detail"]


def test_push_to_an_undeclared_key_is_404_unless_push_create_is_allowed(api: Api, api_db: str) -> None:
    rows = [{"ts": t, "value": 1.0} for t in HOURS[:3]]
    r = push_json(api, "push:new", rows, frequency="1h")
    assert r.status_code == 404 and "allow_push_create" in r.json()["detail"]

    with running_api(make_settings(api_db, api={"allow_push_create": True})) as open_api:
        no_freq = push_json(open_api, "push:new", rows)
        assert no_freq.status_code == 422 and "frequency" in no_freq.json()["detail"]
        bad_freq = push_json(open_api, "push:new", rows, frequency="fortnightly")
        assert bad_freq.status_code == 422 and "'fortnightly'" in bad_freq.json()["detail"]
        bad_key = push_json(open_api, "push:a b", rows, frequency="1h")
        assert bad_key.status_code == 422 and "push:a b" in bad_key.json()["detail"]
        made = push_json(open_api, "push:new", rows, frequency="1h")
        assert made.status_code == 200 and made.json()["created"] is True
        more = push_json(open_api, "push:new", [{"ts": HOURS[3], "value": 2.0}])
        assert more.status_code == 200 and more.json()["created"] is False
        series = open_api.client.get("/v1/series/push:new").json()
        assert series["source"] == "push" and series["configured"] is False and series["observation_count"] == 4
        # A series from a non-push source cannot be written by a push unless it is declared.
        assert push_json(open_api, BASELINE, rows).status_code == 200  # declared: allowed


# ---------------------------------------------------------------- promote / rollback


def test_promotion_and_rollback_change_the_next_get_in_another_process(api: Api, api_settings: Any) -> None:
    with running_api(api_settings) as reader:  # a second app on the same database: another "process"
        def served() -> Any:
            return reader.client.get(f"/v1/series/{TRAINED}/forecast").json()["model_version"]

        def served_here() -> Any:  # the process that made the change
            return api.client.get(f"/v1/series/{TRAINED}/forecast").json()["model_version"]

        assert served() == 2 and served_here() == 2
        r = api.client.post(f"/v1/series/{TRAINED}/promote", json={"version": 1}, headers=api.admin)
        assert r.status_code == 200, r.text
        assert (r.json()["version"], r.json()["previous_version"]) == (1, 2)
        assert r.json()["forecast"]["model_version"] == 1
        assert served() == 1 and served_here() == 1
        models = {v["version"]: v for v in reader.client.get(f"/v1/series/{TRAINED}/models").json()["versions"]}
        assert models[1]["is_champion"] and models[1]["status"] == "champion"

        r = api.client.post(f"/v1/series/{TRAINED}/rollback", headers=api.admin)
        assert r.status_code == 200, r.text
        assert (r.json()["version"], r.json()["previous_version"]) == (2, 1)
        assert served() == 2 and served_here() == 2


def test_promoting_a_version_that_does_not_exist_is_404_listing_the_versions(sqlite_api: Api) -> None:
    r = sqlite_api.client.post(f"/v1/series/{TRAINED}/promote", json={"version": 9}, headers=sqlite_api.admin)
    assert r.status_code == 404
    assert "no version 9" in r.json()["detail"] and "1, 2" in r.json()["detail"]
    r = sqlite_api.client.post(f"/v1/series/{TRAINED}/promote", json={"version": 0}, headers=sqlite_api.admin)
    assert r.status_code == 422 and "body.version" in r.json()["detail"]


def test_rollback_with_nothing_to_return_to_is_a_409(sqlite_api: Api) -> None:
    r = sqlite_api.client.post(f"/v1/series/{BASELINE}/rollback", headers=sqlite_api.admin)
    assert r.status_code == 409
    assert r.headers["content-type"].startswith(PROBLEM)
    assert BASELINE in r.json()["detail"]


def _add_rejected_copy_of_v2(database_url: str) -> int:
    """A v3 of TRAINED with v2's weights and a holdout MASE of 5 (the gate rejects it); its number."""
    from forecaster.store import registry
    from forecaster.store.tables import ModelVersion, make_engine, make_sessionmaker, write_session
    from forecaster.store.series import series_by_key

    engine = make_engine(database_url)
    try:
        with write_session(make_sessionmaker(engine)) as session:
            series = series_by_key(session, TRAINED)
            v2 = session.scalars(select_version(series.id, 2)).one()
            metrics = {**{k: m for k, m in v2.metrics.items() if k != "served"},  # judged by the model alone
                       "model": {**v2.metrics["model"], "mase": 5.0, "mase_folds": [5.0] * 4}}
            mv = registry.add_version(session, series, hyperparameters=v2.hyperparameters, scaler=v2.scaler,
                                      weights=v2.weights, metrics=metrics, lineage=v2.lineage, status="rejected",
                                      status_reason="gate")
            assert isinstance(mv, ModelVersion)
            return mv.version
    finally:
        engine.dispose()


def select_version(series_id: int, version: int) -> Any:
    from sqlalchemy import select

    from forecaster.store.tables import ModelVersion

    return select(ModelVersion).where(ModelVersion.series_id == series_id, ModelVersion.version == version)


def test_promoting_a_version_the_gate_rejected_needs_force_and_the_answer_says_what_the_gate_said(
        sqlite_api: Api) -> None:
    v3 = _add_rejected_copy_of_v2(sqlite_api.settings.database_url)
    r = sqlite_api.client.post(f"/v1/series/{TRAINED}/promote", json={"version": v3}, headers=sqlite_api.admin)
    assert r.status_code == 409 and r.headers["content-type"].startswith(PROBLEM)
    detail = r.json()["detail"]
    assert f"{TRAINED} v{v3} was rejected by the gate (model MASE 5.000 does not beat naive" in detail
    assert '"force": true' in detail
    assert sqlite_api.client.get(f"/v1/series/{TRAINED}/forecast").json()["model_version"] == 2  # nothing moved

    r = sqlite_api.client.post(f"/v1/series/{TRAINED}/promote", json={"version": v3, "force": True},
                               headers=sqlite_api.admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["serving"], body["version"], body["previous"], body["forced"]) == ("model", v3, "v2", True)
    assert body["gate"]["passed"] is False and body["gate"]["reason"].startswith("model MASE 5.000 does not beat")
    assert body["forecast"]["model_version"] == v3
    assert sqlite_api.client.get(f"/v1/series/{TRAINED}/forecast").json()["model_version"] == v3


def test_an_admin_puts_a_series_back_on_its_baseline_and_a_rollback_returns_to_the_model(api: Api) -> None:
    r = api.client.post(f"/v1/series/{TRAINED}/baseline", headers=api.admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["serving"], body["version"], body["previous"], body["changed"]) == ("baseline", None, "v2", True)
    assert body["forecast"]["model_version"] in ("naive", "seasonal_naive")
    served = api.client.get(f"/v1/series/{TRAINED}/forecast").json()
    assert served["model_version"] == body["forecast"]["model_version"] and served["model_version_id"] is None
    assert api.client.get(f"/v1/series/{TRAINED}").json()["champion_version"] is None
    again = api.client.post(f"/v1/series/{TRAINED}/baseline", headers=api.admin).json()
    assert (again["serving"], again["changed"]) == ("baseline", False)

    r = api.client.post(f"/v1/series/{TRAINED}/rollback", headers=api.admin)
    assert r.status_code == 200, r.text
    assert (r.json()["serving"], r.json()["version"], r.json()["previous"]) == ("model", 2, "baseline")
    assert api.client.get(f"/v1/series/{TRAINED}/forecast").json()["model_version"] == 2
    assert api.client.post("/v1/series/nope:nope/baseline", headers=api.admin).status_code == 404


def test_rollback_walks_back_through_what_served_down_to_the_baseline(sqlite_api: Api) -> None:
    seen = []
    for _ in range(6):
        r = sqlite_api.client.post(f"/v1/series/{TRAINED}/rollback", headers=sqlite_api.admin)
        if r.status_code == 409:
            assert "nothing to roll back to" in r.json()["detail"]
            break
        assert r.status_code == 200, r.text
        seen.append(r.json()["serving"])
        assert sqlite_api.client.get(f"/v1/series/{TRAINED}/forecast").json()["model_version_id"] == \
            r.json()["model_version_id"]
    assert seen and seen[-1] == "baseline"  # before any model, the baseline served; rollback gets back there


# ---------------------------------------------------------------- jobs


def test_a_triggered_train_runs_off_the_request_and_adds_a_version(api: Api, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        if api.settings.database_url.startswith("postgresql"):  # the API only enqueues: a worker trains
            from tests.test_workers import running_worker

            stack.enter_context(running_worker(api.settings, tmp_path))
        _triggered_train_adds_a_version(api)


def _triggered_train_adds_a_version(api: Api) -> None:
    r = api.client.post("/v1/jobs/train", json={"keys": [TRAINED], "cold": True}, headers=api.admin)
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    assert r.headers["location"] == f"/v1/jobs/runs/{run_id}"
    assert r.json()["kind"] == "train" and r.json()["trigger"] == "api" and r.json()["cold"] is True

    def finished() -> Any:
        run = api.client.get(r.headers["location"], headers=api.admin).json()
        return run if run["status"] not in ("queued", "running") else None

    run = wait_for(finished, timeout_s=60)
    assert run["status"] == "ok", run
    assert run["series_done"] == 1 and run["progress"]["results"][0]["series"] == TRAINED
    versions = api.client.get(f"/v1/series/{TRAINED}/models").json()["versions"]
    assert [v["version"] for v in versions] == [3, 2, 1]
    # cold reached whoever trained (this process, or a worker through the queue): random weights, not v2's
    assert versions[0]["lineage"]["start"]["kind"] == "cold"
    assert versions[0]["lineage"]["start"]["why"] == "a cold retrain was asked for"
    runs = api.client.get("/v1/jobs/runs", params={"kind": "train"}, headers=api.admin).json()["runs"]
    assert runs[0]["id"] == run_id and runs[0]["cold"] is True


def test_a_triggered_ingest_of_all_series_skips_push_series(sqlite_api: Api) -> None:
    r = sqlite_api.client.post("/v1/jobs/ingest", headers=sqlite_api.admin)
    assert r.status_code == 202, r.text
    assert set(r.json()["series_keys"]) == {TRAINED, BASELINE}
    def finished() -> Any:
        run = sqlite_api.client.get(r.headers["location"], headers=sqlite_api.admin).json()
        return run if run["finished_at"] else None

    run = wait_for(finished, timeout_s=60)
    assert run["status"] == "ok", run


def test_cold_is_a_train_option_only_and_must_be_a_boolean(sqlite_api: Api) -> None:
    r = sqlite_api.client.post("/v1/jobs/ingest", json={"cold": True}, headers=sqlite_api.admin)
    assert r.status_code == 422 and "cold" in r.text, r.text
    r = sqlite_api.client.post("/v1/jobs/train", json={"cold": "very"}, headers=sqlite_api.admin)
    assert r.status_code == 422 and "cold" in r.text, r.text


def test_triggering_a_job_for_an_unknown_key_is_404(sqlite_api: Api) -> None:
    r = sqlite_api.client.post("/v1/jobs/train", json={"keys": ["nope:x"]}, headers=sqlite_api.admin)
    assert r.status_code == 404 and "nope:x" in r.json()["detail"]
    assert sqlite_api.client.get("/v1/jobs/runs/987654", headers=sqlite_api.admin).status_code == 404


# ---------------------------------------------------------------- the API key


ADMIN_CALLS = [
    ("POST", f"/v1/series/{PUSHED}/observations", [{"ts": HOURS[0], "value": 1.0}]),
    ("POST", f"/v1/series/{TRAINED}/promote", {"version": 1}),
    ("POST", f"/v1/series/{TRAINED}/rollback", None),
    ("POST", "/v1/jobs/ingest", None),
    ("POST", "/v1/jobs/train", {"keys": [TRAINED]}),
    ("GET", "/v1/jobs/runs", None),
    ("GET", "/v1/jobs/runs/1", None),
]


def test_admin_endpoints_answer_401_without_a_key_and_403_with_a_wrong_one(sqlite_api: Api) -> None:
    for method, path, body in ADMIN_CALLS:
        none = sqlite_api.client.request(method, path, json=body)
        assert none.status_code == 401, (path, none.text)
        assert none.headers["content-type"].startswith(PROBLEM)
        assert "X-API-Key" in none.json()["detail"]
        wrong = sqlite_api.client.request(method, path, json=body, headers={"X-API-Key": ADMIN_KEY + "x"})
        assert wrong.status_code == 403, (path, wrong.text)
        assert ADMIN_KEY not in wrong.text
    assert sqlite_api.client.get(f"/v1/series/{TRAINED}/forecast").json()["model_version"] == 2  # nothing moved


def test_admin_endpoints_are_closed_when_no_keys_are_configured(sqlite_api_db: str) -> None:
    with running_api(make_settings(sqlite_api_db, api_keys=[])) as closed:
        for method, path, body in ADMIN_CALLS[:3]:
            r = closed.client.request(method, path, json=body)
            assert r.status_code == 403, r.text
            assert "api_keys" in r.json()["detail"]


def test_any_of_several_configured_keys_is_accepted(sqlite_api_db: str) -> None:
    with running_api(make_settings(sqlite_api_db, api_keys=["first-key", ADMIN_KEY])) as multi:
        for key in ("first-key", ADMIN_KEY):
            assert multi.client.get("/v1/jobs/runs", headers={"X-API-Key": key}).status_code == 200
