"""HTTP API benchmark: the real app against a bare FastAPI app, and predict against the model itself.

    .venv/bin/python bench/api.py [--quick] [--concurrency 8] [--duration 5] [--client auto|wrk|python]

In one run, with the same uvicorn settings for both servers (one worker, h11 or
httptools as installed, no access log), each server in its own process on
127.0.0.1 and the load generated from a third process (``wrk`` when installed,
else a threaded keep-alive client in this file):

- ``GET /v1/series/{key}/forecast`` of the real app (SQLite, a trained sine
  model) against a bare FastAPI app answering a constant JSON of the same shape:
  req/s, p50 and p99 at ``--concurrency`` connections (goal: >= 0.85x the bare
  throughput, p99 < 10 ms).
- ``POST /v1/models/{id}/predict`` with 256 windows, one connection, against
  ``Predictor.predict`` on the same windows called in this process with the same
  torch threads (goal: p50 <= 1.5x).
- ``POST /v1/models/{id}/predict`` with one window, one connection (goal: p50 < 2 ms).

Rounds alternate bare and real so that drift on a shared machine hits both.
Every loop is bounded by time and count; only loopback traffic. Prints a table
and writes bench/results/api.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "sine:bench"
WINDOW = 48  # the hourly default
BARE_BODY = {"series_key": KEY, "value": 0.71, "lower": 0.52, "upper": 0.9, "level": 0.9,
             "target_ts": "2024-03-24T08:00:00Z", "made_at": "2026-11-23T03:00:12Z", "method": "model",
             "model_version": 1, "model_version_id": 1, "mase": 0.82, "served_by": "recurrent model", "model_mase": 0.82,
             "path": [{"step": k, "target_ts": f"2024-03-24T{7 + k:02d}:00:00Z", "value": 0.71 + k / 100,
                       "lower": 0.52 + k / 100, "upper": 0.9 + k / 100} for k in range(1, 25)]}  # a 24-step path
UVICORN_SETTINGS = "1 worker, log_level=warning, no access log, lifespan on"  # the same for both servers
MAX_REQUESTS = 2_000_000  # hard cap per measurement for the Python client


# ---------------------------------------------------------------- servers (child processes)


def bare_app() -> Any:
    """A FastAPI app with one async route answering a constant JSON (the ceiling to compare with)."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/v1/series/{key}/forecast")
    async def forecast(key: str) -> dict[str, Any]:
        return BARE_BODY

    return app


def serve_child(kind: str, fd: int, database_url: str | None) -> None:
    """Run one server on the inherited, already bound socket ``fd`` until terminated."""
    import uvicorn

    if kind == "bare":
        app = bare_app()
    else:
        from api.app import create_app
        from forecaster.logs import configure_logging

        configure_logging("WARNING")
        app = create_app(_settings(database_url or ""))
    # socket(fileno=) detects the family (uvicorn's own fd= assumes a Unix socket, which would
    # leave TCP_NODELAY off and let Nagle's algorithm add delays).
    sock = socket.socket(fileno=fd)
    config = uvicorn.Config(app, log_level="warning", access_log=False, workers=1, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


def _settings(database_url: str) -> Any:
    from forecaster.config.settings import Settings

    return Settings(database_url=database_url, api_keys=["bench"], series=[{
        "key": KEY, "source": "sine", "frequency": "1h",
        "params": {"period": 24, "noise": 0.2, "length": 1500, "seed": 3},
        "model": {"epochs": 8, "hidden_size": 32, "window": WINDOW},
    }])


class Server:
    """A benchmark server in its own process, on a socket bound here (no port races)."""

    def __init__(self, kind: str, database_url: str | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(2048)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        fd = self.sock.fileno()
        args = [sys.executable, __file__, "--serve", kind, "--fd", str(fd)]
        if database_url:
            args += ["--database-url", database_url]
        self.proc = subprocess.Popen(args, pass_fds=(fd,), cwd=ROOT)

    def wait_ready(self, path: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", path)
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.url}{path} not ready after {timeout_s} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.sock.close()


# ---------------------------------------------------------------- load (wrk or a child process)


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def run_wrk(url: str, concurrency: int, duration_s: float, body: Path | None) -> dict[str, float]:
    """One wrk run (its own process); req/s, p50, p99 and non-2xx count."""
    args = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration_s))}s", "--latency", url]
    if body is not None:
        script = body.with_suffix(".lua")
        script.write_text(f'local f = io.open("{body}", "rb")\nwrk.method = "POST"\nwrk.body = f:read("*a")\n'
                          'f:close()\nwrk.headers["Content-Type"] = "application/json"\n', encoding="utf-8")
        args[1:1] = ["-s", str(script)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration_s + 60, check=True).stdout
    pct = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)$", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
            "p50_ms": _ms(pct["50"]), "p99_ms": _ms(pct["99"]),
            "requests": float(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
            "errors": float(errors.group(1)) if errors else 0.0,
            "socket_errors": 1.0 if socket_errors else 0.0}


