"""`forecaster scheduler` as real processes on real databases: a run at start,
one leader among several, failover after kill -9, a clean stop on SIGTERM.

Failover times are printed (run with ``-s`` to see them)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text

from forecaster.store import migrate
from forecaster.store.tables import IngestRun, JobRun, make_engine, make_sessionmaker
from jobs.lease import FileLease, lock_key, lock_path_for

CLOSED = "http://127.0.0.1:1"
SINE: dict[str, Any] = {"key": "sine:demo", "source": "sine", "frequency": "1h", "params": {"period": 24, "length": 60}}
DOWN: dict[str, Any] = {"key": "open-meteo:down:temperature_2m", "source": "open-meteo", "frequency": "1h",
        "params": {"latitude": 52.52, "longitude": 13.41, "variable": "temperature_2m", "history_days": 3}}
LEADER_RETRY_S = 5.0  # the default: the failover times measured here are the ones operators get


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)  # strings, numbers and booleans read the same in TOML


def write_config(path: Path, url: str, series: list[dict[str, Any]], *, open_meteo: str = CLOSED) -> Path:
    """A forecaster.toml for ``url`` with ``series`` and Open-Meteo pointed at ``open_meteo``."""
    # Crons that fire once a year: the tests start the jobs themselves (run_on_start), and a default
    # */30 ingest landing inside a test would add a run its assertions do not expect.
    lines = [f"database_url = {_toml(url)}", 'api_keys = ["test-key"]', "",
             "[schedule]", 'ingest = "0 0 1 1 *"', 'retrain = "0 0 1 1 *"', "",
             "[sources.open-meteo]", f'forecast_url = "{open_meteo}/v1/forecast"',
             f'archive_url = "{open_meteo}/v1/archive"', "timeout_s = 5", ""]
    for spec in series:
        lines.append("[[series]]")
        lines += [f"{k} = {_toml(v)}" for k, v in spec.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def migrated(url: str) -> None:
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()


class Proc:
    """A forecaster command as a child process; its output lines are kept with their arrival times."""

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None, name: str = "") -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("FORECASTER_")}
        self.name = name or " ".join(args[:1])
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self.popen = subprocess.Popen([sys.executable, "-m", "forecaster.cli", *args], env={**base, **(env or {})},
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout_s: float = 20.0, *, since: float = 0.0) -> tuple[float, str]:
        """The first line matching ``pattern`` that arrived after ``since``; fails after ``timeout_s``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for at, line in self.lines:
                    if at >= since and regex.search(line):
                        return at, line
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not self._cond.wait(0.2)):
                    raise AssertionError(f"{self.name}: no line matching {pattern!r} in {timeout_s} s:\n{self.output}")
                self._cond.wait(left)

    def has(self, pattern: str) -> bool:
        with self._cond:
            return any(re.search(pattern, line) for _, line in self.lines)

    def count(self, pattern: str) -> int:
        with self._cond:
            return sum(1 for _, line in self.lines if re.search(pattern, line))

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(line for _, line in self.lines)

    def close(self) -> None:
        """Kill the process if it still runs, and close its pipe."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)
        self._reader.join(10)
        assert self.popen.stdout is not None
        self.popen.stdout.close()

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        """Send ``sig`` (if still running) and return the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        return self.popen.wait(timeout_s)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes started by a test; any still running at the end are killed."""
    started: list[Proc] = []
    yield started
    for p in started:
        p.close()


def scheduler(procs: list[Proc], config: Path, name: str, **env: str) -> Proc:
    # These tests are about the scheduler running its jobs itself (SQLite's way; on PostgreSQL
    # with workers.queue = "in-process"). Cron through the queue to workers: tests/test_workers.py.
    env = {"FORECASTER_SCHEDULER__LEADER_RETRY_S": str(LEADER_RETRY_S), "FORECASTER_WORKERS__QUEUE": "in-process",
           **env}
    p = Proc(["--config", str(config), "scheduler"], env=env, name=name)
    procs.append(p)
    return p


def leaders(group: list[Proc], since: float = 0.0) -> list[Proc]:
    return [p for p in group if any(at >= since and "scheduler.leader" in line for at, line in p.lines)]


# ---------------------------------------------------------------- a run really happens


def test_scheduler_runs_its_jobs_and_a_failing_series_does_not_stop_the_others(
    procs: list[Proc], db_url: str, tmp_path: Path
) -> None:
    migrated(db_url)
    config = write_config(tmp_path / "forecaster.toml", db_url, [DOWN, SINE])
    p = scheduler(procs, config, "scheduler", FORECASTER_SCHEDULER__RUN_ON_START="1",
                  FORECASTER_SCHEDULER__RETRY_BACKOFF_S="0.2")
    p.wait_for(r"job\.train\.done", timeout_s=60)
    assert p.stop() == 0
    assert p.count(r"ingest\.retry series=open-meteo:down") == 2  # 3 attempts: waits of 0.2 s and 0.4 s
    sm = make_sessionmaker(engine := make_engine(db_url))
    with sm() as session:
        runs = session.scalars(select(JobRun).order_by(JobRun.id)).all()
        # an unreachable source is an outage upstream: 'unavailable', and the cron run is not a failure
        assert [(r.kind, r.trigger, r.status) for r in runs] == [("ingest", "cron", "ok"), ("train", "cron", "ok")]
        ingests = {k: (st, err) for k, st, err in session.execute(
            select(IngestRun.series_key, IngestRun.status, IngestRun.error))}
    assert {k: st for k, (st, _) in ingests.items()} == {DOWN["key"]: "unavailable", "sine:demo": "ok"}
    assert "gave up after 3 attempts" in (ingests[DOWN["key"]][1] or "")
    assert "the stored data keeps serving" in (ingests[DOWN["key"]][1] or "")
    engine.dispose()


# ---------------------------------------------------------------- one leader, failover


@pytest.mark.postgres
def test_one_of_three_postgres_schedulers_leads_and_another_takes_over_after_kill_9(
    procs: list[Proc], pg_url: str, tmp_path: Path
) -> None:
    migrated(pg_url)
    config = write_config(tmp_path / "forecaster.toml", pg_url, [SINE])
    group = [scheduler(procs, config, f"scheduler-{i}") for i in range(3)]
    for p in group:
        p.wait_for(r"scheduler\.(leader|follower)")
    time.sleep(1)
    (leader,) = leaders(group)
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # the server agrees: one session holds the lock, the leader's
        holders = conn.execute(text(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()")).scalars().all()
    assert holders == ["forecaster-scheduler-lease"]

    killed_at = time.monotonic()
    leader.popen.kill()
    rest = [p for p in group if p is not leader]
    taken_at, _ = _first_leader(rest, killed_at)
    failover_s = taken_at - killed_at
    print(f"\nFAILOVER postgres kill -9 -> new leader: {failover_s:.2f} s (followers retry every {LEADER_RETRY_S:g} s)")
    assert failover_s <= LEADER_RETRY_S + 3
    time.sleep(1)
    (second,) = leaders(rest, since=killed_at)  # exactly one of the two took over

    stopped_at = time.monotonic()
    assert second.stop() == 0  # SIGTERM: releases the lock on its way out
    (last,) = [p for p in rest if p is not second]
    taken_at = last.wait_for(r"scheduler\.leader", since=stopped_at, timeout_s=LEADER_RETRY_S + 10)[0]
    print(f"FAILOVER postgres SIGTERM -> new leader: {taken_at - stopped_at:.2f} s")
    assert last.stop() == 0
    admin.dispose()


def _first_leader(group: list[Proc], since: float) -> tuple[float, str]:
    deadline = time.monotonic() + LEADER_RETRY_S + 10
    while time.monotonic() < deadline:
        found = [(at, line) for p in group for at, line in list(p.lines) if at >= since and "scheduler.leader" in line]
        if found:
            return min(found)
        time.sleep(0.02)
    raise AssertionError("no process took over:\n" + "\n---\n".join(p.output for p in group))


def test_sqlite_file_lock_lets_one_scheduler_lead_and_the_other_take_over_after_kill_9(
    procs: list[Proc], sqlite_url: str, tmp_path: Path
) -> None:
    migrated(sqlite_url)
    config = write_config(tmp_path / "forecaster.toml", sqlite_url, [DOWN, SINE])
    slow_run = {"FORECASTER_SCHEDULER__RUN_ON_START": "1", "FORECASTER_SCHEDULER__RETRY_BACKOFF_S": "60"}
    group = [scheduler(procs, config, f"scheduler-{i}", **slow_run) for i in range(2)]
    for p in group:
        p.wait_for(r"scheduler\.(leader|follower)")
    (leader,) = leaders(group)
    lock = lock_path_for(sqlite_url)
    assert lock is not None and lock.read_text().strip() == str(leader.popen.pid)
    leader.wait_for(r"ingest\.retry")  # killed in the middle of a run

    killed_at = time.monotonic()
    leader.popen.kill()
    (other,) = [p for p in group if p is not leader]
    taken_at, _ = other.wait_for(r"scheduler\.leader", since=killed_at, timeout_s=LEADER_RETRY_S + 10)
    print(f"\nFAILOVER sqlite kill -9 -> new leader: {taken_at - killed_at:.2f} s "
          f"(followers retry every {LEADER_RETRY_S:g} s)")
    assert taken_at - killed_at <= LEADER_RETRY_S + 3
    assert lock.read_text().strip() == str(other.popen.pid)
    other.wait_for(r"scheduler\.abandoned_runs runs=1")
    assert other.stop() == 0
    engine = make_engine(sqlite_url)
    with make_sessionmaker(engine)() as session:
        runs = session.scalars(select(JobRun).order_by(JobRun.id)).all()
    engine.dispose()
    assert runs[0].status == "interrupted" and "abandoned" in (runs[0].error or "")  # the dead leader's run
    assert [r.status for r in runs[1:]] == ["interrupted"]  # the new leader's, stopped by SIGTERM


# ---------------------------------------------------------------- SIGTERM mid-run


def test_sigterm_mid_run_records_it_interrupted_exits_0_and_frees_the_lock(
    procs: list[Proc], db_url: str, tmp_path: Path
) -> None:
    migrated(db_url)
    config = write_config(tmp_path / "forecaster.toml", db_url, [DOWN, SINE])
    p = scheduler(procs, config, "scheduler", FORECASTER_SCHEDULER__RUN_ON_START="1",
                  FORECASTER_SCHEDULER__RETRY_BACKOFF_S="60")  # the run sits in its first backoff
    p.wait_for(r"ingest\.retry series=open-meteo:down")
    started = time.monotonic()
    assert p.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
    assert p.has(r"scheduler\.stop")

    engine = make_engine(db_url)
    with make_sessionmaker(engine)() as session:
        (run,) = session.scalars(select(JobRun)).all()
    engine.dispose()
    assert (run.kind, run.status, run.series_done, run.series_failed) == ("ingest", "interrupted", 0, 1)
    assert run.progress is not None and "the run is stopping" in run.progress["results"][0]["detail"]

    if db_url.startswith("postgresql"):  # the lock is free: someone else can take it
        admin = create_engine(db_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key()}).scalar() is True
        admin.dispose()
    else:
        lock_path = lock_path_for(db_url)
        assert lock_path is not None
        lease = FileLease(lock_path)
        assert lease.try_acquire()
        lease.release()
