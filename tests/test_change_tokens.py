"""Behind pgbouncer in transaction mode: no server-side prepared statements, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from forecaster.store import migrate
from forecaster.store.change_tokens import PostgresProbe
from forecaster.store.tables import make_engine


@pytest.mark.postgres
def test_the_postgres_probe_prepares_nothing_so_pgbouncer_transaction_mode_works(
        pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    engine = create_engine(pg_url)
    migrate.upgrade(engine)
    engine.dispose()
    caplog.set_level(logging.INFO, logger="forecaster")

    async def probe_often() -> tuple[int, bool]:
        probe = PostgresProbe(make_url(pg_url))
        try:
            for _ in range(8):  # past psycopg's prepare_threshold (5)
                assert await probe.token("push:nope") is None  # no such series: no token
            conn = probe._conn  # the probe's own session: prepared statements live per session
            cursor = await conn.execute("SELECT count(*) FROM pg_prepared_statements")
            row = await cursor.fetchone()
            # pgbouncer in transaction mode may hand the next statement to a server session without
            # them; inside DO, psycopg does not see the DEALLOCATE and keeps believing its cache
            await conn.execute("DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$")
            await probe.token("push:nope")
            return row[0], probe._conn is conn
        finally:
            await probe.aclose()

    prepared, kept_its_connection = asyncio.run(probe_often())
    assert prepared == 0
    assert not [r.getMessage() for r in caplog.records if "change_probe" in r.getMessage()]
    assert kept_its_connection


@pytest.mark.postgres
def test_the_engine_prepares_nothing_either(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            for _ in range(8):  # past psycopg's prepare_threshold (5)
                conn.execute(text("SELECT count(*) FROM pg_class WHERE relname = :n"), {"n": "series"})
            prepared = conn.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar()
    finally:
        engine.dispose()
    assert prepared == 0