def load_child(url: str, concurrency: int, duration_s: float, body_path: str | None) -> None:
    """The Python load generator (run as its own process): threads with keep-alive connections."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    body = Path(body_path).read_bytes() if body_path else None
    headers = {"Content-Type": "application/json"} if body else {}
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    stop_at = time.perf_counter() + duration_s
    per_thread_cap = MAX_REQUESTS // concurrency

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        mine = latencies[i]
        while time.perf_counter() < stop_at and len(mine) < per_thread_cap:
            t0 = time.perf_counter()
            conn.request("POST" if body else "GET", parts.path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            mine.append(time.perf_counter() - t0)
            errors[i] += resp.status >= 300
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    flat = sorted(x for xs in latencies for x in xs)
    print(json.dumps({"rps": len(flat) / elapsed, "p50_ms": flat[len(flat) // 2] * 1e3,
                      "p99_ms": flat[min(len(flat) - 1, int(len(flat) * 0.99))] * 1e3,
                      "requests": float(len(flat)), "errors": float(sum(errors)), "socket_errors": 0.0}))


def measure(client: str, url: str, concurrency: int, duration_s: float, body: Path | None = None) -> dict[str, float]:
    if client == "wrk":
        return run_wrk(url, concurrency, duration_s, body)
    args = [sys.executable, __file__, "--load", url, "--concurrency", str(concurrency), "--duration", str(duration_s)]
    if body is not None:
        args += ["--body", str(body)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration_s + 60, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


# ---------------------------------------------------------------- setup and in-process baseline


def build_database(path: Path) -> tuple[str, int]:
    """A SQLite file with the bench series ingested and a trained champion; (url, model_version_id)."""
    from forecaster.store import migrate
    from forecaster.store import registry
    from forecaster.store.tables import make_engine, make_sessionmaker, write_session
    from forecaster.usecases.forecasting import refresh_after_ingest, refresh_forecast
    from forecaster.store.series import series_by_key
    from forecaster.usecases.ingest import ingest_series
    from forecaster.usecases.retrain import retrain_series

    url = f"sqlite:///{path}"
    settings = _settings(url)
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        sm = make_sessionmaker(engine)
        spec = settings.series[0]
        outcome = ingest_series(sm, settings, spec, after_write=refresh_after_ingest)
        assert outcome.ok, outcome
        report = retrain_series(sm, spec)
        assert report.version is not None and report.model_version_id is not None, report
        if report.status != "promoted":  # serve it anyway: this measures serving, not the gate
            with write_session(sm) as session:
                registry.promote(session, series_key=KEY, version=report.version, force=True)
                refresh_forecast(session, series_by_key(session, KEY))
        return url, report.model_version_id
    finally:
        engine.dispose()


def in_process_predict(url: str, model_version_id: int, windows: Any, repeats: int) -> dict[str, float]:
    """p50 of ``Predictor.predict_paths`` (what the route runs) called directly, with the API's torch threads."""
    import numpy as np
    import torch
    from sqlalchemy.orm import Session

    from api.predictors import TORCH_THREADS
    from forecaster.store import registry
    from forecaster.store.tables import make_engine
    from forecaster.modelling.predictor import Predictor

    torch.set_num_threads(min(torch.get_num_threads(), TORCH_THREADS))
    engine = make_engine(url)
    with Session(engine) as session:
        predictor = Predictor.from_artifact(*registry.load_artifact(session, model_version_id=model_version_id).parts())
    engine.dispose()
    w = np.asarray(windows, dtype=np.float64)
    for _ in range(20):
        predictor.predict_paths(w)
    times = []
    deadline = time.perf_counter() + 10
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.predict_paths(w)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    return {"p50_ms": statistics.median(times) * 1e3, "threads": float(torch.get_num_threads())}


