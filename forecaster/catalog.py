"""The series catalogue as users browse it: summaries, observation pages, and pushes.

    list_series(session, settings) -> list[SeriesSummary]
    series_summary(session, settings, key) -> SeriesSummary
    observations_page(session, series_key=, start=, end=, limit=, cursor=) -> ObservationsPage
    push_observations(sm, settings, series_key=, frame=, frequency=) -> PushResult
    parse_csv_observations(text) / rows_to_frame(rows)     (parsing pushed bodies)

Plain functions of a session (or sessionmaker) returning frozen dataclasses;
the API routes are thin adapters over them.
"""

from __future__ import annotations

import base64
import binascii
import csv
import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from forecaster.config import SeriesSpec, Settings
from forecaster.db import Alias, IngestRun, ModelVersion, Observation, Series, utcnow, write_session
from forecaster.errors import ConfigError, InvalidInput, SeriesNotFound
from forecaster.forecasting import ForecastView, get_forecast, refresh_forecast
from forecaster.ingest import UpsertCounts, find_series, sync_series, upsert_observations
from forecaster.registry import CHAMPION
from forecaster.sources.base import tidy_frame

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
    stats = (
        select(Observation.series_id, func.count().label("n"), func.max(Observation.ts).label("last_ts"))
        .group_by(Observation.series_id)
    )
    if key is not None:
        stats = stats.join(Series, Series.id == Observation.series_id).where(Series.key == key)
    agg = stats.subquery()
    q = (
        select(Series, agg.c.n, agg.c.last_ts, ModelVersion.version, ModelVersion.id)
        .outerjoin(agg, agg.c.series_id == Series.id)
        .outerjoin(Alias, (Alias.series_id == Series.id) & (Alias.name == CHAMPION))
        .outerjoin(ModelVersion, ModelVersion.id == Alias.model_version_id)
        .order_by(Series.key)
    )
    if key is not None:
        q = q.where(Series.key == key)
    configured = {s.key for s in settings.series}
    out = [
        SeriesSummary(s.key, s.source, s.frequency, s.unit, dict(s.params or {}), last_ts, int(n or 0),
                      version, mv_id, s.key in configured)
        for s, n, last_ts, version, mv_id in session.execute(q)
    ]
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


@dataclass(frozen=True)
class ObservationsPage:
    series_key: str
    rows: list[tuple[dt.datetime, float]]
    next_cursor: str | None


