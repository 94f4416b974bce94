"""`forecaster worker` refuses what it cannot do with one line and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.test_jobs_processes import SINE, write_config


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forecaster.cli", *args], capture_output=True, text=True,
                          timeout=60)


def test_a_worker_on_sqlite_exits_2_saying_that_the_work_runs_in_process(tmp_path: Path) -> None:
    config = write_config(tmp_path / "forecaster.toml", f"sqlite:///{tmp_path / 'f.db'}", [SINE])
    out = run_cli("--config", str(config), "worker")
    assert out.returncode == 2, out.stderr
    assert "needs the PostgreSQL queue" in out.stderr and "forecaster up" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_worker_asked_for_an_unknown_queue_exits_2_naming_it(tmp_path: Path) -> None:
    config = write_config(tmp_path / "forecaster.toml", "postgresql+psycopg://nobody@127.0.0.1:1/none", [SINE])
    out = run_cli("--config", str(config), "worker", "--queues", "train,bogus")
    assert out.returncode == 2, out.stderr
    assert "--queues bogus: not a queue (known: train, ingest)" in out.stderr
