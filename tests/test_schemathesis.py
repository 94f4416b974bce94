"""Schemathesis over the whole OpenAPI spec, with the admin key, against the real server
(uvicorn on loopback over a trained SQLite copy of the API template): the examples,
coverage and fuzzing phases, deterministic, failing on any server error (5xx).

The run is bounded (``MAX_EXAMPLES`` cases per operation and phase, one worker) so it
fits in CI; the number of requests the server answered, and how many were 5xx, are read
from the server's own Prometheus counters and printed (``pytest -s`` shows them).
Path parameters are drawn partly from the real keys and model ids, so the fuzzing also
reaches past the 404s into each route's own logic.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
import pytest

from tests.api_server import ADMIN_KEY, TRAINED, make_settings, running_api, series_config

MAX_EXAMPLES = int(os.environ.get("FORECASTER_SCHEMATHESIS_EXAMPLES", "12"))
CHEAP_MODEL = {"epochs": 1, "hidden_size": 4, "window": 24}  # the fuzzer triggers retrains: keep them short
ST = Path(sys.executable).with_name("st")


def _config(path: Path, keys: list[str], model_ids: list[int]) -> Path:
    values = ", ".join(f'"{k}"' for k in keys)
    path.write_text(
        f"""[dictionaries.keys]
values = [{values}]

[dictionaries.models]
values = [{", ".join(map(str, model_ids))}]

[parameters]
"path.key" = {{ dictionary = "keys", probability = 0.6 }}
"path.model_version_id" = {{ dictionary = "models", probability = 0.6 }}
"path.run_id" = {{ dictionary = "models", probability = 0.6 }}
""",
        encoding="utf-8",
    )
    return path


def _requests(metrics_text: str) -> tuple[dict[str, int], set[tuple[str, str]]]:
    """The server's own count of requests answered, by status, and the (method, route) pairs it saw."""
    counts: dict[str, int] = {}
    seen = set()
    for method, route, status, value in re.findall(
            r'^forecaster_http_requests_total\{method="([A-Z]+)",route="([^"]*)",status="(\d+)"\} ([0-9.e+]+)$',
            metrics_text, flags=re.M):
        counts[status] = counts.get(status, 0) + int(float(value))  # the scrape reading them is not in them yet
        seen.add((method, route))
    return counts, seen


@pytest.mark.skipif(not ST.exists() and shutil.which("st") is None, reason="schemathesis is not installed")
def test_schemathesis_finds_no_server_error_anywhere_in_the_spec(sqlite_api_db: str, tmp_path: Path) -> None:
    series = [{**s, "model": CHEAP_MODEL} if "model" in s else s for s in series_config()]
    settings = make_settings(sqlite_api_db, series=series)
    with running_api(settings) as api:
        keys = [s["key"] for s in series]
        model_ids = [v["id"] for v in api.client.get(f"/v1/series/{TRAINED}/models").json()["versions"]]
        config = _config(tmp_path / "schemathesis.toml", keys, model_ids)
        st = str(ST) if ST.exists() else "st"
        run = subprocess.run(
            [st, "--config-file", str(config), "run", f"{api.url}/openapi.json",
             "--phases", "examples,coverage,fuzzing", "--checks", "not_a_server_error",
             "-H", f"X-API-Key: {ADMIN_KEY}", "--max-examples", str(MAX_EXAMPLES),
             "--generation-deterministic", "--workers", "1", "--request-timeout", "60", "--no-color",
             "--suppress-health-check", "all"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )
        counts, seen = _requests(api.client.get("/metrics").text)
        spec = api.client.get("/openapi.json").json()["paths"]
    total, server_errors = sum(counts.values()), sum(n for s, n in counts.items() if s.startswith("5"))
    summary = re.search(r"(\d+) generated", run.stdout)
    print(f"\nschemathesis: {summary.group(0) if summary else '?'} test cases; the server answered {total} "
          f"requests, {server_errors} with a 5xx; by status: {dict(sorted(counts.items()))}")
    assert server_errors == 0, run.stdout[-6000:]
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    operations = {(m.upper(), p) for p, ops in spec.items() for m in ops if m != "parameters"}
    assert operations - seen == set()  # every operation in the spec was called, not just loaded