def make_windows(batch: int) -> list[list[float]]:
    import numpy as np

    rng = np.random.default_rng(0)
    phase = rng.uniform(0, 2 * np.pi, (batch, 1))
    w = np.sin(np.arange(WINDOW)[None, :] * 2 * np.pi / 24 + phase) + rng.normal(0, 0.2, (batch, WINDOW))
    return [[round(float(x), 6) for x in row] for row in w]


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s per measurement")
    ap.add_argument("--concurrency", type=int, default=8, help="connections for the GET comparison")
    ap.add_argument("--duration", type=float, default=None, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds (median reported)")
    ap.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument("--serve", choices=["real", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--database-url", help=argparse.SUPPRESS)
    ap.add_argument("--load", help=argparse.SUPPRESS)
    ap.add_argument("--body", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve_child(args.serve, args.fd, args.database_url)
        return
    if args.load:
        load_child(args.load, args.concurrency, args.duration, args.body)
        return

    duration = args.duration or (2.0 if args.quick else 5.0)
    rounds = args.rounds or (1 if args.quick else 3)
    client = args.client if args.client != "auto" else ("wrk" if shutil.which("wrk") else "python")
    tmp = Path(tempfile.mkdtemp(prefix="forecaster-bench-api-"))
    servers: list[Server] = []
    try:
        print(f"building the database (ingest + train {KEY}) in {tmp} ...", flush=True)
        url, mv_id = build_database(tmp / "bench.db")
        one, batch = make_windows(1), make_windows(256)
        (tmp / "one.json").write_text(json.dumps({"windows": one}))
        (tmp / "batch.json").write_text(json.dumps({"windows": batch}))
        direct_256 = in_process_predict(url, mv_id, batch, 2000)
        direct_1 = in_process_predict(url, mv_id, one, 5000)

        real, bare = Server("real", url), Server("bare")
        servers += [real, bare]
        forecast_path = f"/v1/series/{KEY}/forecast"
        real.wait_ready(forecast_path)
        bare.wait_ready(forecast_path)
        print(f"servers up (real {real.url}, bare {bare.url}); load from {client}, "
              f"{rounds} round(s) of {duration:g} s", flush=True)

        for srv in (real, bare):  # warm both (imports, caches, the model load)
            measure(client, srv.url + forecast_path, args.concurrency, 1)
        measure(client, f"{real.url}/v1/models/{mv_id}/predict", 1, 1, tmp / "one.json")
        get_real, get_bare, p256, p1 = [], [], [], []
        for _ in range(rounds):
            get_bare.append(measure(client, bare.url + forecast_path, args.concurrency, duration))
            get_real.append(measure(client, real.url + forecast_path, args.concurrency, duration))
            p256.append(measure(client, f"{real.url}/v1/models/{mv_id}/predict", 1, duration, tmp / "batch.json"))
            p1.append(measure(client, f"{real.url}/v1/models/{mv_id}/predict", 1, duration, tmp / "one.json"))
        gr, gb, pb, po = median_of(get_real), median_of(get_bare), median_of(p256), median_of(p1)
        failed = sum(r["errors"] + r["socket_errors"] for r in get_real + get_bare + p256 + p1)
    finally:
        for srv in servers:
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    import torch

    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "client": client, "uvicorn": UVICORN_SETTINGS,
                    "http": "httptools" if _has("httptools") else "h11",
                    "loop": "uvloop" if _has("uvloop") else "asyncio"},
        "settings": {"concurrency": args.concurrency, "duration_s": duration, "rounds": rounds, "window": WINDOW},
        "get_forecast": {"real": gr, "bare": gb, "throughput_ratio": gr["rps"] / gb["rps"],
                         "goal": "ratio >= 0.85 and real p99 < 10 ms",
                         "met": gr["rps"] / gb["rps"] >= 0.85 and gr["p99_ms"] < 10},
        "predict_256": {"http": pb, "in_process": direct_256, "ratio_p50": pb["p50_ms"] / direct_256["p50_ms"],
                        "goal": "http p50 <= 1.5x in-process", "met": pb["p50_ms"] <= 1.5 * direct_256["p50_ms"]},
        "predict_1": {"http": po, "in_process": direct_1, "goal": "http p50 < 2 ms", "met": po["p50_ms"] < 2},
        "failed_requests": failed,
    }
    rows = [
        ("GET forecast, bare FastAPI", f"c={args.concurrency}", gb["rps"], gb["p50_ms"], gb["p99_ms"], ""),
        ("GET forecast, real app", f"c={args.concurrency}", gr["rps"], gr["p50_ms"], gr["p99_ms"],
         f"{results['get_forecast']['throughput_ratio']:.2f}x bare (goal >= 0.85x, p99 < 10 ms)"),
        ("POST predict, 256 windows", "c=1", pb["rps"], pb["p50_ms"], pb["p99_ms"],
         f"{results['predict_256']['ratio_p50']:.2f}x in-process (goal <= 1.5x)"),
        ("Predictor.predict, 256, in-process", "-", None, direct_256["p50_ms"], None,
         f"torch threads {direct_256['threads']:.0f}"),
        ("POST predict, 1 window", "c=1", po["rps"], po["p50_ms"], po["p99_ms"], "goal p50 < 2 ms"),
        ("Predictor.predict, 1, in-process", "-", None, direct_1["p50_ms"], None, ""),
    ]
    print(f"\n{'':38} {'conc':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}  note")
    for name, conc, rps, p50, p99, note in rows:
        print(f"{name:38} {conc:>5} {_fmt(rps, 0):>9} {_fmt(p50, 2):>8} {_fmt(p99, 2):>8}  {note}")
    machine = results["machine"]
    print(f"\n{machine['cpus']} CPUs, load by {client}, uvicorn 1 worker ({machine['http']}, {machine['loop']}); "
          f"goals met: get {results['get_forecast']['met']}, predict-256 {results['predict_256']['met']}, "
          f"predict-1 {results['predict_1']['met']}; failed requests: {failed:.0f}")
    out = ROOT / "bench" / "results" / "api.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _fmt(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


if __name__ == "__main__":
    main()
