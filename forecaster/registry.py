"""The model registry: versions with their metrics and lineage, and the champion alias.

Weights are safetensors bytes and everything else JSON; nothing stored is ever
unpickled. Promotion and rollback move the alias and the statuses together in
one transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from forecaster.db import Alias, ModelVersion, Series, utcnow
from forecaster.errors import Conflict, ModelNotFound, SeriesNotFound

CHAMPION = "champion"


@dataclass(frozen=True)
class VersionView:
    """A model version as users see it (no weights)."""

    id: int
    series_key: str
    version: int
    created_at: dt.datetime
    status: str
    status_reason: str | None
    is_champion: bool
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    weights_bytes: int


@dataclass(frozen=True)
class Champion:
    series_key: str
    version: int
    model_version_id: int
    previous_version: int | None


def _series(session: Session, key: str, *, lock: bool = False) -> Series:
    q = select(Series).where(Series.key == key)
    if lock and session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    row = session.scalar(q)
    if row is None:
        raise SeriesNotFound(f"no series {key!r}")
    return row


def _version(session: Session, series: Series, version: int) -> ModelVersion:
    mv = session.scalar(
        select(ModelVersion).where(ModelVersion.series_id == series.id, ModelVersion.version == version)
    )
    if mv is None:
        known = session.scalars(select(ModelVersion.version).where(ModelVersion.series_id == series.id)
                                .order_by(ModelVersion.version)).all()
        raise ModelNotFound(
            f"{series.key} has no version {version} (versions: {', '.join(map(str, known)) or 'none yet'})"
        )
    return mv


def champion_of(session: Session, series_id: int) -> ModelVersion | None:
    return session.scalar(
        select(ModelVersion)
        .join(Alias, Alias.model_version_id == ModelVersion.id)
        .where(Alias.series_id == series_id, Alias.name == CHAMPION)
    )


def add_version(
    session: Session,
    series: Series,
    *,
    hyperparameters: dict[str, Any],
    scaler: dict[str, Any],
    weights: bytes,
    metrics: dict[str, Any],
    lineage: dict[str, Any],
    status: str,
    status_reason: str,
) -> ModelVersion:
    """Store a new version numbered after the series' last one (inside the caller's transaction).

    The (series, version) unique constraint makes a concurrent writer fail
    rather than share a number; callers retry in a fresh transaction.
    """
    last = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.series_id == series.id))
    mv = ModelVersion(
        series_id=series.id, version=(last or 0) + 1, hyperparameters=hyperparameters, scaler=scaler,
        weights=weights, metrics=metrics, lineage=lineage, status=status, status_reason=status_reason,
    )
    session.add(mv)
    session.flush()
    return mv


def _move_alias(session: Session, series: Series, mv: ModelVersion) -> int | None:
    """Point the champion alias at ``mv``; the old champion becomes ``retired``."""
    old = champion_of(session, series.id)
    if old is not None and old.id != mv.id:
        old.status = "retired"
        old.status_reason = f"replaced by v{mv.version} at {utcnow():%Y-%m-%d %H:%M} UTC"
    # Any stray champion status (e.g. a concurrent promotion that lost) is cleared too.
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.series_id == series.id, ModelVersion.status == CHAMPION, ModelVersion.id != mv.id)
        .values(status="retired")
        .execution_options(synchronize_session=False)
    )
    dialect = session.get_bind().dialect.name
    insert = (postgresql if dialect == "postgresql" else sqlite).insert(Alias)
    now = utcnow()
    session.execute(
        insert.values(series_id=series.id, name=CHAMPION, model_version_id=mv.id, updated_at=now)
        .on_conflict_do_update(index_elements=["series_id", "name"], set_={"model_version_id": mv.id, "updated_at": now})
    )
    mv.status = CHAMPION
    return old.version if old is not None and old.id != mv.id else None


def make_champion(session: Session, series: Series, mv: ModelVersion, reason: str) -> Champion:
    """Promote ``mv`` (inside the caller's transaction) after the gate passed it."""
    previous = _move_alias(session, series, mv)
    mv.status_reason = reason
    return Champion(series.key, mv.version, mv.id, previous)


def promote(session: Session, *, series_key: str, version: int) -> Champion:
    """Point the series' champion alias at ``version`` (a user's decision, not the gate's).

    Runs inside the caller's transaction: the alias and the statuses move
    together, or nothing changes.

    Raises:
        SeriesNotFound / ModelNotFound: naming the key and version.
    """
    series = _series(session, series_key, lock=True)
    mv = _version(session, series, version)
    previous = _move_alias(session, series, mv)
    mv.status_reason = f"promoted by hand at {utcnow():%Y-%m-%d %H:%M} UTC"
    session.flush()
    return Champion(series_key, version, mv.id, previous)


def rollback(session: Session, *, series_key: str) -> Champion:
    """Give the champion alias back to the version that held it before.

    The current champion is marked ``rejected`` (rolled back), so a second
    rollback goes one further back.

    Raises:
        SeriesNotFound: no such series.
        Conflict: no champion, or no earlier champion to return to.
    """
    series = _series(session, series_key, lock=True)
    current = champion_of(session, series.id)
    if current is None:
        raise Conflict(f"{series_key} has no champion to roll back")
    previous = session.scalar(
        select(ModelVersion)
        .where(ModelVersion.series_id == series.id, ModelVersion.status == "retired", ModelVersion.id != current.id)
        .order_by(ModelVersion.version.desc())
        .limit(1)
    )
    if previous is None:
        raise Conflict(f"{series_key} v{current.version} has no earlier champion to roll back to")
    _move_alias(session, series, previous)
    current.status = "rejected"
    current.status_reason = f"rolled back to v{previous.version} at {utcnow():%Y-%m-%d %H:%M} UTC"
    previous.status_reason = f"restored by rollback from v{current.version}"
    session.flush()
    return Champion(series_key, previous.version, previous.id, current.version)


def _view(series: Series, mv: ModelVersion, champion_id: int | None) -> VersionView:
    return VersionView(
        id=mv.id, series_key=series.key, version=mv.version, created_at=mv.created_at, status=mv.status,
        status_reason=mv.status_reason, is_champion=mv.id == champion_id, hyperparameters=mv.hyperparameters,
        metrics=mv.metrics, lineage=mv.lineage, weights_bytes=len(mv.weights),
    )


def list_versions(session: Session, *, series_key: str) -> list[VersionView]:
    """Every version of a series, newest first.

    Raises:
        SeriesNotFound: naming the key.
    """
    series = _series(session, series_key)
    champ = champion_of(session, series.id)
    rows = session.scalars(
        select(ModelVersion).where(ModelVersion.series_id == series.id).order_by(ModelVersion.version.desc())
    )
    return [_view(series, mv, champ.id if champ else None) for mv in rows]


def get_version(session: Session, *, model_version_id: int) -> VersionView:
    """One version by its global id.

    Raises:
        ModelNotFound: naming the id.
    """
    mv = session.get(ModelVersion, model_version_id)
    if mv is None:
        raise ModelNotFound(f"no model version with id {model_version_id}")
    series = session.get(Series, mv.series_id)
    assert series is not None
    champ = champion_of(session, series.id)
    return _view(series, mv, champ.id if champ else None)


def load_artifact(session: Session, *, model_version_id: int) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """(hyperparameters, scaler, safetensors weights) of a version, for prediction.

    Raises:
        ModelNotFound: naming the id.
    """
    mv = session.get(ModelVersion, model_version_id)
    if mv is None:
        raise ModelNotFound(f"no model version with id {model_version_id}")
    return mv.hyperparameters, mv.scaler, mv.weights
