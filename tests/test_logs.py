"""An operator can follow the service in a log file: forecaster's events and uvicorn's own
lines, one UTC-stamped line each in the same format."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (DEBUG|INFO|WARNING|ERROR|CRITICAL) [a-z_]+\.[a-z_]+( |$)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_writes_its_own_and_uvicorns_lines_to_the_log_file_in_one_format(tmp_path: Path) -> None:
    cfg = tmp_path / "forecaster.toml"
    log = tmp_path / "forecaster.log"
    cfg.write_text(f'database_url = "sqlite:///{tmp_path / "f.db"}"\nlog_level = "info"\nlog_file = "{log}"\n')
    cli = [sys.executable, "-m", "forecaster.cli", "--config", str(cfg)]
    assert subprocess.run([*cli, "migrate"], capture_output=True, timeout=60).returncode == 0
    port = free_port()
    proc = subprocess.Popen([*cli, "serve", "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "serve never answered"
                time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/series/nope:x").status_code == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    lines = log.read_text().splitlines()
    assert lines and [ln for ln in lines if not LINE.match(ln)] == []
    events = [ln.split()[2] for ln in lines]
    assert {"api.serve", "api.start", "uvicorn.log", "http.access"} <= set(events)
    assert any('path=/v1/series/nope' in ln and "status=404" in ln for ln in lines if " http.access " in ln)
    assert any("Uvicorn running on" in ln for ln in lines)
    # the terminal gets the same lines
    assert "http.access" in out and "api.serve" in out
