"""Helpers for API tests: the real app under uvicorn on loopback, and a trained database to copy.

    with LiveServer(create_app(settings)) as server:      # uvicorn in a thread, 127.0.0.1:<free port>
        httpx.get(f"{server.url}/healthz")

    build_template(path)            # a SQLite file with ingested, trained series (done once per session)
    copy_database(template, url)    # that data into a fresh, migrated SQLite or PostgreSQL database

Fixtures (import them into a test module): ``api_template`` (session), ``api_db``
(the template's data in the ``db_url`` database: SQLite and PostgreSQL),
``api_settings`` and ``api`` (a running server with an httpx client), and
``sqlite_api_db`` / ``sqlite_api`` for tests that need only one backend.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import func, select, text

from forecaster.store import migrate
from forecaster.store import registry
from forecaster.config.settings import Settings
from forecaster.store.tables import make_engine, make_sessionmaker, metadata, write_session
from forecaster.usecases.forecasting import refresh_after_ingest, refresh_forecast
from forecaster.store.series import series_by_key
from forecaster.usecases.ingest import ingest_series
from forecaster.usecases.retrain import retrain_series

ADMIN_KEY = "test-admin-key"
TRAINED = "sine:trained"  # two versions, v2 the champion
BASELINE = "sine:baseline"  # observations, no model: served by a baseline
PUSHED = "push:meter"  # a push series with no data yet
SPX = "yfinance:^GSPC:close"  # a key with ^ and : (declared as push so no network is needed)
TINY_MODEL = {"epochs": 10, "hidden_size": 16, "window": 24}


def series_config() -> list[dict[str, Any]]:
    """The series every API test's settings declare."""
    sine = {"period": 24, "noise": 0.3, "length": 600, "seed": 1}
    return [
        {"key": TRAINED, "source": "sine", "frequency": "1h", "params": sine, "model": TINY_MODEL},
        {"key": BASELINE, "source": "sine", "frequency": "1h", "params": {**sine, "length": 200, "seed": 2},
         "model": TINY_MODEL},
        {"key": PUSHED, "source": "push", "frequency": "1h", "unit": "kWh"},
        {"key": SPX, "source": "push", "frequency": "1B", "unit": "USD"},
    ]


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for the test series on ``database_url`` with one admin key."""
    data: dict[str, Any] = {"database_url": database_url, "api_keys": [ADMIN_KEY], "series": series_config(),
                            "snapshot_fallback": False}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Settings(**data)


def build_template(path: Path) -> Path:
    """Migrate a SQLite file, ingest the sine series and train ``TRAINED`` twice (v2 champion)."""
    url = f"sqlite:///{path}"
    settings = make_settings(url)
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        sm = make_sessionmaker(engine)
        for spec in settings.series[:2]:
            outcome = ingest_series(sm, settings, spec, after_write=refresh_after_ingest)
            assert outcome.status == "ok", outcome
        spec = settings.series[0]
        for _ in range(2):
            report = retrain_series(sm, spec)
            assert report.version is not None, report
        with write_session(sm) as session:  # v2 serves, whatever the gate thought of it
            registry.promote(session, series_key=TRAINED, version=2, force=True)
            refresh_forecast(session, series_by_key(session, TRAINED))
    finally:
        engine.dispose()
    return path


def copy_database(template: Path, url: str) -> None:
    """Give ``url`` (an empty database) the template's schema and rows.

    SQLite: the file is copied. PostgreSQL: migrated with the real revisions,
    then every table's rows copied in dependency order, and the id sequences
    moved past the copied ids.
    """
    if url.startswith("sqlite"):
        shutil.copyfile(template, url.removeprefix("sqlite:///"))
        return
    source, target = make_engine(f"sqlite:///{template}"), make_engine(url)
    try:
        migrate.upgrade(target)
        with source.connect() as src, target.begin() as dst:
            for table in metadata.sorted_tables:
                if table.name == "observation_counts":
                    continue  # kept by triggers: the copied observations count themselves in
                rows = [dict(r._mapping) for r in src.execute(select(table))]
                if rows:
                    dst.execute(table.insert(), rows)
            for table in metadata.sorted_tables:
                pk = list(table.primary_key.columns)
                if len(pk) == 1 and pk[0].autoincrement in (True, "auto") and pk[0].type.python_type is int:
                    top = dst.scalar(select(func.max(pk[0])))
                    if top:
                        seq = f"pg_get_serial_sequence('{table.name}', '{pk[0].name}')"
                        dst.execute(text(f"SELECT setval({seq}, {top})"))
    finally:
        source.dispose()
        target.dispose()


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class LiveServer:
    """uvicorn serving ``app`` in a daemon thread on a socket bound to 127.0.0.1:0."""

    def __init__(self, app: FastAPI | str, **config: Any) -> None:
        self.sock = free_socket()
        host, port = self.sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self.config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", **config)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="uvicorn-test", daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn stopped before it started (see the log above)")
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start within 15 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
        assert not self.thread.is_alive(), "uvicorn did not stop within 30 s"

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def wait_for(predicate: Any, *, timeout_s: float = 30, every_s: float = 0.05) -> Any:
    """Poll ``predicate()`` until it returns something truthy; return that (or fail after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout_s} s: {predicate}")
        time.sleep(every_s)


@dataclass
class Api:
    """A running API: its base URL, an httpx client on it, its app and settings."""

    url: str
    client: httpx.Client
    app: FastAPI
    settings: Settings
    admin: dict[str, str]


@contextmanager
def running_api(settings: Settings, app: FastAPI | None = None) -> Iterator[Api]:
    """Serve ``create_app(settings)`` (or ``app``) on loopback for the ``with`` block."""
    from api.app import create_app

    app = app or create_app(settings)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield Api(server.url, client, app, settings, {"X-API-Key": ADMIN_KEY})


@pytest.fixture(scope="session")
def api_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained template database, built once per test session (whichever module asks first)."""
    path = tmp_path_factory.getbasetemp() / "api-template.db"
    if not path.exists():
        partial = path.with_name("api-template.partial.db")
        build_template(partial)
        partial.rename(path)
    return path


@pytest.fixture
def api_db(db_url: str, api_template: Path) -> str:
    """A fresh database (SQLite, then PostgreSQL) holding the template's series, versions and forecasts."""
    copy_database(api_template, db_url)
    return db_url


@pytest.fixture
def sqlite_api_db(tmp_path: Path, api_template: Path) -> str:
    """The template's data in a SQLite file, for tests whose outcome cannot depend on the backend
    (request validation, auth, error bodies): a PostgreSQL database costs ~1.5 s to create and drop."""
    url = f"sqlite:///{tmp_path / 'api.db'}"
    copy_database(api_template, url)
    return url


@pytest.fixture
def api_settings(api_db: str) -> Settings:
    return make_settings(api_db)


@pytest.fixture
def api(api_settings: Settings) -> Iterator[Api]:
    """The real app under uvicorn on the test database (SQLite, then PostgreSQL), with a client."""
    with running_api(api_settings) as running:
        yield running


@pytest.fixture
def sqlite_api(sqlite_api_db: str) -> Iterator[Api]:
    """The real app under uvicorn on a SQLite copy of the template, with a client."""
    with running_api(make_settings(sqlite_api_db)) as running:
        yield running
