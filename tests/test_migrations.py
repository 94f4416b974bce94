from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from forecaster.store import migrate
from forecaster.store.tables import make_engine, metadata

TABLES = {"series", "observations", "ingest_runs", "job_runs", "model_versions", "aliases", "forecasts"}


def test_upgrade_downgrade_upgrade_round_trips(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        assert migrate.at_head(engine)
        assert TABLES <= set(sa.inspect(engine).get_table_names())
        migrate.downgrade(engine, "base")
        assert migrate.current_revision(engine) is None
        assert not TABLES & set(sa.inspect(engine).get_table_names())
        migrate.upgrade(engine)
        assert migrate.at_head(engine)
        assert TABLES <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_revisions_match_the_models(engine: sa.Engine) -> None:
    """A model change without a revision would make this diff non-empty."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": False})
        diff = compare_metadata(ctx, metadata)
    assert diff == []
