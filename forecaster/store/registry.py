"""The model registry: versions with their metrics and lineage, and the champion alias.

Weights are safetensors bytes and everything else JSON; nothing stored is ever
unpickled. Promotion and rollback move the alias and the statuses together in
one transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, load_only
from sqlalchemy.orm.interfaces import ORMOption

from forecaster.errors import Conflict, ModelNotFound
from forecaster.store.series import series_by_key
from forecaster.store.tables import Alias, AliasHistory, ModelVersion, Series, utcnow

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
    """What serves a series after a move: model version ``version``, or its baseline
    (``version`` None). ``previous_version`` None means the baseline served before.
    ``changed`` is false when it already served; ``gate_passed``/``gate_reason`` say what
    the gate made of the version (None for the baseline); ``forced``: served despite it."""

    series_key: str
    version: int | None
    model_version_id: int | None
    previous_version: int | None
    changed: bool = True
    gate_passed: bool | None = None
    gate_reason: str | None = None
    forced: bool = False

    @property
    def baseline(self) -> bool:
        return self.version is None


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


def newest_versions(series_ids: Collection[int]) -> Select[ModelVersion]:
    """The newest version (highest number) of each of these series, as one query."""
    newest = (select(ModelVersion.series_id, func.max(ModelVersion.version).label("v"))
              .where(ModelVersion.series_id.in_(list(series_ids))).group_by(ModelVersion.series_id).subquery())
    return select(ModelVersion).join(
        newest, (newest.c.series_id == ModelVersion.series_id) & (newest.c.v == ModelVersion.version))


def latest_version(session: Session, series_id: int, *options: ORMOption) -> ModelVersion | None:
    """The series' newest version (None before any training); ``options`` such as ``load_only``."""
    return session.scalar(newest_versions([series_id]).options(*options))


def versions_by_id(session: Session, ids: Collection[int], *options: ORMOption) -> list[ModelVersion]:
    """The versions with these ids (any order); ``options`` such as ``load_only``."""
    return list(session.scalars(select(ModelVersion).where(ModelVersion.id.in_(list(ids))).options(*options)))


def version_numbers(session: Session, series_ids: Collection[int]) -> dict[int, int]:
    """Model version id -> its number, for every version of these series."""
    return {i: v for i, v in session.execute(
        select(ModelVersion.id, ModelVersion.version).where(ModelVersion.series_id.in_(list(series_ids))))}


class ChampionRef(NamedTuple):
    """Which version serves a series, and when it was trained."""

    model_version_id: int
    version: int
    created_at: dt.datetime


def champions(session: Session, series_ids: Collection[int] | None = None) -> dict[int, ChampionRef]:
    """Series id -> its champion (series a baseline serves are absent), in one query."""
    q = (select(Alias.series_id, ModelVersion.id, ModelVersion.version, ModelVersion.created_at)
         .join(ModelVersion, ModelVersion.id == Alias.model_version_id).where(Alias.name == CHAMPION))
    if series_ids is not None:
        q = q.where(Alias.series_id.in_(list(series_ids)))
    return {sid: ChampionRef(mv_id, version, at) for sid, mv_id, version, at in session.execute(q)}


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
    last = latest_version(session, series.id, load_only(ModelVersion.version))
    mv = ModelVersion(
        series_id=series.id, version=(last.version if last is not None else 0) + 1,
        hyperparameters=hyperparameters, scaler=scaler,
        weights=weights, metrics=metrics, lineage=lineage, status=status, status_reason=status_reason,
    )
    session.add(mv)
    session.flush()
    return mv


def gate_verdict(mv: ModelVersion) -> tuple[bool, str]:
    """What the gate says of ``mv`` from its stored holdout metrics: (passed, reason naming the numbers)."""
    from forecaster.modelling.gate import gate  # numpy only: torch is never imported by this

    try:
        return gate(mv.metrics)
    except (KeyError, TypeError, ValueError):
        return True, "no holdout metrics were recorded for this version: the gate had nothing to judge"


def _record(session: Session, series: Series, mv: ModelVersion | None, action: str, reason: str) -> None:
    session.add(AliasHistory(series_id=series.id, name=CHAMPION, model_version_id=mv.id if mv else None,
                             action=action, reason=reason, made_at=utcnow()))


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
        .on_conflict_do_update(index_elements=["series_id", "name"],
                               set_={"model_version_id": mv.id, "updated_at": now})
    )
    mv.status = CHAMPION
    return old.version if old is not None and old.id != mv.id else None


def _clear_alias(session: Session, series: Series, reason: str) -> ModelVersion | None:
    """Remove the champion alias (the baseline serves); the old champion becomes ``retired``."""
    old = champion_of(session, series.id)
    session.execute(delete(Alias).where(Alias.series_id == series.id, Alias.name == CHAMPION))
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.series_id == series.id, ModelVersion.status == CHAMPION)
        .values(status="retired", status_reason=reason)
        .execution_options(synchronize_session=False)
    )
    if old is not None:
        old.status, old.status_reason = "retired", reason
    return old


def make_champion(session: Session, series: Series, mv: ModelVersion, reason: str) -> Champion:
    """Promote ``mv`` (inside the caller's transaction) after the gate passed it."""
    previous = _move_alias(session, series, mv)
    mv.status_reason = reason
    _record(session, series, mv, "gate", reason)
    return Champion(series.key, mv.version, mv.id, previous, gate_passed=True, gate_reason=reason)


