"""`forecaster worker` as real processes on a real PostgreSQL: a retrain fans out over
three workers, two enqueuers add no duplicate work, a worker killed with kill -9
loses nothing. The three workers serve every test of this module (one database,
each test its own series) and the kill test runs last. A PostgreSQL restart and a
scheduler waiting for its database: tests/test_workers_outage.py.

Recovery times are printed (run with ``-s`` to see them)."""

from __future__ import annotations

import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from forecaster.usecases import ingest
from forecaster.store import jobruns
from forecaster.config.loading import load_settings
from forecaster.config.settings import Settings
from forecaster.store.tables import ModelVersion, Series, make_engine, make_sessionmaker
from forecaster.usecases.queue import TaskQueue
from forecaster.usecases.jobs import start_run
from tests.conftest import PG_ADMIN_URL, _pg_admin
from tests.test_jobs_processes import Proc, migrated, write_config

pytestmark = pytest.mark.postgres

TINY = {"window": 8, "hidden_size": 8, "epochs": 1, "batch_size": 32}
# Tight failure-detection settings so a test sees a recovery in seconds; the README gives the defaults.
FAST = {"FORECASTER_WORKERS__HEARTBEAT_S": "1", "FORECASTER_WORKERS__STALLED_AFTER_S": "4",
        "FORECASTER_WORKERS__STALLED_CHECK_S": "1", "FORECASTER_WORKERS__POLL_S": "0.5",
        "FORECASTER_WORKERS__DATABASE_RETRY_S": "1"}
STALLED_BOUND_S = 4 + 1  # stalled_after_s + stalled_check_s under FAST


def sine(i: int, *, length: int = 60, model: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"key": f"sine:w{i}", "source": "sine", "frequency": "1h", "horizon": 1,
            "params": {"period": 12, "length": length, "seed": i + 1}, "model": model or TINY}


FANOUT = [sine(i) for i in range(12)]
CRON = [sine(i) for i in range(14, 16)]
TWICE = [sine(i) for i in range(20, 24)]
SLOW = sine(30, length=200, model={**TINY, "epochs": 10, "patience": 1000})  # seconds of training: time to kill it


def worker(procs: list[Proc], config: Path, name: str, *args: str, **env: str) -> Proc:
    p = Proc(["--config", str(config), "worker", *args], env={**FAST, **env}, name=name)
    procs.append(p)
    return p


@contextmanager
def running_worker(settings: Settings, directory: Path) -> Iterator[Proc]:
    """`forecaster worker` on the database and series of ``settings``, for the ``with`` block."""
    series = [s.model_dump(mode="json", exclude_defaults=True, exclude_none=True) for s in settings.series]
    config = write_config(directory / "worker.toml", settings.database_url, series)
    p = Proc(["--config", str(config), "worker"], env=FAST, name="worker")
    try:
        p.wait_for(r"worker\.start", timeout_s=90)
        yield p
    finally:
        p.close()


def wait_until(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s} s")


