"""Model versions: read them, load one to predict with, and what an admin decides about what
serves a series: promote a version (with force past the gate), put the series back on its
baseline, roll back to what served before.

Each decision is one transaction: the champion alias, the version statuses, the alias
history and the stored forecast move together, or nothing changes. The views returned
(``VersionView``, ``Champion``) are the registry's, re-exported here for adapters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from forecaster.logs import log_event
from forecaster.store import registry
from forecaster.store.registry import Champion, VersionView
from forecaster.store.series import series_by_key
from forecaster.store.tables import write_session
from forecaster.usecases.forecasting import ForecastView, get_forecast, refresh_forecast

if TYPE_CHECKING:
    from forecaster.modelling.predictor import Predictor

__all__ = ["Champion", "LoadedModel", "ServingChange", "VersionView", "get_version", "list_versions", "load_model",
           "promote_version", "rollback", "serve_baseline"]


def list_versions(session: Session, *, series_key: str) -> list[VersionView]:
    """Every version of a series, newest first.

    Raises:
        SeriesNotFound: naming the key.
    """
    return registry.list_versions(session, series_key=series_key)


def get_version(session: Session, *, model_version_id: int) -> VersionView:
    """One version by its global id.

    Raises:
        ModelNotFound: naming the id.
    """
    return registry.get_version(session, model_version_id=model_version_id)


@dataclass(frozen=True)
class LoadedModel:
    """A version ready to predict with, and what a response says about it."""

    model_version_id: int
    series_key: str
    version: int
    frequency: str
    predictor: Predictor

    @property
    def window(self) -> int:
        return self.predictor.window


def load_model(session: Session, *, model_version_id: int) -> LoadedModel:
    """Load a version's stored artifact into a predictor (imports torch).

    Raises:
        ModelNotFound: naming the id.
    """
    artifact = registry.load_artifact(session, model_version_id=model_version_id)
    from forecaster.modelling.predictor import Predictor  # torch: only when a model is loaded

    predictor = Predictor.from_artifact(*artifact.parts())
    return LoadedModel(model_version_id, artifact.series_key, artifact.version, artifact.frequency, predictor)


@dataclass(frozen=True)
class ServingChange:
    """What serves after the move, and the forecast it now stores (None: no observations yet)."""

    champion: Champion
    forecast: ForecastView | None


def _finish(session: Session, champion: Champion, action: str) -> ServingChange:
    series = series_by_key(session, champion.series_key)
    stored = refresh_forecast(session, series)
    forecast = get_forecast(session, series_key=champion.series_key) if stored is not None else None
    log_event(f"serving.{action}", series=champion.series_key,
              serving="baseline" if champion.baseline else f"v{champion.version}",
              previous="baseline" if champion.previous_version is None else f"v{champion.previous_version}",
              changed=champion.changed, forced=champion.forced)
    return ServingChange(champion, forecast)


def promote_version(sm: sessionmaker[Session], *, series_key: str, version: int, force: bool = False) -> ServingChange:
    """Serve ``version`` of the series from now on, and store its forecast.

    Raises:
        SeriesNotFound / ModelNotFound: naming the key and the version.
        Conflict: the gate rejected that version and ``force`` is false; the message says
            what the gate said and how to force it.
    """
    with write_session(sm) as session:
        champion = registry.promote(session, series_key=series_key, version=version, force=force)
        return _finish(session, champion, "promote")


def serve_baseline(sm: sessionmaker[Session], *, series_key: str) -> ServingChange:
    """Put the series back on its baseline (naive or seasonal naive), and store its forecast.

    Raises:
        SeriesNotFound: naming the key.
    """
    with write_session(sm) as session:
        champion = registry.serve_baseline(session, series_key=series_key)
        return _finish(session, champion, "baseline")


def rollback(sm: sessionmaker[Session], *, series_key: str) -> ServingChange:
    """Serve again what served before the latest move (a version or the baseline), and store its forecast.

    Raises:
        SeriesNotFound: naming the key.
        Conflict: the baseline serves and nothing earlier is recorded.
    """
    with write_session(sm) as session:
        champion = registry.rollback(session, series_key=series_key)
        return _finish(session, champion, "rollback")


def start_label(start: dict[str, Any] | None) -> str:
    """How a version's training started: "warm v3", "cold", "cold (warm lost)"."""
    if not start:
        return "-"
    if start.get("kind") == "warm":
        return f"warm v{start.get('from_version')}" if start.get("from_version") else "warm"
    why = str(start.get("why") or "")
    return "cold (warm lost)" if why.startswith("warm v") else "cold"
