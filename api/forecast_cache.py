"""Serialised stored forecasts, reused for as long as the database provably has not changed.

``GET /v1/series/{key}/forecast`` is the hot path. Through the ORM it costs a
threadpool hop and three queries per request; most requests would get the
same bytes as the one before. This cache keeps the response body per series
key together with a *change token* of the database taken before the body was
read, and serves it only while the token is unchanged, so the next GET after
a promotion, a rollback, an ingest or a retrain — by this process or any
other — sees the new forecast. Nothing here is time-based.

The token is SQLite's ``PRAGMA data_version``: an integer, per connection,
that changes whenever any other connection (in any process) commits to the
database file. Reading it takes a few microseconds and never waits for a
writer (WAL readers do not block), so it runs on the event loop. On databases
with no such cheap token (PostgreSQL, in-memory SQLite) ``token()`` is None and
every request reads the database; a LISTEN/NOTIFY token is the way to extend
this to PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from urllib.request import pathname2url

from sqlalchemy.engine import Engine

from api.schemas import ForecastOut


@dataclass(frozen=True)
class CachedForecast:
    """A ready response body and the method label the metrics need."""

    body: bytes
    method: str


class ForecastCache:
    """Response bodies by series key, valid for one database change token."""

    def __init__(self, engine: Engine) -> None:
        self._entries: dict[str, tuple[int, CachedForecast]] = {}
        self._lock = threading.Lock()
        self._probe: sqlite3.Connection | None = None
        self._path: str | None = None
        database = engine.url.database
        if engine.dialect.name == "sqlite" and database and database != ":memory:" \
                and not database.startswith("file:"):
            self._path = database

    def token(self) -> int | None:
        """The database's change token now, or None when it has none (then nothing is cached)."""
        if self._path is None:
            return None
        with self._lock:
            try:
                if self._probe is None:
                    # timeout=0: never wait for a lock on the event loop; a busy database means "no token".
                    # mode=rw: never create the file (a missing database is the slow path's 503 to report).
                    self._probe = sqlite3.connect(f"file:{pathname2url(self._path)}?mode=rw", uri=True, timeout=0,
                                                  isolation_level=None, check_same_thread=False)
                row = self._probe.execute("PRAGMA data_version").fetchone()
            except sqlite3.Error:
                self._close_probe()
                return None
        return int(row[0])

    def get(self, key: str, token: int | None) -> CachedForecast | None:
        """The cached body of ``key`` if it was read under ``token``."""
        if token is None:
            return None
        entry = self._entries.get(key)
        return entry[1] if entry is not None and entry[0] == token else None

    def put(self, key: str, token: int | None, forecast: ForecastOut) -> CachedForecast:
        """Serialise ``forecast`` (read after ``token`` was taken) and keep it under that token."""
        cached = CachedForecast(forecast.model_dump_json().encode(), forecast.method)
        if token is not None:
            with self._lock:
                self._entries[key] = (token, cached)
        return cached

    def close(self) -> None:
        with self._lock:
            self._entries.clear()
            self._close_probe()

    def _close_probe(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
