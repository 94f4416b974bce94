"""The deployment files: docker-compose.yml validates, is wired as documented, and
the exact commands its services run work as real processes on PostgreSQL:
migrate, then serve + scheduler, then an ingest over HTTP gives a forecast."""

from __future__ import annotations

import fnmatch
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_jobs_processes import SINE, Proc, write_config

yaml = pytest.importorskip("yaml", reason="PyYAML reads docker-compose.yml (dev dependency)")

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
FORECASTER_SERVICES = ("migrate", "api", "scheduler", "worker", "worker-gpu")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def docker_compose_config(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (CI installs it: apt-get install docker-compose)")
    return subprocess.run([exe, "-f", str(COMPOSE), *args, "config", "-q"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


@pytest.mark.parametrize("profile", [[], ["--profile", "gpu"]], ids=["default", "gpu"])
def test_compose_file_validates(profile: list[str]) -> None:
    result = docker_compose_config(*profile)
    assert result.returncode == 0, result.stderr


def test_compose_services_are_wired_as_documented() -> None:
    services = compose()["services"]
    pg = services["postgres"]
    assert pg["image"] == "postgres:16"
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert any(v.split(":")[0] in compose()["volumes"] for v in pg["volumes"])  # a named volume
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "scheduler", "worker", "worker-gpu"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["api"]["ports"] == ["8000:8000"]
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["scheduler"]["command"] == ["scheduler"]
    assert services["worker"]["command"] == ["worker"]
    assert "replicas" not in services["worker"].get("deploy", {})  # `--scale worker=N` decides
    assert services["worker"]["restart"] == "unless-stopped"
    for name in FORECASTER_SERVICES:
        env = services[name]["environment"]
        assert env["FORECASTER_DATABASE_URL"] == "postgresql+psycopg://forecaster:forecaster@postgres:5432/forecaster"
        assert f"./forecaster.toml:{env['FORECASTER_CONFIG']}:ro" in services[name]["volumes"]
    gpu = services["worker-gpu"]
    assert gpu["command"][0] == "worker"
    assert gpu["profiles"] == ["gpu"]
    assert "whl/cu128" in gpu["build"]["args"]["TORCH_INDEX"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def _dockerignored(path: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/")) for p in patterns)


def test_dockerfile_builds_cpu_torch_by_default_runs_as_non_root_and_copies_what_it_needs() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert "ARG TORCH_VERSION=2.13.0" in text
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in text
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert 'ENTRYPOINT ["forecaster"]' in text
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.startswith("#")]
    sources = [src for line in re.findall(r"^COPY (.+)$", text, re.M) for src in line.split()[:-1]]
    assert {"pyproject.toml", "README.md", "forecaster", "api", "jobs", "migrations"} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the repository"
        assert not _dockerignored(src, ignored), f"Dockerfile copies {src}, which .dockerignore leaves out"


# ---------------------------------------------------------------- the services' commands, for real


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_local(args: list[str], port: int) -> list[str]:
    """A service's command with the container's interface and port swapped for loopback ones."""
    return [{"0.0.0.0": "127.0.0.1", "8000": str(port)}.get(a, a) for a in args]


@pytest.mark.postgres
def test_the_compose_commands_migrate_serve_schedule_and_forecast(pg_url: str, tmp_path: Path) -> None:
    services = compose()["services"]
    config = write_config(tmp_path / "forecaster.toml", pg_url, [SINE])
    env = {**services["api"]["environment"], "FORECASTER_DATABASE_URL": pg_url, "FORECASTER_CONFIG": str(config)}
    port = free_port()

    migrate = Proc(services["migrate"]["command"], env=env, name="migrate")
    assert migrate.popen.wait(60) == 0, migrate.output
    migrate.close()

    api = Proc(as_local(services["api"]["command"], port), env=env, name="api")
    scheduler = Proc(services["scheduler"]["command"], env=env, name="scheduler")
    worker = Proc(services["worker"]["command"], env=env, name="worker")
    try:
        _wait_healthy(services["api"]["healthcheck"]["test"], port, api)
        scheduler.wait_for(r"scheduler\.leader")
        base, headers = f"http://127.0.0.1:{port}", {"X-API-Key": "test-key"}
        r = httpx.post(f"{base}/v1/jobs/ingest", headers=headers, timeout=10)
        assert r.status_code == 202, r.text
        run = _wait_run(base, headers, r.json()["id"])
        assert (run["status"], run["series_done"]) == ("ok", 1), run
        r = httpx.get(f"{base}/v1/series/sine:demo/forecast", timeout=10)
        assert r.status_code == 200, r.text
        assert isinstance(r.json()["value"], float)
        assert scheduler.stop() == 0, scheduler.output
        assert worker.has(r"worker\.task kind=ingest series=sine:demo"), worker.output  # the API only enqueued
        assert worker.stop() == 0, worker.output
        # uvicorn shuts down cleanly and the process exits 0
        assert api.stop() == 0, api.output
        assert "Application shutdown complete" in api.output
    finally:
        api.close()
        scheduler.close()
        worker.close()


def _wait_healthy(test: list[str], port: int, api: Proc, timeout_s: float = 60) -> None:
    """Run the compose healthcheck command (``CMD python -c ...``) until it passes."""
    assert test[0] == "CMD" and test[1] == "python"
    command = [sys.executable, *(a.replace(":8000/", f":{port}/") for a in test[2:])]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if subprocess.run(command, capture_output=True, timeout=30).returncode == 0:
            return
        assert api.popen.poll() is None, f"the API exited:\n{api.output}"
        time.sleep(0.3)
    raise AssertionError(f"the API never passed its healthcheck:\n{api.output}")


def _wait_run(base: str, headers: dict[str, str], run_id: int, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = httpx.get(f"{base}/v1/jobs/runs/{run_id}", headers=headers, timeout=10)
        assert r.status_code == 200, r.text
        if r.json()["status"] not in ("queued", "running"):
            return dict(r.json())
        time.sleep(0.2)
    raise AssertionError(f"job run {run_id} did not finish in {timeout_s} s")
