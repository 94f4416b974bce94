"""The scheduler's parts in one process, on real databases and real sockets:
cron triggers, the job plan, retries with backoff, overlap, the leader leases."""

from __future__ import annotations

import datetime as dt
import itertools
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobEvent
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from forecaster.store import jobruns
from forecaster.config.loading import load_settings
from forecaster.config.settings import Settings
from forecaster.store.tables import IngestRun, JobRun, Observation, make_engine, make_sessionmaker, write_session
from forecaster.errors import ConfigError
from forecaster.usecases.executor import InProcessQueue
from forecaster.usecases.ingest import RetryPolicy
from jobs import tasks
from jobs.cron import cron_trigger
from jobs.lease import FileLease, PostgresLease, lock_key, lock_path_for, make_lease
from jobs.options import SchedulerOptions
from jobs.scheduler import build_scheduler, plan_jobs

UTC = dt.timezone.utc
CLOSED = "http://127.0.0.1:1"  # nothing listens on port 1: connection refused at once
SINE: dict[str, Any] = {"key": "sine:demo", "source": "sine", "frequency": "1h", "params": {"period": 24, "length": 200}}
DOWN: dict[str, Any] = {"key": "open-meteo:down:temperature_2m", "source": "open-meteo", "frequency": "1h",
        "params": {"latitude": 52.52, "longitude": 13.41, "variable": "temperature_2m", "history_days": 3}}


def make_settings(url: str, series: list[dict[str, Any]], *, open_meteo: str = CLOSED, **kw: Any) -> Settings:
    sources = {"open-meteo": {"forecast_url": f"{open_meteo}/v1/forecast",
                              "archive_url": f"{open_meteo}/v1/archive", "timeout_s": 5}}
    return Settings.model_validate({"database_url": url, "series": series, "sources": sources, **kw})


def context(sm: sessionmaker[Session], settings: Settings, *, tries: int = 3, backoff_s: float = 0.1) -> tasks.JobContext:
    return tasks.JobContext(sm, settings, threading.Event(), RetryPolicy(tries=tries, backoff_s=backoff_s))


def results_of(run: jobruns.JobRunView) -> list[dict[str, Any]]:
    assert run.progress is not None
    return list(run.progress["results"])


def queued_ingest(ctx: tasks.JobContext) -> int:
    return jobruns.create_run(ctx.sm, ctx.settings, kind="ingest", trigger="cron").id


def execute(ctx: tasks.JobContext, run_id: int) -> jobruns.JobRunView:
    """The run executed in this process, as a scheduler firing does."""
    return InProcessQueue(ctx.sm, ctx.settings, retry=ctx.retry).execute(run_id, stop=ctx.stop)


# ---------------------------------------------------------------- cron and the job plan


@pytest.mark.parametrize(("expr", "after", "expected"), [
    ("0 3 * * 0", "2026-01-05T00:00", "2026-01-11T03:00"),    # 0 is Sunday in cron (Monday in APScheduler 3)
    ("0 3 * * 7", "2026-01-05T00:00", "2026-01-11T03:00"),    # so is 7
    ("0 3 * * 1-5", "2026-01-10T00:00", "2026-01-12T03:00"),  # Saturday -> Monday
    ("0 0 * * 5-7", "2026-01-05T00:00", "2026-01-09T00:00"),  # fri-sun
    ("0 9 13 * 1", "2026-01-06T00:00", "2026-01-12T09:00"),   # the 13th OR a Monday, as in cron
    ("*/30 * * * *", "2026-01-05T00:10", "2026-01-05T00:30"),
])
def test_cron_trigger_fires_when_crontab_would(expr: str, after: str, expected: str) -> None:
    now = dt.datetime.fromisoformat(after).replace(tzinfo=UTC)
    assert cron_trigger(expr).get_next_fire_time(None, now) == dt.datetime.fromisoformat(expected).replace(tzinfo=UTC)