class Workers:
    """A migrated database with every series of this module ingested, and three running workers."""

    def __init__(self, url: str, tmp_path: Path, procs: list[Proc]) -> None:
        migrated(url)
        self.config = write_config(tmp_path / "forecaster.toml", url, [*FANOUT, *CRON, *TWICE, SLOW])
        self.settings: Settings = load_settings(self.config)
        self.engine = make_engine(url)
        self.sm: sessionmaker[Session] = make_sessionmaker(self.engine)
        # Three workers on this machine's cores: one torch thread each, as README advises.
        self.procs = [worker(procs, self.config, f"worker-{i}", "--torch-threads", "1") for i in range(3)]
        ingest.ingest_many(self.sm, self.settings, self.settings.series)
        self.queues: list[TaskQueue] = []
        for w in self.procs:
            w.wait_for(r"worker\.start", timeout_s=90)

    def train(self, keys: list[str], trigger: str = "api") -> int:
        queue = TaskQueue(self.sm, self.settings)
        self.queues.append(queue)
        return start_run(self.sm, self.settings, queue, kind="train", keys=keys, trigger=trigger).id

    def finished(self, run_id: int, timeout_s: float = 120) -> jobruns.JobRunView:
        return wait_until(lambda: (r := jobruns.get_run(self.sm, run_id)).finished_at and r, timeout_s,
                          f"job run {run_id} finished")

    def versions(self, keys: list[str]) -> dict[str, list[int]]:
        with self.sm() as session:
            rows = session.execute(select(Series.key, ModelVersion.version, ModelVersion.lineage)
                                   .join(ModelVersion, ModelVersion.series_id == Series.id)
                                   .where(Series.key.in_(keys)).order_by(ModelVersion.version))
            out: dict[str, list[int]] = {}
            for key, version, _ in rows:
                out.setdefault(key, []).append(version)
            return out

    def close(self) -> None:
        for q in self.queues:
            q.shutdown()
        self.engine.dispose()


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    name = f"fc_test_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    started: list[Proc] = []
    try:
        w = Workers(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", tmp_path_factory.mktemp("workers"), started)
        yield w
        w.close()
    finally:
        for p in started:
            p.close()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def tasks_run_by(p: Proc, keys: list[str]) -> list[str]:
    found = [m.group(1) for _, line in p.lines if (m := re.search(r"worker\.task kind=\w+ series=(\S+)", line))]
    return [k for k in found if k in keys]


def keys_of(series: list[dict[str, Any]]) -> list[str]:
    return [s["key"] for s in series]


def test_three_workers_train_every_series_exactly_once_and_the_run_counts_add_up(workers: Workers) -> None:
    keys = keys_of(FANOUT)
    started = time.monotonic()
    run_id = workers.train(keys)
    run = workers.finished(run_id)
    print(f"\n12 series on 3 workers: {time.monotonic() - started:.1f} s")
    assert (run.status, run.series_total, run.series_done, run.series_failed) == ("ok", 12, 12, 0), run
    assert run.progress is not None and sorted(r["series"] for r in run.progress["results"]) == sorted(keys)
    assert workers.versions(keys) == {k: [1] for k in keys}
    by_worker = [tasks_run_by(w, keys) for w in workers.procs]
    assert sorted(k for ks in by_worker for k in ks) == sorted(keys)  # each task ran once, somewhere
    assert sum(1 for ks in by_worker if ks) >= 2, by_worker  # the work spread over the workers
    for w in workers.procs:  # --torch-threads took effect
        w.wait_for(r"worker\.start .*torch_threads=1\b", timeout_s=1)


def test_a_cron_firing_only_enqueues_and_the_workers_ingest_then_train(workers: Workers) -> None:
    from jobs import tasks

    keys = keys_of(CRON)
    queue = TaskQueue(workers.sm, workers.settings)
    workers.queues.append(queue)
    ctx = tasks.JobContext(workers.sm, workers.settings, threading.Event(), queue=queue)
    started = time.monotonic()
    ingest_run = tasks.fire(ctx, job_id="ingest", kind="ingest", keys=keys)
    train_run = tasks.fire(ctx, job_id="retrain", kind="train", keys=keys)
    assert time.monotonic() - started < 5  # the leader only enqueued: nothing ran in this process
    assert ingest_run is not None and train_run is not None
    runs = [workers.finished(ingest_run), workers.finished(train_run)]
    assert [(r.kind, r.trigger, r.status, r.series_done) for r in runs] == [("ingest", "cron", "ok", 2),
                                                                             ("train", "cron", "ok", 2)]
    assert workers.versions(keys) == {k: [1] for k in keys}


def test_two_enqueuers_at_once_train_each_series_once(workers: Workers) -> None:
    keys = keys_of(TWICE)
    barrier = threading.Barrier(2)
    runs: dict[str, int] = {}

    def enqueue(trigger: str) -> None:
        barrier.wait()
        runs[trigger] = workers.train(keys, trigger=trigger)  # a scheduler leader and an admin, at one moment

    threads = [threading.Thread(target=enqueue, args=(t,)) for t in ("cron", "api")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    finished = [workers.finished(runs[t]) for t in ("cron", "api")]
    assert all(r.status == "ok" and r.series_done == 4 for r in finished), finished
    assert workers.versions(keys) == {k: [1] for k in keys}
    results = [r for run in finished for r in (run.progress or {})["results"]]
    assert sorted(r["series"] for r in results if r["status"] != "skipped") == sorted(keys)  # one run trained each
    skipped = [r["detail"] for r in results if r["status"] == "skipped"]
    assert len(skipped) == 4 and all("already waiting" in d or "same data" in d for d in skipped), skipped


def test_a_worker_killed_mid_training_has_its_task_finished_by_another_with_one_version(workers: Workers) -> None:
    key = SLOW["key"]
    run_id = workers.train([key])
    holder = wait_until(lambda: next((w for w in workers.procs if tasks_run_by(w, [key])), None), 30,
                        f"a worker took {key}")
    holder.stop(signal.SIGKILL)
    killed = time.monotonic()
    assert key not in workers.versions([key])  # nothing half-written is visible
    assert jobruns.get_run(workers.sm, run_id).status == "running"
    others = [w for w in workers.procs if w is not holder]
    at = wait_until(lambda: next((a for w in others for a, line in w.lines
                                  if f"worker.task kind=train series={key}" in line), None),
                    STALLED_BOUND_S + 30, f"another worker took {key}")
    recovery = at - killed
    run = workers.finished(run_id, timeout_s=180)
    print(f"\nkill -9 mid-training: the task started again on another worker after {recovery:.1f} s "
          f"(bound: stalled_after_s + stalled_check_s = {STALLED_BOUND_S} s)")
    assert recovery <= STALLED_BOUND_S + 3
    assert any(w.has(rf"worker\.stalled_requeued .*series={re.escape(key)}") for w in others)
    assert (run.status, run.series_done, run.series_failed) == ("ok", 1, 0), run
    assert workers.versions([key]) == {key: [1]}
    for w in others:
        assert w.stop() == 0, w.output
        assert "worker.stop" in w.output
