"""The series catalogue as users browse it: summaries and observation pages (reads only).

    list_series(session, settings) -> list[SeriesSummary]
    series_summary(session, settings, key) -> SeriesSummary
    observations_page(session, series_key=, start=, end=, limit=, cursor=) -> ObservationsPage

Plain functions of a session returning frozen dataclasses; the API routes are
thin adapters over them. Pushing and deleting observations are use cases:
forecaster/usecases/observations.py.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from forecaster.config.settings import Settings
from forecaster.errors import InvalidInput, SeriesNotFound
from forecaster.store import observations, registry
from forecaster.store.observations import ObservationsPage
from forecaster.store.series import series_by_key, series_by_keys

MAX_PAGE = 10_000


# ---------------------------------------------------------------- series


@dataclass(frozen=True)
class SeriesSummary:
    key: str
    source: str
    frequency: str
    unit: str | None
    params: dict[str, Any]
    last_observation_ts: dt.datetime | None
    observation_count: int
    champion_version: int | None
    champion_model_version_id: int | None
    configured: bool


def _summaries(session: Session, settings: Settings, key: str | None = None) -> list[SeriesSummary]:
    rows = series_by_keys(session, None if key is None else [key])
    ids = None if key is None else [s.id for s in rows]  # all: no IN list of every id
    counts = observations.stats(session, ids)
    champs = registry.champions(session, ids)
    configured = {s.key for s in settings.series}
    out = []
    for s in rows:
        stats, champ = counts.get(s.id), champs.get(s.id)
        out.append(SeriesSummary(s.key, s.source, s.frequency, s.unit, dict(s.params or {}),
                                 stats.last_ts if stats else None, stats.count if stats else 0,
                                 champ.version if champ else None, champ.model_version_id if champ else None,
                                 s.key in configured))
    seen = {s.key for s in out}
    # Configured but never synced (no ingest has run yet): listed, with nothing stored.
    for spec in settings.series:
        if spec.key not in seen and (key is None or spec.key == key):
            out.append(SeriesSummary(spec.key, spec.source, spec.frequency, spec.unit, dict(spec.params),
                                     None, 0, None, None, True))
    return sorted(out, key=lambda s: s.key)


def list_series(session: Session, settings: Settings) -> list[SeriesSummary]:
    """Every series in the database or the config, by key, with its count, last ts and champion."""
    return _summaries(session, settings)


def series_summary(session: Session, settings: Settings, key: str) -> SeriesSummary:
    """One series' summary.

    Raises:
        SeriesNotFound: neither stored nor configured, naming the key.
    """
    found = _summaries(session, settings, key)
    if not found:
        raise SeriesNotFound(f"no series {key!r}")
    return found[0]


# ---------------------------------------------------------------- observations


def _utc(name: str, t: dt.datetime | None) -> dt.datetime | None:
    """``t`` in UTC (None stays None).

    Raises:
        InvalidInput: ``t`` falls outside year 1..9999 in UTC (9999-12-31T23:00-05:00).
    """
    if t is None:
        return None
    try:
        return t.astimezone(dt.UTC)
    except OverflowError:
        raise InvalidInput(f"{name} {t.isoformat()} is outside the representable range of times") from None


def observations_page(
    session: Session,
    *,
    series_key: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    limit: int = 1000,
    cursor: str | None = None,
) -> ObservationsPage:
    """Observations with ``start <= ts <= end``, oldest first, ``limit`` at most, after ``cursor``
    (keyset paging: ``forecaster.store.observations.page``).

    Raises:
        SeriesNotFound: naming the key.
        InvalidInput: a bad cursor or limit, or ``end`` before ``start``.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit {limit} is outside 1..{MAX_PAGE}")
    start, end = _utc("start", start), _utc("end", end)
    if start is not None and end is not None and end < start:
        raise InvalidInput(f"end {end.isoformat()} is before start {start.isoformat()}")
    series = series_by_key(session, series_key)
    return observations.page(session, series, start=start, end=end, limit=limit, cursor=cursor)
