"""`forecaster serve` against a PostgreSQL cluster of the test's own (initdb in a temp dir, its
own port), which the test stops and starts: the API starts while the database is away, answers
/healthz 200 and /readyz and the data routes 503 problem+json, and recovers by itself when the
database returns. The time from the database accepting connections again to the first
/readyz 200 is printed (``pytest -s``).

Skipped where the PostgreSQL server binaries are not installed.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from forecaster.store import migrate
from forecaster.store.tables import make_engine
from tests.api_server import wait_for

PG_BIN = next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)), None)
PROBLEM = "application/problem+json"

pytestmark = pytest.mark.skipif(PG_BIN is None or shutil.which("runuser") is None and os.geteuid() == 0,
                                reason="needs the PostgreSQL server binaries (and runuser when run as root)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A throwaway PostgreSQL cluster: initdb in a temp dir, trust auth, 127.0.0.1:<port>."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fc-outage-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to the postgres user
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        cmd = [f"{PG_BIN}/{tool}", *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        """Start and wait until it accepts connections (pg_ctl -w)."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "60", "start", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", "fast", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        c.start()
        engine = make_engine(c.url)
        migrate.upgrade(engine)
        engine.dispose()
        yield c
    finally:
        c.remove()


def _status(client: httpx.Client, path: str) -> int | None:
    try:
        return client.get(path).status_code
    except httpx.TransportError:
        return None


def test_serve_starts_without_its_database_answers_503_and_recovers_when_it_returns(
        cluster: Cluster, tmp_path: Path) -> None:
    cluster.stop()
    cfg = tmp_path / "forecaster.toml"
    cfg.write_text(f'database_url = "{cluster.url}"\napi_keys = ["k-outage"]\n\n'
                   '[[series]]\nkey = "push:meter"\nsource = "push"\nfrequency = "1h"\n', encoding="utf-8")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "forecaster.cli", "--config", str(cfg), "serve", "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            wait_for(lambda: _status(client, "/healthz") == 200 or proc.poll() is not None, timeout_s=60)
            assert proc.poll() is None, "serve exited while the database was away"
            for path in ("/readyz", "/v1/series", "/v1/series/push:meter/forecast"):
                r = client.get(path)
                assert r.status_code == 503, (path, r.text)
                assert r.headers["content-type"].startswith(PROBLEM) and "database" in r.json()["detail"]
                assert r.headers["retry-after"]

            recoveries = []
            for _ in range(2):  # it comes back, goes away again, and comes back again
                cluster.start()
                back = time.monotonic()
                wait_for(lambda: _status(client, "/readyz") == 200, timeout_s=30, every_s=0.02)
                recoveries.append(time.monotonic() - back)
                assert client.get("/v1/series").json()["series"][0]["key"] == "push:meter"
                cluster.stop()
                assert client.get("/readyz").status_code == 503
                assert client.get("/v1/series").status_code == 503
                assert client.get("/healthz").status_code == 200
            print(f"\noutage: /readyz 200 again {', '.join(f'{s * 1000:.0f} ms' for s in recoveries)} after "
                  "PostgreSQL accepted connections")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "database unreachable at start" in out
    assert "Traceback" not in out
