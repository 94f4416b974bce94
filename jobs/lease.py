"""The leader lease: one scheduler process among several runs the jobs.

    lease = make_lease(settings.database_url)
    lease.try_acquire() -> bool     # non-blocking; True when this process leads now
    lease.check() -> bool           # still leading? (False once the lock is lost)
    lease.release()                 # give it up; safe to call when not held

PostgreSQL: a session-level ``pg_try_advisory_lock`` on a fixed 64-bit key,
held on a connection of its own (never one of the work pool's, which come and
go). The server releases the lock the moment that session ends, so a leader
killed with ``kill -9`` frees it at once; a leader whose host vanishes frees it
when the server drops the silent session (TCP keepalives and, on PostgreSQL 14+,
``idle_session_timeout``: the leader pings every ``check`` and the server ends
the session after ``idle_timeout_s`` without one). A failed ping means the lock
may be gone: ``check`` answers False and the caller stops leading.

SQLite: an exclusive non-blocking ``fcntl.flock`` on ``<database>.scheduler.lock``
next to the database file. The kernel drops it when the process dies. An
in-memory database is private to its process, so its lease always succeeds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import IO, Protocol

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from forecaster.errors import StorageUnavailable
from forecaster.logs import log_event

LOCK_NAME = "forecaster-scheduler"


def lock_key(name: str = LOCK_NAME) -> int:
    """A fixed signed 64-bit advisory-lock key derived from ``name`` (PostgreSQL ``bigint``)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Lease(Protocol):
    """What the scheduler needs from a leader lock."""

    description: str

    def try_acquire(self) -> bool:
        """Take the lock if it is free; never blocks. True when held afterwards."""

    def check(self) -> bool:
        """True while the lock is still held by this process."""

    def release(self) -> None:
        """Give the lock up (a no-op when not held)."""


class PostgresLease:
    """``pg_try_advisory_lock`` held on a dedicated connection.

    Args:
        url: the SQLAlchemy database URL (``postgresql+psycopg://...``).
        idle_timeout_s: the server ends the lease session after this long without
            a ping (PostgreSQL 14+), so a frozen or unreachable leader loses the
            lock; keep it several times the caller's check interval.
        key: the advisory-lock key (tests may use their own).
    """

    def __init__(self, url: str, *, idle_timeout_s: float = 30.0, key: int | None = None) -> None:
        self.key = lock_key() if key is None else key
        self.idle_timeout_s = idle_timeout_s
        self.description = f"postgres advisory lock {self.key}"
        # NullPool: the lease connection is opened and closed by us alone, never
        # recycled by a pool. The libpq keepalives notice a dead server or
        # network within ~15 s even when no ping is in flight.
        self._engine = create_engine(
            url,
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
            connect_args={
                "connect_timeout": 5,
                "keepalives": 1,
                "keepalives_idle": 5,
                "keepalives_interval": 2,
                "keepalives_count": 3,
                "tcp_user_timeout": 10_000,  # ms: unacknowledged writes give up after this
                "application_name": "forecaster-scheduler-lease",
            },
        )
        self._conn: Connection | None = None
        self._unreachable = False

    def try_acquire(self) -> bool:
        """Take the advisory lock if no other session holds it.

        A database that cannot be reached counts as 'not acquired' (logged once
        per outage), so followers keep polling through a restart of the server.
        """
        if self._conn is not None:
            return self.check()
        try:
            conn = self._engine.connect()
        except SQLAlchemyError as exc:
            if not self._unreachable:
                log_event("scheduler.lease_unreachable", error=str(exc).splitlines()[0])
                self._unreachable = True
            return False
        self._unreachable = False
        try:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar())
            if got:
                self._configure_session(conn)
        except SQLAlchemyError as exc:
            log_event("scheduler.lease_error", error=str(exc).splitlines()[0])
            conn.close()
            return False
        if not got:
            conn.close()  # followers hold no connection while they wait
            return False
        self._conn = conn
        return True

    def _configure_session(self, conn: Connection) -> None:
        # Server-side keepalives: the server notices a vanished leader host in
        # ~20 s instead of the kernel default of two hours.
        conn.execute(text("SET tcp_keepalives_idle = 10"))
        conn.execute(text("SET tcp_keepalives_interval = 5"))
        conn.execute(text("SET tcp_keepalives_count = 2"))
        version = int(conn.execute(text("SHOW server_version_num")).scalar() or 0)
        if version >= 140000:
            ms = int(self.idle_timeout_s * 1000)
            conn.execute(text(f"SET idle_session_timeout = {ms}"))

    def check(self) -> bool:
        """Ping the lease connection; on any failure drop it and answer False."""
        if self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1")).scalar()
        except SQLAlchemyError as exc:
            log_event("scheduler.lease_lost", reason=str(exc).splitlines()[0])
            self._drop()
            return False
        return True

    def release(self) -> None:
        """Unlock and close the lease connection (closing alone would also free it)."""
        if self._conn is None:
            return
        with contextlib.suppress(SQLAlchemyError):  # a session already gone took the lock with it
            self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
        self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                conn.close()
        self._engine.dispose()


class FileLease:
    """An exclusive ``flock`` on a lock file (SQLite: next to the database file)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.description = f"file lock {self.path}"
        self._file: IO[str] | None = None

    def try_acquire(self) -> bool:
        """Take the lock if no other process holds it; write our pid into the file.

        Raises:
            StorageUnavailable: the lock file cannot be opened (naming it).
        """
        import fcntl  # POSIX only, and only needed here

        if self._file is not None:
            return self.check()
        try:
            f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open while leading
        except OSError as exc:
            raise StorageUnavailable(
                f"cannot open the scheduler lock file {self.path} ({exc.strerror}): "
                "the directory of the SQLite database must be writable"
            ) from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return False
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f
        return True

    def check(self) -> bool:
        """True while we hold the lock on the file that is still at ``path``.

        Someone deleting or replacing the lock file would let a second process
        lock the new one, so that counts as losing the lease.
        """
        if self._file is None:
            return False
        try:
            same = os.fstat(self._file.fileno()).st_ino == os.stat(self.path).st_ino
        except OSError:
            same = False
        if not same:
            log_event("scheduler.lease_lost", reason=f"lock file {self.path} was removed or replaced")
            self.release()
        return same

    def release(self) -> None:
        """Unlock and close the lock file (the file itself stays)."""
        import fcntl

        f, self._file = self._file, None
        if f is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            finally:
                f.close()


class ProcessLease:
    """For an in-memory database: nobody else can see it, so this process leads."""

    description = "in-memory database (no lock needed)"

    def __init__(self) -> None:
        self._held = False

    def try_acquire(self) -> bool:
        """Always succeeds."""
        self._held = True
        return True

    def check(self) -> bool:
        """True until released."""
        return self._held

    def release(self) -> None:
        """Mark the lease as not held."""
        self._held = False


def lock_path_for(url: str) -> Path | None:
    """``<database file>.scheduler.lock`` for a SQLite URL; None for an in-memory one."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database).with_name(Path(database).name + ".scheduler.lock")


def make_lease(url: str, *, idle_timeout_s: float = 30.0) -> Lease:
    """The lease that fits the database behind ``url``."""
    if url.startswith("postgresql"):
        return PostgresLease(url, idle_timeout_s=idle_timeout_s)
    path = lock_path_for(url)
    return ProcessLease() if path is None else FileLease(path)
