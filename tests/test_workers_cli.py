"""`forecaster worker` refuses what it cannot do with one line and exit code 2; what its ingest task
does when it closes a run of drifting series."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.postgres
def test_the_task_that_closes_an_ingest_run_enqueues_the_drift_retrain(pg_url: str, tmp_path: Path) -> None:
    """What a worker's ingest task does (``run_series``), on the real queue: the drifting
    champion's series gets a ``drift`` train run, and its task waits in the train queue."""
    from sqlalchemy import text

    from forecaster.store import jobruns
    from forecaster.store import migrate
    from forecaster.store.tables import make_engine, make_sessionmaker
    from forecaster.usecases.queue import TaskQueue
    from forecaster.usecases.jobs import run_series, start_run
    from tests.api_server import make_settings
    from tests.test_accuracy import HOUR, T0, _drifting

    csv = tmp_path / "bad.csv"
    csv.write_text("ts,value\n" + "".join(f"{(T0 + h * HOUR).isoformat()},{h}\n" for h in range(0, 9)))
    settings = make_settings(pg_url, series=[{"key": "csv:bad", "source": "csv", "frequency": "1h",
                                              "params": {"path": str(csv)}}],
                             monitoring={"accuracy_window": 8, "drift_min_actuals": 8, "retrain_on_drift": True})
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    sm = make_sessionmaker(engine)
    queue = TaskQueue(sm, settings)
    try:
        _drifting(sm, "csv:bad")
        run = start_run(sm, settings, queue, kind="ingest", trigger="cron")
        result = run_series(sm, settings, run_id=run.id, kind="ingest", series_key="csv:bad", queue=queue)
        assert result.ok, result
        runs = jobruns.list_runs(sm)
        assert [(r.kind, r.trigger, r.status, r.series_keys) for r in runs] == [
            ("train", "drift", "queued", ["csv:bad"]), ("ingest", "cron", "ok", ["csv:bad"])]
        with engine.connect() as conn:
            jobs = conn.execute(text("SELECT queue_name, status::text, args->>'series_key' "
                                     "FROM procrastinate.procrastinate_jobs ORDER BY id")).all()
        assert jobs == [("ingest", "todo", "csv:bad"), ("train", "todo", "csv:bad")]
    finally:
        queue.shutdown()
        engine.dispose()
