"""Whether this process can serve: the database answers and its schema is at the code's revision."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from forecaster.store import migrate

_head_revision = functools.cache(migrate.head_revision)  # the code's head never changes while running


@dataclass(frozen=True)
class SchemaState:
    database: str  # the dialect: sqlite, postgresql
    current: str | None  # None: an empty database
    head: str

    @property
    def ready(self) -> bool:
        return self.current == self.head


def schema_state(engine: Engine) -> SchemaState:
    """The database's schema revision beside the code's (connection errors propagate)."""
    return SchemaState(engine.dialect.name, migrate.current_revision(engine), _head_revision())
