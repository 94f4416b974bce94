"""Public pages as a series grows: ``/``, ``/metrics`` and ``/v1/series`` over real HTTP with one
series of 1.1 M rows, on SQLite and PostgreSQL.

    PYTHONPATH=. .venv/bin/python bench/pages.py [--rows 1100000] [--repeat 5] [--backend sqlite|postgres|both]

Each backend gets a fresh, migrated database (a SQLite file in a temporary folder; a PostgreSQL
database created on ``FORECASTER_TEST_PG_URL``'s server and dropped afterwards), one push series
filled through the store's upsert (the path a push takes) and two small ones. The real app then
serves on 127.0.0.1 under uvicorn, and each page is fetched once to warm up and ``--repeat``
times measured: the median and the slowest go into the table printed at the end (markdown, for
bench/results/pages.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import uvicorn
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forecaster.config.settings import Settings  # noqa: E402 - after the path is set
from forecaster.store import migrate, observations  # noqa: E402
from forecaster.store.series import sync_series  # noqa: E402
from forecaster.store.tables import make_engine, make_sessionmaker, write_session  # noqa: E402

PG_ADMIN_URL = os.environ.get("FORECASTER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BIG = "push:big"
PAGES = ("/", "/metrics", "/v1/series")
CHUNK = 100_000  # rows per upsert (one transaction each)


def settings_for(url: str) -> Settings:
    return Settings(database_url=url, api_keys=["bench-key"], snapshot_fallback=False, series=[
        {"key": BIG, "source": "push", "frequency": "5min"},
        {"key": "push:small-a", "source": "push", "frequency": "1h"},
        {"key": "push:small-b", "source": "push", "frequency": "1h"},
    ])


def fill(url: str, rows: int) -> float:
    """Migrate and store ``rows`` observations of the big series (and 500 of each small one); seconds taken."""
    settings = settings_for(url)
    engine = make_engine(url)
    migrate.upgrade(engine)
    sm = make_sessionmaker(engine)
    start = pd.Timestamp("2010-01-01", tz="UTC")
    rng = np.random.default_rng(0)
    began = time.perf_counter()
    for spec in settings.series:
        n = rows if spec.key == BIG else 500
        step = pd.Timedelta(spec.frequency)
        for first in range(0, n, CHUNK):
            m = min(CHUNK, n - first)
            frame = pd.DataFrame({"ts": pd.date_range(start + first * step, periods=m, freq=step),
                                  "value": rng.normal(100, 5, m)})
            with write_session(sm) as session:
                observations.upsert(session, sync_series(session, spec), frame)
    took = time.perf_counter() - began
    if url.startswith("postgresql"):
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))  # what autovacuum would have done by the time anyone looks
    engine.dispose()
    return took


def serve_and_time(url: str, rows: int, repeat: int) -> dict[str, tuple[float, float]]:
    """(median, slowest) seconds of each page over real HTTP."""
    from api.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings_for(url)), log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    out = {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            for path in PAGES:
                assert client.get(path).status_code == 200, path
                took = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    r = client.get(path)
                    took.append(time.perf_counter() - t0)
                    assert r.status_code == 200, (path, r.status_code)
                out[path] = (statistics.median(took), max(took))
            listed = {s["key"]: s["observation_count"] for s in client.get("/v1/series").json()["series"]}
            assert listed[BIG] == rows, listed
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
    return out


def run_backend(backend: str, rows: int, repeat: int) -> tuple[float, dict[str, tuple[float, float]]]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'pages.db'}"
            return fill(url, rows), serve_and_time(url, rows, repeat)
    name = f"bench_pages_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        return fill(url, rows), serve_and_time(url, rows, repeat)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    args = parser.parse_args()
    backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
    lines = [f"rows in the big series: {args.rows:,}; {args.repeat} timed GETs per page after one warm-up; "
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC", "",
             "| backend | fill (s) | page | median (ms) | slowest (ms) |", "|---|---|---|---|---|"]
    for backend in backends:
        filled, pages = run_backend(backend, args.rows, args.repeat)
        for path, (median, slowest) in pages.items():
            lines.append(f"| {backend} | {filled:.1f} | `{path}` | {median * 1000:.1f} | {slowest * 1000:.1f} |")
        print(f"{backend} done", file=sys.stderr, flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
