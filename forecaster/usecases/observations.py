"""Writing observations by hand: a client's push and an admin's repair.

    parse_json_observations(body) / parse_csv_observations(text)  (parsing pushed bodies, one set of rules)
    rows_to_frame(rows)
    rules_for(session, settings, series) -> SeriesRules          (what a row of this series must satisfy)
    push_observations(sm, settings, series_key=, rows=, frequency=) -> PushResult
    delete_observations(sm, settings, series_key=, start=, end=) -> DeleteResult

Both are atomic: a push with one bad row stores none of its rows (the error
names the row and the rule); a delete removes the range, clears the actuals of
forecasts that targeted it, recomputes the stored forecast and records the run
in one transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from forecaster.config.settings import SeriesSpec, Settings
from forecaster.data import push_body
from forecaster.data.sources.base import tidy_frame
from forecaster.data.validation import SeriesRules, check_rows
from forecaster.errors import ConfigError, InvalidInput, SeriesNotFound
from forecaster.logs import log_event
from forecaster.store import forecasts, observations
from forecaster.store.observations import UpsertCounts
from forecaster.store.series import find_series, series_by_key, sync_series
from forecaster.store.tables import IngestRun, Series, utcnow, write_session
from forecaster.usecases.forecasting import ForecastView, get_forecast, next_target_ts, refresh_forecast
from forecaster.usecases.ingest import series_rules

# ---------------------------------------------------------------- parsing


def parse_json_observations(body: bytes) -> list[tuple[dt.datetime, float]]:
    """Rows of a JSON push body (``forecaster/data/push_body.py``: the rules CSV follows too).

    Raises:
        InvalidInput: not valid JSON, not a list of {ts, value}, or a row that breaks a rule, naming it.
    """
    return push_body.parse_json_rows(body)


def parse_csv_observations(text: str) -> list[tuple[dt.datetime, float]]:
    """Rows of a ``ts,value`` CSV push body, by the same rules as JSON.

    Raises:
        InvalidInput: no ``ts``/``value`` header, or a row that breaks a rule, naming it
            (1 = the first row after the header).
    """
    return push_body.parse_csv_rows(text)


def rows_to_frame(rows: Sequence[tuple[dt.datetime, float | None]]) -> pd.DataFrame:
    """A ``ts`` (UTC) / ``value`` frame from rows that passed ``check_rows``; None values become NaN."""
    ts = pd.DatetimeIndex([t.astimezone(dt.UTC).replace(tzinfo=None) for t, _ in rows]).tz_localize("UTC")
    values = pd.array([float("nan") if v is None else float(v) for _, v in rows], dtype="float64")
    return pd.DataFrame({"ts": ts, "value": values})


# ---------------------------------------------------------------- rules


def rules_for(session: Session, settings: Settings, series: Series, *,
              first_ts: dt.datetime | None = None) -> SeriesRules:
    """The rules a new observation of ``series`` must meet.

    The grid of a fixed-step series runs through its first stored observation;
    with nothing stored, through midnight UTC (an hourly series is on the hour),
    except for yfinance intraday bars, whose grid runs through ``first_ts``.
    """
    return series_rules(session, settings, series, first_ts)


# ---------------------------------------------------------------- push


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
    rows: Sequence[tuple[dt.datetime, float | None]],
    frequency: str | None = None,
    now: dt.datetime | None = None,
) -> PushResult:
    """Check, upsert, refresh the stored forecast and record the run, in one transaction.

    Allowed for a series declared in the config (any source), or, when
    ``settings.api.allow_push_create``, for a push series (created here when
    new, with ``frequency``). Every row is checked against the series
    (``forecaster.data.validation``): one bad row (a missing or non-finite value
    included) refuses the whole push, naming it. Of rows sharing a timestamp the
    last one wins; the earlier ones are counted as rejected, with a note.

    Raises:
        SeriesNotFound: the key is not declared and pushes may not create series.
        InvalidInput: a bad frequency, or a row that breaks a rule (nothing is stored).
    """
    with write_session(sm) as session:
        series, created = _push_target(session, settings, series_key, frequency)
        check_rows(rows, rules_for(session, settings, series, first_ts=rows[0][0] if rows else None), now)
        tidy = tidy_frame(rows_to_frame(rows), label=series_key)
        counts = observations.upsert(session, series, tidy.frame)
        if counts.changed:
            refresh_forecast(session, series)
        now_ = utcnow()
        run = IngestRun(series_id=series.id, series_key=series.key, source="push", started_at=now_, finished_at=now_,
                        status="ok", rows_new=counts.new, rows_updated=counts.updated,
                        rows_unchanged=counts.unchanged, rows_rejected=tidy.rejected)
        session.add(run)
        session.flush()
        try:
            forecast: ForecastView | None = get_forecast(session, series_key=series.key)
        except SeriesNotFound:
            forecast = None
        return PushResult(series.key, created, counts, tidy.rejected, tidy.notes, run.id, forecast)


# ---------------------------------------------------------------- delete


@dataclass(frozen=True)
class DeleteResult:
    series_key: str
    deleted: int
    ingest_run_id: int
    forecast: ForecastView | None


def delete_observations(
    sm: sessionmaker[Session],
    settings: Settings,
    *,
    series_key: str,
    start: dt.datetime,
    end: dt.datetime,
) -> DeleteResult:
    """Delete the observations with ``start <= ts <= end`` and let the forecasts follow.

    One transaction: the rows go; forecasts whose target lies in the range
    lose their actual and error (live accuracy no longer counts them); the
    stored forecast is recomputed from what remains, and unscored forecasts
    for targets past the new next step (made from the deleted rows) are
    dropped; the repair is recorded as an ingest run with source ``delete``
    and ``rows_deleted``.

    Raises:
        SeriesNotFound: no stored series with that key.
        InvalidInput: ``end`` before ``start``, or a time without a UTC offset.
    """
    for name, t in (("start", start), ("end", end)):
        if t.tzinfo is None or t.utcoffset() is None:
            raise InvalidInput(f"{name} {t.isoformat()} has no UTC offset; add one, such as 'Z'")
        try:
            t.astimezone(dt.UTC)
        except OverflowError:
            raise InvalidInput(f"{name} {t.isoformat()} is outside the representable range of times") from None
    start, end = start.astimezone(dt.UTC), end.astimezone(dt.UTC)
    if end < start:
        raise InvalidInput(f"end {end.isoformat()} is before start {start.isoformat()}")
    with write_session(sm) as session:
        series = series_by_key(session, series_key)
        deleted = observations.delete_range(session, series.id, start, end)
        if deleted:
            forecasts.clear_actuals(session, series.id, start, end)
            last = observations.latest_ts(session, series.id)
            next_step = next_target_ts(last, series.frequency, series.calendar) if last is not None else None
            forecasts.drop_unscored(session, series.id, after=next_step)
            refresh_forecast(session, series)
        now = utcnow()
        run = IngestRun(series_id=series.id, series_key=series.key, source="delete", started_at=now,
                        finished_at=now, status="ok", rows_deleted=deleted)
        session.add(run)
        session.flush()
        log_event("observations.deleted", series=series.key, run_id=run.id, rows=deleted,
                  start=start.isoformat(), end=end.isoformat())
        try:
            forecast: ForecastView | None = get_forecast(session, series_key=series.key)
        except SeriesNotFound:
            forecast = None
        return DeleteResult(series.key, deleted, run.id, forecast)
