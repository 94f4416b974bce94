"""Database schema (SQLAlchemy 2 typed tables), engines and sessions.

The schema changes only through Alembic revisions in ``migrations/``; this
module's ``metadata`` is what those revisions are checked against.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC in Python on every backend.

    PostgreSQL stores ``timestamptz``; SQLite stores naive UTC text (so that
    string comparison orders correctly). Naive datetimes are refused on the way in.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r} refused: timestamps must be timezone-aware")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def aware(aggregate: ColumnElement[Any]) -> ColumnElement[dt.datetime]:
    """An aggregate of a timestamp column (``func.max(Observation.ts)``) read back through
    ``UTCDateTime``, as the column itself is: aware UTC on every backend, so no caller repairs it."""
    return type_coerce(aggregate, UTCDateTime())


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSONType}


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    source: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    frequency: Mapped[str] = mapped_column(String(16))
    unit: Mapped[str | None] = mapped_column(String(32))
    calendar: Mapped[str | None] = mapped_column(String(16))  # exchange of a 1B series (XNYS), else None
    horizon: Mapped[int | None] = mapped_column(Integer)  # steps per forecast path (config); None: by frequency
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Observation(Base):
    __tablename__ = "observations"

    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), primary_key=True)
    ts: Mapped[dt.datetime] = mapped_column(primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    ingested_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ObservationCount(Base):
    """How many observations a series stores, kept by database triggers on every insert and delete
    of an observation (migrations/versions/0005): read only, so no page counts a series' rows.
    A table of its own, not a column of ``series``: the foreign-key check of each inserted
    observation locks the series row, which must not change under a bulk insert."""

    __tablename__ = "observation_counts"

    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), primary_key=True)
    observations: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class IngestRun(Base):
    __tablename__ = "ingest_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int | None] = mapped_column(ForeignKey("series.id", ondelete="SET NULL"), index=True)
    series_key: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]
    status: Mapped[str] = mapped_column(String(16), default="running")  # running/ok/failed/snapshot/unavailable
    rows_new: Mapped[int] = mapped_column(Integer, default=0)
    rows_updated: Mapped[int] = mapped_column(Integer, default=0)
    rows_unchanged: Mapped[int] = mapped_column(Integer, default=0)
    rows_rejected: Mapped[int] = mapped_column(Integer, default=0)
    rows_deleted: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # an admin's repair
    error: Mapped[str | None] = mapped_column(Text)
    job_run_id: Mapped[int | None] = mapped_column(ForeignKey("job_runs.id", ondelete="SET NULL"))


class JobRun(Base):
    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # ingest / train
    trigger: Mapped[str] = mapped_column(String(16), default="manual")  # cron / manual / api
    series_keys: Mapped[list[str] | None] = mapped_column(JSONType)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued/running/ok/partial/failed/interrupted
    series_total: Mapped[int] = mapped_column(Integer, default=0)
    series_done: Mapped[int] = mapped_column(Integer, default=0)
    series_failed: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    options: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # {"cold": true}: retrain from scratch


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("series_id", "version", name="uq_model_versions_series_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    hyperparameters: Mapped[dict[str, Any]]
    scaler: Mapped[dict[str, Any]]
    weights: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)  # read only when a model is loaded
    metrics: Mapped[dict[str, Any]]
    lineage: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="candidate")  # candidate/rejected/champion/retired
    status_reason: Mapped[str | None] = mapped_column(Text)


class Alias(Base):
    __tablename__ = "aliases"

    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AliasHistory(Base):
    """What served a series, in order: every move of the champion alias (a model
    version, or the baseline when ``model_version_id`` is null). Rollback undoes the
    latest entry not yet undone and serves what the one before it served."""

    __tablename__ = "alias_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(32), default="champion")
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(16))  # gate / promote / force / baseline / migrated
    reason: Mapped[str | None] = mapped_column(Text)
    made_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    undone_at: Mapped[dt.datetime | None]  # set by the rollback that undid this move


class Forecast(Base):
    __tablename__ = "forecasts"
    __table_args__ = (Index("ix_forecasts_series_target", "series_id", "target_ts"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"))
    method: Mapped[str] = mapped_column(String(16), default="model")  # model / naive / seasonal_naive
    made_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    target_ts: Mapped[dt.datetime]
    value: Mapped[float] = mapped_column(Float)
    lower: Mapped[float | None] = mapped_column(Float)
    upper: Mapped[float | None] = mapped_column(Float)
    level: Mapped[float | None] = mapped_column(Float)
    actual: Mapped[float | None] = mapped_column(Float)
    error: Mapped[float | None] = mapped_column(Float)
    # One row per step of a path (migration 0006): steps after the origin, 1..h; rows from before paths are step 1.
    step: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    origin_ts: Mapped[dt.datetime | None]  # the last observation the path was made from (None: unknown, old rows)


metadata = Base.metadata


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` with the settings this service relies on.

    SQLite gets foreign keys on, WAL and a busy timeout so the API and the
    scheduler can share one file; PostgreSQL gets pre-ping so a restarted
    server is noticed instead of failing the next request.
    """
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
            # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin
            # (the recipe from SQLAlchemy's pysqlite notes), so BEGIN IMMEDIATE works.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            if ":memory:" not in url and url not in ("sqlite://", "sqlite:///"):
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # A write transaction takes the write lock up front: two writers that
            # read first and write later would otherwise fail with "database is locked".
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("sqlite_immediate") else "BEGIN")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    # prepare_threshold=None: psycopg prepares no statement on the server, where pgbouncer in
    # transaction mode would lose it between transactions.
    kwargs.setdefault("connect_args", {"connect_timeout": 5, "prepare_threshold": None})
    return create_engine(url, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def write_session(sm: sessionmaker[Session]) -> Iterator[Session]:
    """A session in one write transaction: committed on success, rolled back on error.

    On SQLite the transaction starts with BEGIN IMMEDIATE so concurrent writers
    queue (busy timeout) instead of failing half-way.
    """
    with sm() as session:
        if session.get_bind().dialect.name == "sqlite":
            session.connection(execution_options={"sqlite_immediate": True})
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
