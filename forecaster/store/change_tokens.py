"""Change tokens: a cheap proof that what a series' forecast read returned has not changed since.

A token is taken *before* a read; a later token equal to it means no commit has
touched what the read saw, so its result can be served again. Nothing here is
time-based, and any process's writes count (scheduler, workers, other API replicas).

- SQLite: ``PRAGMA data_version`` of the database file — an integer that changes
  whenever any other connection commits. A few microseconds, never waits for a
  writer. One token for the whole database.
- PostgreSQL: the row versions (``xmin``, the id of the transaction that wrote a
  row) of exactly the rows a forecast read uses: the series, its served
  forecast (the step-1 row and every later step of its path), that forecast's model
  version and the series' latest model version.
  Any insert, update or delete of one of them changes the tuple; a write to any
  other series does not. One indexed statement on a dedicated autocommit
  connection (MVCC: it never waits for a writer), no trigger and no shared
  counter row for writers to queue on. It is never prepared on the server, so
  it works behind pgbouncer in transaction mode.

``probe_for(url)`` picks the probe; a database with neither (in-memory SQLite)
has none, and callers then read every time.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Hashable
from typing import Any, Protocol
from urllib.request import pathname2url

from sqlalchemy.engine import URL, make_url

from forecaster.logs import log_event

# The rows ``forecasting.get_forecast`` reads, and the version of each (None where absent).
FORECAST_ROWS_SQL = """
SELECT s.key, s.id, s.xmin::text, f.id, f.xmin::text, m.xmin::text, l.id, l.xmin::text, p.versions
FROM series s
LEFT JOIN LATERAL (SELECT id, xmin, model_version_id, target_ts, origin_ts, made_at FROM forecasts
                   WHERE series_id = s.id AND step = 1 ORDER BY target_ts DESC, id DESC LIMIT 1) f ON true
LEFT JOIN LATERAL (SELECT string_agg(id::text || ':' || xmin::text, ',' ORDER BY id) AS versions FROM forecasts
                   WHERE series_id = s.id AND target_ts > f.target_ts AND step > 1
                     AND origin_ts = f.origin_ts AND made_at = f.made_at) p ON true
LEFT JOIN model_versions m ON m.id = f.model_version_id
LEFT JOIN LATERAL (SELECT id, xmin FROM model_versions
                   WHERE series_id = s.id ORDER BY version DESC LIMIT 1) l ON true
WHERE s.key = ANY(%s)
"""


class ChangeProbe(Protocol):
    async def token(self, key: str) -> Hashable | None:
        """A token for ``key``'s forecast read now, or None (then read, and cache nothing)."""
        ...

    async def aclose(self) -> None: ...


class SQLiteProbe:
    """``PRAGMA data_version`` of one SQLite file, on a connection of its own."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    async def token(self, key: str) -> Hashable | None:
        with self._lock:
            try:
                if self._conn is None:
                    # timeout=0: never wait for a lock on the event loop; a busy database means "no token".
                    # mode=rw: never create the file (a missing database is the slow path's 503 to report).
                    self._conn = sqlite3.connect(f"file:{pathname2url(self._path)}?mode=rw", uri=True, timeout=0,
                                                 isolation_level=None, check_same_thread=False)
                row = self._conn.execute("PRAGMA data_version").fetchone()
            except sqlite3.Error:
                self._close()
                return None
        return int(row[0])

    async def aclose(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class PostgresProbe:
    """The row versions behind series' forecasts, read on one autocommit psycopg connection.

    Requests that arrive while a probe statement is in flight wait for the *next*
    one, which then answers all of them at once (``WHERE key = ANY(...)``): a token
    is never older than the request that asked for it, and eight concurrent GETs
    cost one or two round trips, not eight queued ones.

    A failure (database down, statement over ``timeout_s``, schema not migrated)
    answers None — the caller reads the database and reports what is wrong — and
    the probe stays quiet for ``retry_s`` before it connects again.
    """

    def __init__(self, url: URL, *, timeout_s: float = 1.0, retry_s: float = 1.0) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._timeout_s, self._retry_s = timeout_s, retry_s
        self._conn: Any = None  # psycopg.AsyncConnection, bound to the loop that opened it
        self._waiting: dict[str, list[asyncio.Future[Hashable | None]]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._quiet_until = 0.0
        self._failing = False

    async def token(self, key: str) -> Hashable | None:
        if time.monotonic() < self._quiet_until:
            return None
        future: asyncio.Future[Hashable | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, {}  # later arrivals wait for the next statement
            tokens: dict[str, Hashable] = {}
            try:
                tokens = await self._read(list(batch))
            finally:  # whatever happened (even cancellation at shutdown), nobody waits forever
                for key, futures in batch.items():
                    for future in futures:
                        if not future.done():
                            future.set_result(tokens.get(key))

    async def _read(self, keys: list[str]) -> dict[str, Hashable]:
        import psycopg

        try:
            if self._conn is None:
                # prepare_threshold=None: no server-side prepared statements, which pgbouncer in
                # transaction mode loses between statements; one short statement gains little from them.
                self._conn = await asyncio.wait_for(
                    psycopg.AsyncConnection.connect(self._conninfo, autocommit=True, prepare_threshold=None,
                                                    application_name="forecaster-api-probe"),
                    self._timeout_s)
            cursor = await asyncio.wait_for(self._conn.execute(FORECAST_ROWS_SQL, (keys,)), self._timeout_s)
            rows = await cursor.fetchall()
        except (TimeoutError, psycopg.Error, OSError) as exc:
            await self._drop()
            self._quiet_until = time.monotonic() + self._retry_s
            if not self._failing:
                self._failing = True
                log_event("api.change_probe_unavailable", level=logging.WARNING,
                          error=f"{type(exc).__name__}: {str(exc).strip() or 'timed out'}",
                          detail="forecast GETs read the database until the probe works again")
            return {}
        if self._failing:
            self._failing = False
            log_event("api.change_probe_restored")
        # No such series, or no forecast yet: no token (the read says which, uncached).
        return {row[0]: tuple(row[1:]) for row in rows if row[3] is not None}

    async def aclose(self) -> None:
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # noqa: BLE001 - a broken connection is being discarded anyway
                pass


def probe_for(url: str | URL) -> ChangeProbe | None:
    """The change probe of a database, or None where there is no cheap one (in-memory SQLite)."""
    url = make_url(url)
    database = url.database
    if url.get_backend_name() == "sqlite":
        if database and database != ":memory:" and not database.startswith("file:"):
            return SQLiteProbe(database)
        return None
    if url.get_backend_name() == "postgresql":
        return PostgresProbe(url)
    return None
