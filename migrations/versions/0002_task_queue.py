"""task queue: procrastinate's tables, functions and types (PostgreSQL only)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 13:30:00

The SQL is the ``procrastinate/sql/schema.sql`` that ships with the installed
procrastinate, applied inside a PostgreSQL schema of its own (``procrastinate``)
so that our tables and its never mix: the model-vs-revision check looks at the
default schema only, and a downgrade drops the whole schema. Connections that
talk to the queue (forecaster/usecases/queue.py, jobs/worker.py) put that schema on
their ``search_path``. On SQLite this revision does nothing: the embedded default
runs its tasks in process.
"""

from __future__ import annotations

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

SCHEMA = "procrastinate"  # forecaster.usecases.queue.QUEUE_SCHEMA (not imported: a revision stays as it was written)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    from procrastinate import schema

    sql = schema.SchemaManager.get_schema()
    previous = bind.exec_driver_sql("SHOW search_path").scalar()
    bind.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    bind.exec_driver_sql(f"SET LOCAL search_path TO {SCHEMA}")
    # schema.sql is many statements: run it as one simple query on the raw driver connection
    # (the same transaction), since a parametrised execute would refuse several commands.
    driver = bind.connection.driver_connection
    assert driver is not None
    driver.execute(sql)
    bind.exec_driver_sql("SELECT set_config('search_path', %(p)s, true)", {"p": previous})


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    bind.exec_driver_sql(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
