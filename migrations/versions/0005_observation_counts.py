"""observation_counts: how many observations each series stores, kept by triggers on observations

The public pages (/, /metrics, /v1/series) read the count from here instead of counting a
series' observations on every request. Every insert and delete of an observation moves it,
whoever writes (push, ingest, delete, a bulk load in SQL): on PostgreSQL one statement-level
trigger per statement over its transition table (an upsert's conflicting rows are updates,
not counted), on SQLite a row trigger. A table of its own rather than a column of series:
each inserted observation's foreign-key check locks the series row, and updating that row
under a bulk insert makes every later check walk its new versions. Rows already stored are
counted here. A later revision that rebuilds the observations table on SQLite (batch "move
and copy") drops these triggers with it and must create them again.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

PG_UP = [
    """CREATE FUNCTION observations_counted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO observation_counts AS c (series_id, observations)
            SELECT series_id, count(*) FROM changed_rows GROUP BY series_id
            ON CONFLICT (series_id) DO UPDATE SET observations = c.observations + EXCLUDED.observations;
        ELSE
            UPDATE observation_counts c SET observations = c.observations - d.n
            FROM (SELECT series_id, count(*) AS n FROM changed_rows GROUP BY series_id) d
            WHERE c.series_id = d.series_id;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER observations_count_insert AFTER INSERT ON observations
    REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION observations_counted()""",
    """CREATE TRIGGER observations_count_delete AFTER DELETE ON observations
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION observations_counted()""",
]
PG_DOWN = [
    "DROP TRIGGER IF EXISTS observations_count_delete ON observations",
    "DROP TRIGGER IF EXISTS observations_count_insert ON observations",
    "DROP FUNCTION IF EXISTS observations_counted()",
]
SQLITE_UP = [
    """CREATE TRIGGER observations_count_insert AFTER INSERT ON observations FOR EACH ROW BEGIN
    INSERT OR IGNORE INTO observation_counts (series_id, observations) VALUES (NEW.series_id, 0);
    UPDATE observation_counts SET observations = observations + 1 WHERE series_id = NEW.series_id; END""",
    """CREATE TRIGGER observations_count_delete AFTER DELETE ON observations FOR EACH ROW BEGIN
    UPDATE observation_counts SET observations = observations - 1 WHERE series_id = OLD.series_id; END""",
]
SQLITE_DOWN = ["DROP TRIGGER IF EXISTS observations_count_delete", "DROP TRIGGER IF EXISTS observations_count_insert"]


def upgrade() -> None:
    op.create_table(
        'observation_counts',
        sa.Column('series_id', sa.Integer(), nullable=False),
        sa.Column('observations', sa.BigInteger(), server_default='0', nullable=False),
        sa.ForeignKeyConstraint(['series_id'], ['series.id'], name=op.f('fk_observation_counts_series_id_series'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('series_id', name=op.f('pk_observation_counts')),
    )
    op.execute("INSERT INTO observation_counts (series_id, observations) "
               "SELECT series_id, count(*) FROM observations GROUP BY series_id")
    for statement in PG_UP if op.get_bind().dialect.name == "postgresql" else SQLITE_UP:
        op.execute(statement)


def downgrade() -> None:
    for statement in PG_DOWN if op.get_bind().dialect.name == "postgresql" else SQLITE_DOWN:
        op.execute(statement)
    op.drop_table('observation_counts')