def test_series_with_their_own_cron_get_their_own_job_and_push_series_are_not_ingested() -> None:
    settings = make_settings("sqlite://", [
        SINE,
        {**SINE, "key": "sine:fast", "ingest": "*/5 * * * *"},
        {**SINE, "key": "sine:weekly", "retrain": "0 4 * * 0"},
        {"key": "push:meter", "source": "push", "frequency": "1h"},
    ])
    jobs = {j.id: (j.kind, j.cron, j.keys) for j in plan_jobs(settings)}
    assert jobs == {
        "ingest": ("ingest", "*/30 * * * *", ("sine:demo", "sine:weekly")),
        "ingest[*/5 * * * *]": ("ingest", "*/5 * * * *", ("sine:fast",)),
        "retrain": ("train", "0 3 * * *", ("sine:demo", "sine:fast", "push:meter")),
        "retrain[0 4 * * 0]": ("train", "0 4 * * 0", ("sine:weekly",)),
    }


def test_scheduled_jobs_coalesce_never_overlap_and_tolerate_some_lateness(sqlite_url: str) -> None:
    settings = make_settings(sqlite_url, [SINE])
    ctx = context(make_sessionmaker(make_engine(sqlite_url)), settings)
    sched = build_scheduler(ctx, plan_jobs(settings))
    got = {j.id: (j.coalesce, j.max_instances, j.misfire_grace_time) for j in sched.get_jobs()}
    assert got == {"ingest": (True, 1, 300), "retrain": (True, 1, 3600)}


def test_options_come_from_the_config_or_the_environment_and_bad_values_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "forecaster.toml"
    path.write_text("[scheduler]\nrun_on_start = true\ningest_tries = 5\n")
    monkeypatch.setenv("FORECASTER_SCHEDULER__LEADER_RETRY_S", "0.5")
    opts = SchedulerOptions.from_settings(load_settings(path).scheduler)
    assert (opts.run_on_start, opts.leader_retry_s, opts.retry.tries, opts.retry.backoff_s) == (True, 0.5, 5, 2.0)
    assert [opts.retry.delay_s(n) for n in (1, 2)] == [2.0, 4.0]
    monkeypatch.setenv("FORECASTER_SCHEDULER__LEADER_RETRY_S", "soon")
    with pytest.raises(ConfigError, match=r"scheduler.leader_retry_s = 'soon'"):
        load_settings(path)
    monkeypatch.setenv("FORECASTER_SCHEDULER__LEADER_RETRY_S", "1")
    monkeypatch.setenv("FORECASTER_SCHEDULER__LEASE_TIMEOUT_S", "4")
    with pytest.raises(ConfigError, match=r"lease_timeout_s = 4 must be at least twice"):
        load_settings(path)


# ---------------------------------------------------------------- one run: retries, failures, stopping


def test_unavailable_source_is_retried_with_backoff_and_the_other_series_still_runs(
    sm: sessionmaker[Session], db_url: str
) -> None:
    ctx = context(sm, make_settings(db_url, [DOWN, SINE]), tries=3, backoff_s=0.2)
    started = time.monotonic()
    run = execute(ctx, queued_ingest(ctx))
    assert time.monotonic() - started >= 0.2 + 0.4  # waited 0.2 s, then 0.4 s
    assert (run.status, run.series_done, run.series_failed) == ("ok", 2, 0)  # unreachable is not a failure here
    results = {r["series"]: r for r in results_of(run)}
    assert results["sine:demo"]["status"] == "ok"
    assert "127.0.0.1:1" in results[DOWN["key"]]["detail"]
    assert "gave up after 3 attempts" in results[DOWN["key"]]["detail"]
    with sm() as session:
        statuses = dict(session.execute(select(IngestRun.series_key, IngestRun.status)
                                        .where(IngestRun.job_run_id == run.id)).all())
        assert statuses == {DOWN["key"]: "unavailable", "sine:demo": "ok"}
        assert session.scalar(select(func.count()).select_from(Observation)) == 200


