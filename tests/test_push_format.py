"""One format for a pushed row, over real HTTP: JSON and CSV bodies take and refuse the same timestamps and
values, any row that cannot be stored is a 422 naming it (nothing stored), a timestamp sent twice keeps the
last row, and a body nested past the parser's depth is a 422 problem."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.api_server import PUSHED, Api

PROBLEM = "application/problem+json"
ROOT = Path(__file__).resolve().parent.parent
T0 = "2024-05-01T00:00:00Z"


def push_json_text(api: Api, body: str) -> httpx.Response:
    return api.client.post(f"/v1/series/{PUSHED}/observations", content=body.encode(),
                           headers={**api.admin, "content-type": "application/json"})


def push_csv(api: Api, text: str) -> httpx.Response:
    return api.client.post(f"/v1/series/{PUSHED}/observations", content=text.encode(),
                           headers={**api.admin, "content-type": "text/csv"})


def count(api: Api) -> int:
    return int(api.client.get(f"/v1/series/{PUSHED}").json()["observation_count"])


def stored(api: Api) -> list[tuple[str, float]]:
    r = api.client.get(f"/v1/series/{PUSHED}/observations")
    assert r.status_code == 200, r.text
    page = r.json()
    return [(o["ts"], o["value"]) for o in page["observations"]]


# (ts as JSON, ts as CSV text, value as JSON, value as CSV text, what is stored or a piece of the 422's detail)
CASES = [
    ('"2024-05-01T00:00:00Z"', T0, "1.5", "1.5", 1.5),
    ('"2024-05-01T02:00:00+02:00"', "2024-05-01T02:00:00+02:00", "2", "2", 2.0),
    ('"2024-05-01T00:00Z"', "2024-05-01T00:00Z", "-3e2", "-3e2", -300.0),
    ('"2024-05-01 00:00:00+00:00"', "2024-05-01 00:00:00+00:00", "0.25", "0.25", 0.25),  # as pandas writes CSV
    ('"2024-05-01T00:00:00.000000Z"', "2024-05-01T00:00:00.000000Z", "7", "7", 7.0),
    ("1714521600", "1714521600", "1", "1", "row 1: ts 1714521600 is a number"),
    ('"20240501T000000Z"', "20240501T000000Z", "1", "1", "row 1: timestamp '20240501T000000Z' cannot be read"),
    ('"2024-W18-3T00:00:00Z"', "2024-W18-3T00:00:00Z", "1", "1", "cannot be read"),
    ('"2024-05-01T00:00:00+0000"', "2024-05-01T00:00:00+0000", "1", "1", "cannot be read"),
    ('"2024-05-01"', "2024-05-01", "1", "1", "cannot be read"),
    ('"2024-05-01T00:00:00"', "2024-05-01T00:00:00", "1", "1", "row 1: timestamp '2024-05-01T00:00:00' has no UTC offset"),
    (f'"{T0}"', T0, "true", "true", "row 1: value"),
    (f'"{T0}"', T0, "null", "", "row 1: value is missing"),
    (f'"{T0}"', T0, '"NaN"', "NaN", "row 1: value 'NaN' is not a finite number"),
    (f'"{T0}"', T0, "1e400", "1e400", "is not a finite number"),
    (f'"{T0}"', T0, '"1,5"', "1_000", "is not a number"),
    (f'"{T0}"', T0, "1e308", "1e308", "value 1e+308 is outside the representable range"),
]


@pytest.mark.parametrize(("ts_json", "ts_csv", "value_json", "value_csv", "expected"), CASES)
def test_json_and_csv_take_and_refuse_the_same_rows(sqlite_api: Api, ts_json: str, ts_csv: str, value_json: str,
                                                    value_csv: str, expected: float | str) -> None:
    as_json = push_json_text(sqlite_api, f'[{{"ts": {ts_json}, "value": {value_json}}}]')
    count_after_json = count(sqlite_api)
    as_csv = push_csv(sqlite_api, f"ts,value\n{ts_csv},{value_csv}\n")
    if isinstance(expected, float):
        assert (as_json.status_code, as_csv.status_code) == (200, 200), (as_json.text, as_csv.text)
        assert (as_json.json()["new"], as_csv.json()["unchanged"]) == (1, 1)  # the same instant and value
        assert stored(sqlite_api) == [(T0, expected)]
        return
    for r in (as_json, as_csv):
        assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM), r.text
        assert expected in r.json()["detail"], r.json()["detail"]
    assert count_after_json == count(sqlite_api) == 0


@pytest.mark.parametrize(("body", "media"), [
    (f'[{{"ts": "{T0}", "value": 1.0}}, {{"ts": "2024-05-01T01:00:00Z", "value": "NaN"}}]', "application/json"),
    (f'[{{"ts": "{T0}", "value": 1.0}}, {{"ts": "2024-05-01T01:00:00Z", "value": NaN}}]', "application/json"),
    (f'[{{"ts": "{T0}", "value": 1.0}}, {{"ts": "2024-05-01T01:00:00Z", "value": null}}]', "application/json"),
    (f"ts,value\n{T0},1.0\n2024-05-01T01:00:00Z,nan\n", "text/csv"),
    (f"ts,value\n{T0},1.0\n2024-05-01T01:00:00Z,\n", "text/csv"),
    (f"ts,value\n{T0},1.0\n2024-05-01T01:00:00Z,inf\n", "text/csv"),
])
def test_a_pushed_nan_or_missing_value_is_a_422_naming_the_row_and_nothing_is_stored(api: Api, body: str,
                                                                                     media: str) -> None:
    r = api.client.post(f"/v1/series/{PUSHED}/observations", content=body.encode(),
                        headers={**api.admin, "content-type": media})
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM), r.text
    assert re.search(r"row 2: value .*(missing|not a finite number)", r.json()["detail"]), r.json()["detail"]
    assert count(api) == 0


def test_a_timestamp_sent_twice_keeps_the_last_row_as_documented(api: Api) -> None:
    rows = [{"ts": T0, "value": 1.0}, {"ts": "2024-05-01T02:00:00+02:00", "value": 2.0}]  # one instant
    r = api.client.post(f"/v1/series/{PUSHED}/observations", json=rows, headers=api.admin)
    assert r.status_code == 200, r.text
    assert (r.json()["new"], r.json()["rejected"], r.json()["notes"]) == (1, 1, ["1 duplicate timestamps: kept the last"])
    r = push_csv(api, f"ts,value\n{T0},3\n{T0},4\n")
    assert (r.json()["updated"], r.json()["rejected"]) == (1, 1)
    assert stored(api) == [(T0, 4.0)]
    push = api.client.get("/openapi.json").json()["paths"]["/v1/series/{key}/observations"]["post"]
    assert "the last row wins" in push["description"] and "the last row wins" in push["requestBody"]["description"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### What an observation must be", 1)[1].split("\n## ", 1)[0]
    assert "the last row wins" in section and "Refused: epoch numbers" in section


@pytest.mark.parametrize("depth", [300, 10_000])
def test_json_nested_deep_is_a_422_problem(sqlite_api: Api, depth: int) -> None:
    r = push_json_text(sqlite_api, "[" * depth + "]" * depth)
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM), r.text
    assert "not valid JSON" in r.json()["detail"] and "recursion" in r.json()["detail"]
    flat = push_json_text(sqlite_api, json.dumps([[1]]))
    assert flat.status_code == 422 and "row 1: [1] is not an object" in flat.json()["detail"]
