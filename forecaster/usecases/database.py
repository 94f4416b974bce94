"""The database as the processes see it: open it, bring its schema to a revision, and say whether it can serve."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from forecaster.errors import StorageUnavailable
from forecaster.store import migrate
from forecaster.store.tables import make_engine, make_sessionmaker

_head_revision = functools.cache(migrate.head_revision)  # the code's head never changes while running


def open_database(url: str) -> tuple[Engine, sessionmaker[Session]]:
    """The engine and sessions of the database at ``url`` (nothing connects until first used)."""
    engine = make_engine(url)
    return engine, make_sessionmaker(engine)


@dataclass(frozen=True)
class SchemaState:
    database: str  # the dialect: sqlite, postgresql
    current: str | None  # None: an empty database
    head: str

    @property
    def ready(self) -> bool:
        return self.current == self.head

    def describe(self) -> str:
        return f"schema at {self.current or 'nothing'}, not {self.head}"


def schema_state(engine: Engine) -> SchemaState:
    """The database's schema revision beside the code's (connection errors propagate)."""
    return SchemaState(engine.dialect.name, migrate.current_revision(engine), _head_revision())


def require_head(engine: Engine, *, upgrade: bool = False) -> None:
    """Make sure the schema is at the code's head: upgrade it, or refuse.

    Raises:
        StorageUnavailable: the schema is elsewhere and ``upgrade`` is false.
    """
    if upgrade:
        migrate.upgrade(engine)
        return
    state = schema_state(engine)
    if not state.ready:
        raise StorageUnavailable(f"database {state.describe()}: run `forecaster migrate` first")


def move_schema(engine: Engine, revision: str = "head", *, down: bool = False) -> tuple[str | None, str | None]:
    """Upgrade (or downgrade) the schema to ``revision``; the revisions before and after."""
    before = migrate.current_revision(engine)
    (migrate.downgrade if down else migrate.upgrade)(engine, revision)
    return before, migrate.current_revision(engine)
