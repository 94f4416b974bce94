"""`forecaster up` from nothing: time to first forecast, and the forecast GET's latency while it trains.

    .venv/bin/python bench/up.py [--config forecaster.toml] [--requests 300] [--tree PATH] [--label NAME] [--no-train]

Starts `forecaster up` in a fresh temporary directory with the config (the bundled example by
default), offline (every outbound HTTP request goes to a dead proxy, so ingest falls back to the
bundled snapshots). Reports:

- time to first forecast: from the process start to the first 200 of
  GET /v1/series/{key}/forecast (the config's first series), and to every series answering;
- the GET's p50/p99 over ``--requests`` sequential requests ``--gap-ms`` apart (keep-alive,
  cycling the series) once the start-up training runs (checked on /v1/jobs/runs before and after);
- how long Ctrl-C (SIGINT) takes to stop it, and how the training run ended.

``--tree`` runs another checkout's code (e.g. /work/main for the behaviour before), by PYTHONPATH.
Appends a JSON line to bench/results/up.jsonl; the figures in bench/results/up.md come from it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
DEAD_PROXY = "http://127.0.0.1:9"  # discard port: nothing listens, every fetch fails at once


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def train_runs(client: httpx.Client, key: str) -> list[dict[str, Any]]:
    r = client.get("/v1/jobs/runs", params={"kind": "train"}, headers={"X-API-Key": key})
    return list(r.json().get("runs", [])) if r.status_code == 200 else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "forecaster.toml")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--tree", type=Path, default=ROOT, help="checkout whose code runs (PYTHONPATH)")
    ap.add_argument("--gap-ms", type=float, default=50, help="pause between two GETs")
    ap.add_argument("--no-train", action="store_true", help="start up with --no-train (the GET with nothing training)")
    ap.add_argument("--label", default="this tree")
    ap.add_argument("--timeout", type=float, default=1200, help="give up waiting for a forecast after this")
    args = ap.parse_args()
    config = tomllib.loads(args.config.read_text(encoding="utf-8"))
    keys = [s["key"] for s in config.get("series", [])]
    admin = (config.get("api_keys") or ["change-me"])[0]
    work = Path(tempfile.mkdtemp(prefix="fc-bench-up-"))
    shutil.copy(args.config, work / "forecaster.toml")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(args.tree), "PYTHONUNBUFFERED": "1", "HTTP_PROXY": DEAD_PROXY,
           "HTTPS_PROXY": DEAD_PROXY, "NO_PROXY": "127.0.0.1,localhost", "FORECASTER_CONFIG": "forecaster.toml"}
    lines: list[tuple[float, str]] = []
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "forecaster.cli", "up", "--port", str(port), *(["--no-train"] if args.no_train else [])],
                            cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic() - started, line.rstrip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    report: dict[str, Any] = {"label": args.label, "config": str(args.config.relative_to(ROOT)
                                                                   if args.config.is_relative_to(ROOT) else args.config),
                              "cpus": len(os.sched_getaffinity(0)), "loadavg_at_start": os.getloadavg()}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, trust_env=False) as client:
            first: dict[str, float] = {}
            while len(first) < len(keys) and time.monotonic() - started < args.timeout and proc.poll() is None:
                for key in keys:
                    if key in first:
                        continue
                    try:
                        if client.get(f"/v1/series/{key}/forecast").status_code == 200:
                            first[key] = time.monotonic() - started
                    except httpx.TransportError:
                        break
                time.sleep(0.05)
            if not first:
                raise SystemExit(f"no forecast after {time.monotonic() - started:.0f}s:\n"
                                 + "\n".join(line for _, line in lines[-30:]))
            report["time_to_first_forecast_s"] = round(first[keys[0]], 2) if keys[0] in first else None
            report["time_to_every_forecast_s"] = round(max(first.values()), 2) if len(first) == len(keys) else None
            running_before: list[int] = []
            wait_until = time.monotonic() + 60  # code that trains before serving has nothing running by now
            while not running_before and time.monotonic() < wait_until and proc.poll() is None:
                running_before = [r["id"] for r in train_runs(client, admin) if r["status"] == "running"]
                time.sleep(0.2)  # the start-up training begins once the API answers
            report["training_started_s"] = round(time.monotonic() - started, 2)
            latencies = []
            for i in range(args.requests):
                time.sleep(args.gap_ms / 1000)  # spread over the epochs, as clients would come
                t0 = time.perf_counter()
                r = client.get(f"/v1/series/{keys[i % len(keys)]}/forecast")
                latencies.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, r.text
            runs = train_runs(client, admin)
            still = [r["id"] for r in runs if r["status"] in ("queued", "running") and r["id"] in running_before]
            report["get_ms"] = {"requests": len(latencies), "p50": round(statistics.median(latencies), 2),
                                "p99": round(percentile(latencies, 99), 2), "max": round(max(latencies), 2),
                                "while_training": bool(still)}
            served = client.get(f"/v1/series/{keys[0]}/forecast").json().get("model_version")
            report["first_series_served_by"] = served
    finally:
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        report["ctrl_c_to_exit_s"] = round(time.monotonic() - t0, 2)
        report["exit_code"] = proc.returncode
        reader.join(5)
        shutil.rmtree(work, ignore_errors=True)
    report["first_output_lines"] = [f"{t:6.1f}s {line}" for t, line in lines[:14]]
    report["last_output_lines"] = [f"{t:6.1f}s {line}" for t, line in lines[-6:]]
    print(json.dumps(report, indent=2))
    out = ROOT / "bench" / "results" / "up.jsonl"
    with out.open("a", encoding="utf-8") as f:
        f.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