def test_a_source_that_recovers_during_the_backoff_is_ingested(sm: sessionmaker[Session], db_url: str,
                                                               fake_open_meteo: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # The first request is answered 500 and every later one normally: the recovery happens
    # inside the fake's own answer, so no thread can flip it before that first answer goes out.
    answer, answered = fake_open_meteo.answer, itertools.count()

    def first_fails(req: Any) -> Any:
        if next(answered) == 0:
            return 500, {"Content-Type": "text/html"}, b"<html>502 Bad Gateway</html>"
        return answer(req)

    monkeypatch.setattr(fake_open_meteo, "answer", first_fails)
    ctx = context(sm, make_settings(db_url, [DOWN], open_meteo=fake_open_meteo.url), backoff_s=0.3)
    run = execute(ctx, queued_ingest(ctx))
    assert run.status == "ok", run.progress
    assert results_of(run)[0]["detail"].endswith("(after 2 attempts)")


def test_stopping_cuts_the_backoff_short_and_records_the_run_interrupted(sm: sessionmaker[Session], db_url: str) -> None:
    ctx = context(sm, make_settings(db_url, [DOWN, SINE]), backoff_s=60)
    threading.Timer(0.5, ctx.stop.set).start()
    started = time.monotonic()
    run = execute(ctx, queued_ingest(ctx))
    assert time.monotonic() - started < 10
    assert run.status == "interrupted"
    assert [r["series"] for r in results_of(run)] == [DOWN["key"]]  # sine:demo never started
    assert "the run is stopping" in results_of(run)[0]["detail"]


def test_a_run_over_repeated_keys_does_each_series_once_in_first_seen_order(sm: sessionmaker[Session],
                                                                            db_url: str) -> None:
    other = {**SINE, "key": "sine:other"}
    ctx = context(sm, make_settings(db_url, [SINE, other]))
    queued = jobruns.create_run(sm, ctx.settings, kind="ingest", keys=["sine:other", "sine:demo"] * 5_000)
    assert (queued.series_keys, queued.series_total) == (["sine:other", "sine:demo"], 2)
    run = execute(ctx, queued.id)
    assert (run.status, run.series_done, run.series_failed) == ("ok", 2, 0)
    assert [r["series"] for r in results_of(run)] == ["sine:other", "sine:demo"]
    with sm() as session:
        assert session.scalar(select(func.count()).select_from(IngestRun).where(IngestRun.job_run_id == run.id)) == 2


def test_a_job_never_overlaps_itself(sm: sessionmaker[Session], db_url: str) -> None:
    settings = make_settings(db_url, [DOWN])
    ctx = context(sm, settings, tries=2, backoff_s=30)  # each run sits in its backoff
    sched = build_scheduler(ctx, [j for j in plan_jobs(settings) if j.kind == "ingest"])
    skipped: list[JobEvent] = []
    sched.add_listener(skipped.append, EVENT_JOB_MAX_INSTANCES)
    sched.start()
    sched.reschedule_job("ingest", trigger=IntervalTrigger(seconds=0.2))  # fire every 0.2 s
    time.sleep(1.5)
    ctx.stop.set()
    sched.shutdown(wait=True)
    with sm() as session:
        runs = session.scalars(select(JobRun)).all()
    assert [(r.kind, r.trigger, r.status) for r in runs] == [("ingest", "cron", "interrupted")]
    assert len(skipped) >= 3
    assert tasks.fire(ctx, job_id="ingest", kind="ingest", keys=[DOWN["key"]]) is None  # stopping: no new run


def test_cron_runs_left_running_by_a_dead_leader_are_marked_interrupted(sm: sessionmaker[Session], db_url: str) -> None:
    settings = make_settings(db_url, [SINE])
    cron = jobruns.create_run(sm, settings, kind="ingest", trigger="cron").id
    api = jobruns.create_run(sm, settings, kind="ingest", trigger="api").id
    with write_session(sm) as session:
        for run in session.scalars(select(JobRun)):
            run.status = "running"
    assert tasks.abandon_cron_runs(sm) == 1
    assert jobruns.get_run(sm, cron).status == "interrupted"
    assert "abandoned" in (jobruns.get_run(sm, cron).error or "")
    assert jobruns.get_run(sm, api).status == "running"  # may be alive in an API process


# ---------------------------------------------------------------- leases


def test_lock_key_is_a_fixed_signed_64_bit_number() -> None:
    assert lock_key() == lock_key("forecaster-scheduler")
    assert -(2**63) <= lock_key() < 2**63
    assert lock_key() != lock_key("something-else")


def test_postgres_lease_has_one_holder_until_released(pg_url: str) -> None:
    a, b = PostgresLease(pg_url), PostgresLease(pg_url)
    try:
        assert a.try_acquire() and a.check()
        assert not b.try_acquire()
        a.release()
        assert not a.check()
        assert b.try_acquire()
    finally:
        a.release()
        b.release()


def test_postgres_lease_is_lost_as_soon_as_its_connection_dies(pg_url: str) -> None:
    lease, other = PostgresLease(pg_url), PostgresLease(pg_url)
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        assert lease.try_acquire()
        with admin.connect() as conn:
            killed = conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                       "WHERE application_name = 'forecaster-scheduler-lease'")).scalars().all()
        assert killed == [True]
        assert not lease.check()  # the next check notices; the leader stops leading
        assert other.try_acquire()  # and the server has freed the lock for the others
    finally:
        lease.release()
        other.release()
        admin.dispose()