def encode_cursor(ts: dt.datetime) -> str:
    """An opaque cursor for 'after ``ts``' (URL-safe base64 of the ISO time)."""
    return base64.urlsafe_b64encode(ts.astimezone(dt.timezone.utc).isoformat().encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dt.datetime:
    """The timestamp inside a cursor.

    Raises:
        InvalidInput: the cursor did not come from ``encode_cursor``.
    """
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts = dt.datetime.fromisoformat(text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput(f"cursor {cursor!r} is not one this API gave out; pass next_cursor unchanged") from None
    if ts.tzinfo is None:
        raise InvalidInput(f"cursor {cursor!r} is not one this API gave out; pass next_cursor unchanged")
    return ts


def observations_page(
    session: Session,
    *,
    series_key: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    limit: int = 1000,
    cursor: str | None = None,
) -> ObservationsPage:
    """Observations with ``start <= ts <= end``, oldest first, ``limit`` at most, after ``cursor``.

    Keyset paging on the (series_id, ts) primary key: each page is one index
    range scan, however deep into the series it is.

    Raises:
        SeriesNotFound: naming the key.
        InvalidInput: a bad cursor or limit, or ``end`` before ``start``.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit {limit} is outside 1..{MAX_PAGE}")
    if start is not None and end is not None and end < start:
        raise InvalidInput(f"end {end.isoformat()} is before start {start.isoformat()}")
    series = find_series(session, series_key)
    if series is None:
        raise SeriesNotFound(f"no series {series_key!r}")
    q = select(Observation.ts, Observation.value).where(Observation.series_id == series.id)
    if start is not None:
        q = q.where(Observation.ts >= start)
    if end is not None:
        q = q.where(Observation.ts <= end)
    if cursor is not None:
        q = q.where(Observation.ts > decode_cursor(cursor))
    rows = [(t, v) for t, v in session.execute(q.order_by(Observation.ts).limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return ObservationsPage(series_key, rows, encode_cursor(rows[-1][0]) if more else None)


# ---------------------------------------------------------------- push


_MISSING_WORDS = frozenset({"", "nan", "-nan", "+nan", "na", "n/a", "null", "none"})


def parse_csv_observations(text: str) -> list[tuple[dt.datetime, float]]:
    """Rows of a ``ts,value`` CSV body as (aware ts, value); empty or NaN values become NaN.

    Raises:
        InvalidInput: no ``ts``/``value`` header, or a row whose timestamp has
            no UTC offset or cannot be read, or whose value is not a number,
            naming the row (1 = the first row after the header).
    """
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip().lower() for h in next(reader, [])]
    if "ts" not in header or "value" not in header:
        raise InvalidInput(f"CSV header must name the columns ts,value; got {','.join(header) or 'nothing'!r}")
    i_ts, i_value = header.index("ts"), header.index("value")
    out: list[tuple[dt.datetime, float]] = []
    for n, row in enumerate(reader, start=1):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(i_ts, i_value):
            raise InvalidInput(f"row {n}: {len(row)} columns; expected ts,value")
        out.append((_parse_ts(row[i_ts].strip(), n), _parse_value(row[i_value].strip(), n)))
    return out


def _parse_ts(text: str, row: int) -> dt.datetime:
    try:
        ts = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"row {row}: timestamp {text!r} cannot be read; use ISO-8601 "
                           "with an offset, such as '2024-01-01T00:00:00Z'") from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise InvalidInput(f"row {row}: timestamp {text!r} has no UTC offset; add one, "
                           "such as '2024-01-01T00:00:00Z' or '2024-01-01T01:00:00+01:00'")
    return ts


def _parse_value(text: str, row: int) -> float:
    if text.lower() in _MISSING_WORDS:
        return float("nan")
    try:
        return float(text)
    except ValueError:
        raise InvalidInput(f"row {row}: value {text!r} is not a number") from None


def rows_to_frame(rows: Sequence[tuple[dt.datetime, float | None]]) -> pd.DataFrame:
    """A ``ts`` (UTC) / ``value`` frame from parsed rows; None values become NaN."""
    ts = pd.DatetimeIndex([t.astimezone(dt.timezone.utc).replace(tzinfo=None) for t, _ in rows]).tz_localize("UTC")
    values = pd.array([float("nan") if v is None else float(v) for _, v in rows], dtype="float64")
    return pd.DataFrame({"ts": ts, "value": values})


@dataclass(frozen=True)
class PushResult:
    series_key: str
    created: bool
    counts: UpsertCounts
    rejected: int
    notes: tuple[str, ...]
    ingest_run_id: int
    forecast: ForecastView | None


def _push_target(session: Session, settings: Settings, key: str, frequency: str | None) -> tuple[Series, bool]:
    """The series a push may write to, created when allowed. Runs in the caller's transaction."""
    spec = settings.series_by_key(key)
    if spec is not None:
        existed = find_series(session, key) is not None
        return sync_series(session, spec), not existed
    row = find_series(session, key)
    if not settings.api.allow_push_create or (row is not None and row.source != "push"):
        raise SeriesNotFound(
            f"no series {key!r} is declared in the config: declare it there (source = \"push\") "
            "or set api.allow_push_create = true to let a push create it"
        )
    if row is not None:
        if frequency is not None and frequency != row.frequency:
            raise InvalidInput(f"series {key!r} has frequency {row.frequency!r}; frequency={frequency!r} "
                               "does not match (leave it out for an existing series)")
        return row, False
    if frequency is None:
        raise InvalidInput(f"series {key!r} does not exist yet: pass ?frequency= (e.g. 1h, 1D, 1B) to create it")
    try:
        new_spec = SeriesSpec(key=key, source="push", frequency=frequency)
    except (ValidationError, ConfigError) as exc:
        reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()) \
            if isinstance(exc, ValidationError) else str(exc)
        raise InvalidInput(f"cannot create push series {key!r} with frequency {frequency!r}: {reasons}") from None
    return sync_series(session, new_spec), True


def push_observations(
    sm: sessionmaker[Session],
    settings: Settings,
    *,
    series_key: str,
    frame: pd.DataFrame,
    frequency: str | None = None,
) -> PushResult:
    """Upsert pushed observations, refresh the stored forecast and record the run, in one transaction.

    Allowed for a series declared in the config (any source), or, when
    ``settings.api.allow_push_create``, for a push series (created here when
    new, with ``frequency``). Rows with NaN/inf/missing values are dropped and
    counted as rejected, with the reason in ``notes``.

    Raises:
        SeriesNotFound: the key is not declared and pushes may not create series.
        InvalidInput: a bad frequency, or data ``tidy_frame`` refuses.
    """
    tidy = tidy_frame(frame, label=series_key)
    with write_session(sm) as session:
        series, created = _push_target(session, settings, series_key, frequency)
        counts = upsert_observations(session, series, tidy.frame)
        if counts.changed:
            refresh_forecast(session, series)
        now = utcnow()
        run = IngestRun(series_id=series.id, series_key=series.key, source="push", started_at=now, finished_at=now,
                        status="ok", rows_new=counts.new, rows_updated=counts.updated,
                        rows_unchanged=counts.unchanged, rows_rejected=tidy.rejected)
        session.add(run)
        session.flush()
        try:
            forecast: ForecastView | None = get_forecast(session, series_key=series.key)
        except SeriesNotFound:
            forecast = None
        return PushResult(series.key, created, counts, tidy.rejected, tidy.notes, run.id, forecast)