def promote(session: Session, *, series_key: str, version: int, force: bool = False) -> Champion:
    """Point the series' champion alias at ``version`` (a user's decision, not the gate's).

    A version the gate rejected (its holdout MASE did not beat a baseline or the
    champion of its day) is served only with ``force``. Runs inside the caller's
    transaction: the alias, the statuses and the history move together, or nothing changes.

    Raises:
        SeriesNotFound / ModelNotFound: naming the key and version.
        Conflict: the gate rejected the version and ``force`` is false (the message says what the gate said).
    """
    series = series_by_key(session, series_key, lock=True)
    mv = _version(session, series, version)
    passed, verdict = gate_verdict(mv)
    old = champion_of(session, series.id)
    changed = old is None or old.id != mv.id
    if changed and not passed and not force:
        raise Conflict(f"{series_key} v{version} was rejected by the gate ({verdict}); "
                       "to serve it anyway, promote it with force (CLI --force, API \"force\": true)")
    _move_alias(session, series, mv)
    if changed:
        how = "forced past the gate" if not passed else "promoted by hand"
        mv.status_reason = f"{how} at {utcnow():%Y-%m-%d %H:%M} UTC"
        _record(session, series, mv, "promote" if passed else "force", verdict)
    session.flush()
    previous = version if not changed else (old.version if old is not None else None)
    return Champion(series_key, version, mv.id, previous, changed=changed, gate_passed=passed,
                    gate_reason=verdict, forced=changed and not passed)


def _active_history(session: Session, series: Series, *, before: int | None = None) -> AliasHistory | None:
    """The latest move of the champion alias that no rollback undid (before entry id ``before``)."""
    q = select(AliasHistory).where(AliasHistory.series_id == series.id, AliasHistory.name == CHAMPION,
                                   AliasHistory.undone_at.is_(None))
    if before is not None:
        q = q.where(AliasHistory.id < before)
    return session.scalar(q.order_by(AliasHistory.id.desc()).limit(1))


def serve_baseline(session: Session, *, series_key: str) -> Champion:
    """Serve the series' baseline (the better of naive and seasonal naive) from now on.

    The champion alias is removed and the old champion ``retired``; the move is
    recorded, so a rollback returns to that version. A later retrain whose version
    passes the gate becomes champion again. Runs inside the caller's transaction.

    Raises:
        SeriesNotFound: naming the key.
    """
    series = series_by_key(session, series_key, lock=True)
    old = _clear_alias(session, series, f"replaced by the baseline at {utcnow():%Y-%m-%d %H:%M} UTC")
    changed = old is not None
    if changed:
        _record(session, series, None, "baseline", "put back on its baseline by hand")
    session.flush()
    return Champion(series_key, None, None, old.version if old is not None else None, changed=changed)


def rollback(session: Session, *, series_key: str) -> Champion:
    """Serve again what served before the latest move of the champion alias: an earlier
    version, or the baseline.

    The latest move in the alias history is marked undone (so a second rollback
    goes one further back) and a version rolled back from is marked ``rejected``.
    Past the first recorded move the baseline serves, as it did before any model.

    Raises:
        SeriesNotFound: no such series.
        Conflict: the baseline serves and nothing earlier is recorded.
    """
    series = series_by_key(session, series_key, lock=True)
    current = champion_of(session, series.id)
    entry = _active_history(session, series)
    if entry is None and current is None:
        raise Conflict(f"{series_key} is served by its baseline and nothing served before it: "
                       "there is nothing to roll back to")
    now = utcnow()
    target: ModelVersion | None = None
    if entry is not None:
        entry.undone_at = now
        before = _active_history(session, series, before=entry.id)
        if before is not None and before.model_version_id is not None:
            target = session.get(ModelVersion, before.model_version_id)
    to = f"v{target.version}" if target is not None else "the baseline"
    if target is not None:
        _move_alias(session, series, target)
        source = f"v{current.version}" if current is not None else "the baseline"
        target.status_reason = f"restored by rollback from {source}"
    else:
        _clear_alias(session, series, f"rolled back to the baseline at {now:%Y-%m-%d %H:%M} UTC")
    if current is not None and (target is None or current.id != target.id):
        current.status = "rejected"
        current.status_reason = f"rolled back to {to} at {now:%Y-%m-%d %H:%M} UTC"
    session.flush()
    return Champion(series_key, target.version if target else None, target.id if target else None,
                    current.version if current else None)


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
    series = series_by_key(session, series_key)
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


@dataclass(frozen=True)
class Artifact:
    """What prediction needs of a version: its stored artifact, and whose it is."""

    hyperparameters: dict[str, Any]
    scaler: dict[str, Any]
    weights: bytes  # safetensors
    series_key: str
    frequency: str
    version: int

    def parts(self) -> tuple[dict[str, Any], dict[str, Any], bytes]:
        """(hyperparameters, scaler, weights), as ``Predictor.from_artifact`` takes them."""
        return self.hyperparameters, self.scaler, self.weights


def load_artifact(session: Session, *, model_version_id: int) -> Artifact:
    """The stored artifact of a version and its series, in one read.

    Raises:
        ModelNotFound: naming the id.
    """
    row = session.execute(
        select(ModelVersion.hyperparameters, ModelVersion.scaler, ModelVersion.weights, Series.key,
               Series.frequency, ModelVersion.version)
        .join(Series, Series.id == ModelVersion.series_id).where(ModelVersion.id == model_version_id)
    ).one_or_none()
    if row is None:
        raise ModelNotFound(f"no model version with id {model_version_id}")
    return Artifact(*row)