def test_a_postgres_leader_that_stops_checking_loses_the_lock(pg_url: str) -> None:
    frozen, other = PostgresLease(pg_url, idle_timeout_s=1), PostgresLease(pg_url)
    try:
        assert frozen.try_acquire()
        time.sleep(1.5)  # no check for longer than the timeout: the server ends the session
        assert other.try_acquire()
        assert not frozen.check()
    finally:
        frozen.release()
        other.release()


def test_file_lease_has_one_holder_and_is_lost_when_its_file_goes(tmp_path: Path) -> None:
    path = lock_path_for(f"sqlite:///{tmp_path / 'f.db'}")
    assert path == tmp_path / "f.db.scheduler.lock"
    a, b = FileLease(path), FileLease(path)
    try:
        assert a.try_acquire() and a.check()
        assert not b.try_acquire()
        path.unlink()
        assert not a.check()
        assert b.try_acquire() and b.check()
    finally:
        a.release()
        b.release()


def test_in_memory_sqlite_needs_no_lock() -> None:
    lease = make_lease("sqlite://")
    assert lease.try_acquire() and lease.check()


def test_jobs_never_import_the_api() -> None:
    code = ("import sys, jobs.scheduler, jobs.tasks, jobs.lease, jobs.options, jobs.cron; "
            "print(sorted(m for m in sys.modules if m == 'api' or m.startswith('api.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"



def test_scheduler_in_background_runs_leads_and_lets_go_on_shutdown(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from forecaster.store import migrate
    from jobs.scheduler import start_in_background

    engine = make_engine(sqlite_url)
    migrate.upgrade(engine)
    sm = make_sessionmaker(engine)
    db_url = sqlite_url
    monkeypatch.setenv("FORECASTER_SCHEDULER__RUN_ON_START", "1")
    handle = start_in_background(make_settings(db_url, [SINE]))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not [r for r in jobruns.list_runs(sm) if r.kind == "train" and r.finished_at]:
        time.sleep(0.1)
    handle.shutdown()
    assert not handle.running
    runs = sorted((r.kind, r.trigger, r.status) for r in jobruns.list_runs(sm))
    assert runs == [("ingest", "cron", "ok"), ("train", "cron", "ok")]
    lease = make_lease(db_url)
    assert lease.try_acquire()  # released on shutdown
    lease.release()
    engine.dispose()
