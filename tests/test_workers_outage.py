"""Outages of a PostgreSQL cluster of the test's own (initdb in a temp dir, its own port):
the scheduler waits for a database that is away at start, and a retrain on two workers
completes, every series accounted for, across a restart of the server mid-run.

Recovery times are printed (run with ``-s`` to see them)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from forecaster.usecases import ingest
from forecaster.store import jobruns
from forecaster.config.loading import load_settings
from forecaster.store.tables import ModelVersion, make_engine, make_sessionmaker
from forecaster.usecases.queue import TaskQueue
from forecaster.usecases.jobs import start_run
from tests.test_jobs_processes import Proc, migrated, procs, write_config  # noqa: F401 - procs is a fixture
from tests.test_workers import FAST, sine, wait_until, worker

pytestmark = pytest.mark.postgres


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class OwnPostgres:
    """A throwaway PostgreSQL cluster: its own data directory and port, started and stopped at will."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(bins[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="fc-pg-"))
        self.dir.chmod(0o755)
        self.data = self.dir / "data"
        self.port = _free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_user:
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        out = subprocess.run([*self._as_user, str(self.bin / tool), *args], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, f"{tool} {' '.join(args)}:\n{out.stdout}\n{out.stderr}"

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", opts, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        subprocess.run([*self._as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def own_pg() -> Iterator[OwnPostgres]:
    pg = OwnPostgres()
    try:
        yield pg
    finally:
        pg.remove()


def test_the_scheduler_waits_for_a_database_that_is_away_and_leads_once_it_is_back(
    own_pg: OwnPostgres, procs: list[Proc], tmp_path: Path
) -> None:
    config = write_config(tmp_path / "forecaster.toml", own_pg.url, [sine(0)])
    sched = Proc(["--config", str(config), "scheduler"], name="scheduler",
                 env={"FORECASTER_SCHEDULER__LEADER_RETRY_S": "0.5"})
    procs.append(sched)
    sched.wait_for(r"scheduler\.database_unavailable attempt=1 ", timeout_s=30)
    sched.wait_for(r"scheduler\.database_unavailable attempt=3 ", timeout_s=30)
    assert sched.popen.poll() is None  # still waiting, not exited
    own_pg.start()
    sched.wait_for(r"scheduler\.database_unavailable .*forecaster migrate", timeout_s=30)  # up, not migrated
    migrated(own_pg.url)
    back = time.monotonic()
    at, _ = sched.wait_for(r"scheduler\.leader", timeout_s=30)
    print(f"\nscheduler: leading {at - back:.1f} s after the database was back and migrated")
    assert sched.has(r"scheduler\.database_available")
    assert sched.stop() == 0, sched.output


def test_a_retrain_on_workers_completes_across_a_postgres_restart(
    own_pg: OwnPostgres, procs: list[Proc], tmp_path: Path
) -> None:
    if not own_pg.url or subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", str(own_pg.port)],
                                        capture_output=True).returncode != 0:
        own_pg.start()
    migrated(own_pg.url)
    series = [sine(40 + i, model={"window": 8, "hidden_size": 8, "epochs": 3, "batch_size": 32}) for i in range(8)]
    config = write_config(tmp_path / "forecaster.toml", own_pg.url, series)
    settings = load_settings(config)
    engine = make_engine(own_pg.url)
    sm = make_sessionmaker(engine)
    queue = TaskQueue(sm, settings)
    try:
        ingest.ingest_many(sm, settings, settings.series)
        workers = [worker(procs, config, f"worker-{i}") for i in range(2)]
        for w in workers:
            w.wait_for(r"worker\.start", timeout_s=90)
        run_id = start_run(sm, settings, queue, kind="train", trigger="api").id
        wait_until(lambda: jobruns.get_run(sm, run_id).series_done >= 1, 60, "a first series trained")
        own_pg.restart()
        restarted = time.monotonic()
        engine.dispose()  # the test's own pooled connections died with the server
        run = wait_until(lambda: (r := jobruns.get_run(sm, run_id)).finished_at and r, 150, "the run finished")
        seen = {e: sum(w.count(rf"worker\.{e}") for w in workers)
                for e in ("database_lost", "database_unavailable", "stalled_requeued")}
        print(f"\npostgres restart mid-run: the run finished {time.monotonic() - restarted:.1f} s after the "
              f"restart; {run.series_done} of {run.series_total} series done; worker events {seen}")
        assert (run.status, run.series_total, run.series_done + run.series_failed) == ("ok", 8, 8), run
        assert sorted(r["series"] for r in (run.progress or {})["results"]) == sorted(s["key"] for s in series)
        with sm() as session:
            trained = session.scalar(select(func.count(func.distinct(ModelVersion.series_id))))
        assert trained == 8
        for w in workers:
            assert w.popen.poll() is None, w.output  # recovered by itself, no supervisor needed
            assert w.stop() == 0, w.output
    finally:
        queue.shutdown()
        engine.dispose()
