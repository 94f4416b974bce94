"""Workers benchmark: retrain throughput on 1 and 2 `forecaster worker` processes against one
process, the queue's overhead per task, and the forecast GET's p99 while a retrain runs.

    nice -n 10 .venv/bin/python bench/workers.py [--series 8] [--duration 5]

In one run, on the PostgreSQL at $FORECASTER_TEST_PG_URL (default
postgresql+psycopg://postgres@127.0.0.1:5432/test; a fresh database is created
and dropped), with ``--series`` small sine series (length 300, a 16-unit LSTM,
5 epochs):

1. Throughput, series trained per minute, for the same series: ``retrain_many``
   in this process (torch already imported), then a job run on 1 worker, then on
   2 workers as started by default (torch takes every core in each), then on 2
   workers with ``--torch-threads cores/2`` (each started and warmed before the
   clock starts). Ratios are taken against the in-process rate of the same run.
2. Queue overhead per task: one task at a time to an idle worker, the time from
   enqueue (procrastinate's ``deferred`` event) to start (``started``), against
   the time the task then took (``started`` to ``succeeded``): the training of a
   small series.
3. ``wrk -c8`` on ``GET /v1/series/{key}/forecast`` of `forecaster serve` at rest,
   then while a retrain of every series runs on 2 workers (the API only enqueues):
   workers as started by default, at nice 19, and confined to the last CPU (one
   torch thread each: the nearest this one box comes to workers on another
   machine); and, for comparison, the same on SQLite with the retrain inside the
   API process.

Writes bench/results/workers.json and prints a table. Only loopback traffic.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.api import run_wrk  # noqa: E402

PG_ADMIN_URL = os.environ.get("FORECASTER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MODEL = {"window": 24, "hidden_size": 16, "epochs": 5, "patience": 100, "batch_size": 64}
KEY = "sine:b0"


def series(n: int) -> list[dict[str, Any]]:
    return [{"key": f"sine:b{i}", "source": "sine", "frequency": "1h",
             "params": {"period": 24, "length": 300, "seed": i + 1}, "model": MODEL} for i in range(n)]


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def write_config(path: Path, url: str, specs: list[dict[str, Any]]) -> Path:
    lines = [f"database_url = {_toml(url)}", 'api_keys = ["bench-key"]', "",
             "[workers]", "heartbeat_s = 2", "stalled_after_s = 10", "poll_s = 0.5", ""]
    for spec in specs:
        lines += ["[[series]]", *(f"{k} = {_toml(v)}" for k, v in spec.items()), ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


class Child:
    """A forecaster command as a child process, its output kept."""

    def __init__(self, config: Path, *args: str, nice: int = 0, cpus: set[int] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORECASTER_")}
        if cpus:
            env["OMP_NUM_THREADS"] = str(len(cpus))  # torch's intra-op threads: one per CPU it may use

        def confine() -> None:
            if nice:
                os.nice(nice)
            if cpus:
                os.sched_setaffinity(0, cpus)

        self.lines: list[str] = []
        self.popen = subprocess.Popen([sys.executable, "-m", "forecaster.cli", "--config", str(config), *args],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                      preexec_fn=confine if nice or cpus else None)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in list(self.lines)):
                return
            if self.popen.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"no {pattern!r}:\n" + "\n".join(self.lines[-30:]))

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(60)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_run(sm: Any, run_id: int, timeout_s: float = 900) -> Any:
    from forecaster.store import jobruns

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = jobruns.get_run(sm, run_id)
        if run.finished_at:
            return run
        time.sleep(0.05)
    raise RuntimeError(f"run {run_id} did not finish")


def wait_http(url: str, timeout_s: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} never answered 200")


def throughput(cfg: Path, settings: Any, sm: Any, n: int) -> dict[str, Any]:
    from forecaster.usecases.queue import TaskQueue
    from forecaster.usecases.jobs import start_run
    from forecaster.usecases.retrain import retrain_many, retrain_series

    retrain_series(sm, settings.series[0])  # warm: torch and its optimiser imported, as in a worker
    started = time.perf_counter()
    reports = retrain_many(sm, settings.series)
    in_process_s = time.perf_counter() - started
    assert all(r.ok for r in reports), reports
    out: dict[str, Any] = {"in_process": {"seconds": round(in_process_s, 2),
                                          "series_per_min": round(n / in_process_s * 60, 1)}}
    queue = TaskQueue(sm, settings)
    try:
        cpus = os.cpu_count() or 1
        # (label, workers, torch threads each): the defaults (torch takes every core in each worker),
        # then two workers sharing the cores as README advises (--torch-threads cores / workers).
        for label, workers, threads in (("workers_1", 1, None), ("workers_2", 2, None),
                                        ("workers_2_shared_cores", 2, max(1, cpus // 2))):
            extra = ("--torch-threads", str(threads)) if threads else ()
            children = [Child(cfg, "worker", *extra) for _ in range(workers)]
            try:
                for c in children:
                    c.wait_for(r"worker\.start")
                started = time.perf_counter()
                run = wait_run(sm, start_run(sm, settings, queue, kind="train", trigger="manual").id)
                seconds = time.perf_counter() - started
                assert run.status == "ok" and run.series_done == n, run
                out[label] = {"seconds": round(seconds, 2), "series_per_min": round(n / seconds * 60, 1),
                              "vs_in_process": round(in_process_s / seconds, 2), "torch_threads": threads or cpus}
            finally:
                for c in children:
                    c.stop()
    finally:
        queue.shutdown()
    return out


def overhead(cfg: Path, settings: Any, sm: Any, tasks: int) -> dict[str, Any]:
    from sqlalchemy import text

    from forecaster.usecases.queue import TaskQueue
    from forecaster.usecases.jobs import start_run

    queue = TaskQueue(sm, settings)
    child = Child(cfg, "worker")
    try:
        child.wait_for(r"worker\.start")
        time.sleep(1.0)  # the worker is idle, listening
        for i in range(tasks):
            wait_run(sm, start_run(sm, settings, queue, kind="train", keys=[settings.series[i % len(settings.series)].key],
                                   trigger="manual").id)
        with sm() as session:
            rows = session.execute(text(
                "SELECT job_id, type::text, at FROM procrastinate.procrastinate_events "
                "WHERE job_id IN (SELECT id FROM procrastinate.procrastinate_jobs ORDER BY id DESC LIMIT :n)"),
                {"n": tasks}).all()
    finally:
        child.stop()
        queue.shutdown()
    events: dict[int, dict[str, Any]] = {}
    for job_id, kind, at in rows:
        events.setdefault(job_id, {})[kind] = at
    waits = sorted((e["started"] - e["deferred"]).total_seconds() * 1000 for e in events.values())
    runs = sorted((e["succeeded"] - e["started"]).total_seconds() * 1000 for e in events.values())
    med = lambda xs: xs[len(xs) // 2]  # noqa: E731
    return {"tasks": len(waits), "enqueue_to_start_ms_median": round(med(waits), 1),
            "enqueue_to_start_ms_max": round(waits[-1], 1), "task_ms_median": round(med(runs), 1),
            "overhead_share": round(med(waits) / (med(waits) + med(runs)), 4)}


def api_under_retrain(cfg: Path, settings: Any, sm: Any, duration_s: float, workers: int,
                      worker_nice: int = 0, worker_cpus: set[int] | None = None) -> dict[str, Any]:
    """wrk on the forecast GET at rest, then while a retrain runs on ``workers`` worker processes.

    On this one machine the workers share the API's two cores; ``worker_nice`` runs them at a
    lower CPU priority, which is what a box hosting both should do (on separate machines, as
    in production, they take nothing from the API at all); ``worker_cpus`` confines them to those
    CPUs (one torch thread per CPU), the closest this box comes to workers on another machine."""
    from forecaster.usecases.queue import TaskQueue
    from forecaster.usecases.jobs import start_run

    port = free_port()
    api = Child(cfg, "serve", "--port", str(port))
    children = [Child(cfg, "worker", nice=worker_nice, cpus=worker_cpus) for _ in range(workers)]
    queue = TaskQueue(sm, settings)
    url = f"http://127.0.0.1:{port}/v1/series/{KEY}/forecast"
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        for c in children:
            c.wait_for(r"worker\.start")
        run_wrk(url, 8, 1, None)  # warm the connection path
        rest = run_wrk(url, 8, duration_s, None)
        run_id = start_run(sm, settings, queue, kind="train", trigger="api").id
        busy = run_wrk(url, 8, duration_s, None)
        still = wait_run(sm, run_id)
        training_overlapped = still.finished_at is not None
    finally:
        for c in [api, *children]:
            c.stop()
        queue.shutdown()
    return {"at_rest": rest, "during_retrain": busy, "workers": workers, "worker_nice": worker_nice,
            "worker_cpus": sorted(worker_cpus) if worker_cpus else None, "overlapped": training_overlapped,
            "p99_ratio": round(busy["p99_ms"] / rest["p99_ms"], 2), "rps_ratio": round(busy["rps"] / rest["rps"], 2)}


def ingested(config: Path, url: str, specs: list[dict[str, Any]]) -> tuple[Path, Any, Any, Any]:
    """A config for ``url`` and ``specs``, the database migrated and every series ingested:
    (config path, settings, engine, sessionmaker)."""
    from forecaster.usecases import ingest
    from forecaster.store import migrate
    from forecaster.config.loading import load_settings
    from forecaster.store.tables import make_engine, make_sessionmaker
    from forecaster.usecases.forecasting import refresh_after_ingest

    cfg = write_config(config, url, specs)
    settings = load_settings(cfg)
    engine = make_engine(url)
    migrate.upgrade(engine)
    sm = make_sessionmaker(engine)
    ingest.ingest_many(sm, settings, settings.series, after_write=refresh_after_ingest)
    return cfg, settings, engine, sm


def api_in_process_retrain(tmp: Path, specs: list[dict[str, Any]], duration_s: float) -> dict[str, Any]:
    """The same wrk run on SQLite, where the admin-triggered retrain runs inside the API process."""
    import httpx

    cfg, _, engine, _ = ingested(tmp / "sqlite.toml", f"sqlite:///{tmp / 'bench.db'}", specs)
    engine.dispose()
    port = free_port()
    api = Child(cfg, "serve", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/readyz")
        run_wrk(f"{base}/v1/series/{KEY}/forecast", 8, 1, None)
        rest = run_wrk(f"{base}/v1/series/{KEY}/forecast", 8, duration_s, None)
        r = httpx.post(f"{base}/v1/jobs/train", headers={"X-API-Key": "bench-key"}, timeout=10)
        assert r.status_code == 202, r.text
        busy = run_wrk(f"{base}/v1/series/{KEY}/forecast", 8, duration_s, None)
    finally:
        api.stop()
    return {"at_rest": rest, "during_retrain": busy,
            "p99_ratio": round(busy["p99_ms"] / rest["p99_ms"], 2), "rps_ratio": round(busy["rps"] / rest["rps"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=int, default=8)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of each wrk run")
    ap.add_argument("--overhead-tasks", type=int, default=6)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "workers.json")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    from sqlalchemy import create_engine

    name = f"fc_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    tmp = Path(tempfile.mkdtemp(prefix="fc-bench-workers-"))
    specs = series(args.series)
    result: dict[str, Any] = {}
    try:
        cfg, settings, engine, sm = ingested(tmp / "forecaster.toml", url, specs)
        import torch

        result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                             "python": platform.python_version(), "torch": torch.__version__,
                             "torch_threads": torch.get_num_threads(), "loadavg_at_start": os.getloadavg()}
        result["settings"] = {"series": args.series, "model": MODEL, "length": 300, "wrk": "-t1 -c8",
                              "duration_s": args.duration}
        result["throughput"] = throughput(cfg, settings, sm, args.series)
        print(json.dumps(result["throughput"]), flush=True)
        result["queue_overhead"] = overhead(cfg, settings, sm, args.overhead_tasks)
        print(json.dumps(result["queue_overhead"]), flush=True)
        result["forecast_get_workers"] = api_under_retrain(cfg, settings, sm, args.duration, workers=2)
        print(json.dumps(result["forecast_get_workers"]), flush=True)
        result["forecast_get_workers_niced"] = api_under_retrain(cfg, settings, sm, args.duration, workers=2,
                                                                 worker_nice=19)
        print(json.dumps(result["forecast_get_workers_niced"]), flush=True)
        if (os.cpu_count() or 1) >= 2:
            last = (os.cpu_count() or 2) - 1
            result["forecast_get_workers_own_cpu"] = api_under_retrain(cfg, settings, sm, args.duration, workers=2,
                                                                       worker_cpus={last})
            print(json.dumps(result["forecast_get_workers_own_cpu"]), flush=True)
        engine.dispose()
        result["forecast_get_in_process_sqlite"] = api_in_process_retrain(tmp, specs, args.duration)
        print(json.dumps(result["forecast_get_in_process_sqlite"]), flush=True)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
    result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    t = result["throughput"]
    print(f"\nseries/min: in process {t['in_process']['series_per_min']}, 1 worker {t['workers_1']['series_per_min']} "
          f"({t['workers_1']['vs_in_process']}x), 2 workers {t['workers_2']['series_per_min']} "
          f"({t['workers_2']['vs_in_process']}x), 2 workers with --torch-threads "
          f"{t['workers_2_shared_cores']['torch_threads']} {t['workers_2_shared_cores']['series_per_min']} "
          f"({t['workers_2_shared_cores']['vs_in_process']}x)")
    q = result["queue_overhead"]
    print(f"queue overhead: enqueue->start median {q['enqueue_to_start_ms_median']} ms vs task {q['task_ms_median']} ms")
    for k in ("forecast_get_workers", "forecast_get_workers_niced", "forecast_get_workers_own_cpu",
              "forecast_get_in_process_sqlite"):
        if k not in result:
            continue
        r = result[k]
        print(f"{k}: p99 at rest {r['at_rest']['p99_ms']:.2f} ms, during retrain {r['during_retrain']['p99_ms']:.2f} ms; "
              f"req/s {r['at_rest']['rps']:.0f} -> {r['during_retrain']['rps']:.0f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
