"""`forecaster up` serves first and trains behind, as a real process on loopback with real SQLite.

- A forecast GET answers 200 with the baseline while the start-up training still runs (a sine
  slow enough to train for many seconds), the dashboard names the series in training, and once
  the run ends the GET serves the promoted version.
- A second `up` on a trained directory starts no training run.
- With its database away (a SQLite file in a directory that does not exist yet), `up` starts,
  answers /healthz 200 and /v1/series 503, and migrates and ingests once the directory appears.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.api_server import wait_for

KEY = "k-up"
SLOW = 'params = { period = 24, noise = 0.3, length = 2400, seed = 3 }\nmodel = { epochs = 15, patience = 15, hidden_size = 16 }'
QUICK = 'params = { period = 24, noise = 0.1, length = 600, seed = 2 }\nmodel = { epochs = 3, hidden_size = 8 }'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, series: str, database_url: str | None = None) -> Path:
    cfg = tmp_path / "forecaster.toml"
    cfg.write_text(f'database_url = "{database_url or "sqlite:///" + str(tmp_path / "fc.db")}"\n'
                   f'api_keys = ["{KEY}"]\n\n[[series]]\nkey = "sine:up"\nsource = "sine"\nfrequency = "1h"\n'
                   f"{series}\n", encoding="utf-8")
    return cfg


def start_up(tmp_path: Path, cfg: Path, port: int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "forecaster.cli", "--config", str(cfg), "up", "--port", str(port),
                             *args], cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


def status(client: httpx.Client, path: str) -> int | None:
    try:
        return client.get(path).status_code
    except httpx.TransportError:
        return None


def train_runs(client: httpx.Client) -> list[dict[str, Any]]:
    return list(client.get("/v1/jobs/runs", params={"kind": "train"}, headers={"X-API-Key": KEY}).json()["runs"])


def test_up_serves_the_baseline_while_it_trains_then_the_promoted_model(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, SLOW)
    port = free_port()
    proc = start_up(tmp_path, cfg, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            wait_for(lambda: status(client, "/v1/series/sine:up/forecast") == 200 or proc.poll() is not None,
                     timeout_s=40)
            assert proc.poll() is None
            early = client.get("/v1/series/sine:up/forecast").json()
            assert early["model_version"] in ("naive", "seasonal_naive"), early
            run = wait_for(lambda: next((r for r in train_runs(client) if r["status"] == "running"), None), timeout_s=20)
            assert run["trigger"] == "startup" and run["series_keys"] == ["sine:up"]
            assert client.get("/v1/series/sine:up/forecast").json()["model_version"] in ("naive", "seasonal_naive")
            page = client.get("/").text
            note = page.split('id="training"', 1)[1].split("</div>", 1)[0]
            assert 'training: <a class="key" href="/series/sine%3Aup">' in note and "(1 of 1, job run" in note

            def ended() -> dict[str, Any] | None:
                now = next(r for r in train_runs(client) if r["id"] == run["id"])
                return now if now["status"] not in ("queued", "running") else None

            done = wait_for(ended, timeout_s=90, every_s=0.5)
            assert done["status"] == "ok", done
            champion = client.get("/v1/series/sine:up").json()["champion_version"]
            assert champion is not None, "the slow sine's model did not pass the gate"
            assert client.get("/v1/series/sine:up/forecast").json()["model_version"] == champion
            assert 'id="training"' not in client.get("/").text
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert "training sine:up (1 of 1)" in out and "epoch " in out
    assert out.index("serving http://") < out.index("training sine:up (1 of 1)")
    assert "Traceback" not in out


def test_a_second_up_on_a_trained_directory_starts_no_training(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, QUICK)
    runs_seen = []
    for attempt in range(2):
        port = free_port()
        proc = start_up(tmp_path, cfg, port)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                wait_for(lambda: status(client, "/readyz") == 200 or proc.poll() is not None, timeout_s=40)
                if attempt == 0:  # the first start trains it: wait for that run to end
                    wait_for(lambda: [r for r in train_runs(client) if r["status"] == "ok"], timeout_s=40, every_s=0.3)
                else:
                    wait_for(lambda: "nothing to train" in (proc.stdout.readline() if proc.stdout else ""),
                             timeout_s=20, every_s=0)
                runs_seen.append([r["id"] for r in train_runs(client)])
        finally:
            code, out = stop(proc)
        assert code == 0, out
    assert runs_seen[1] == runs_seen[0] and len(runs_seen[0]) == 1  # no new train run on the second start
    assert "train.done" not in out


def test_up_with_its_database_away_serves_503_then_sets_it_up_when_it_appears(tmp_path: Path) -> None:
    later = tmp_path / "later"  # SQLite cannot open a file in a directory that does not exist
    cfg = write_config(tmp_path, QUICK, f"sqlite:///{later / 'fc.db'}")
    port = free_port()
    proc = start_up(tmp_path, cfg, port, "--no-train")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            wait_for(lambda: status(client, "/healthz") == 200 or proc.poll() is not None, timeout_s=40)
            assert proc.poll() is None, "up exited while its database was away"
            for path in ("/readyz", "/v1/series"):
                r = client.get(path)
                assert r.status_code == 503, (path, r.text)
                assert r.headers["content-type"].startswith("application/problem+json")
            later.mkdir()
            wait_for(lambda: status(client, "/v1/series/sine:up/forecast") == 200, timeout_s=30, every_s=0.2)
            assert client.get("/v1/series").json()["series"][0]["key"] == "sine:up"
            assert client.get("/readyz").status_code == 200
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert "database unreachable at start" in out and "database answers" in out
    assert "Traceback" not in out
