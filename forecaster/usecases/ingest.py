"""Ingest: fetch each series from its source and upsert it, one transaction per series.

Re-running never duplicates and never deletes: a timestamp already stored with
the same value is left alone, one whose value changed upstream is updated and
counted as such (``forecaster.store.observations.upsert``). Every run is
recorded in ``ingest_runs``; a source that cannot answer is retried with backoff.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from forecaster.config.settings import SeriesSpec, Settings
from forecaster.data import sources
from forecaster.data.validation import ScreenedFrame, SeriesRules, screen_frame
from forecaster.errors import ForecasterError, SeriesNotFound, SourceError, SourceUnavailable
from forecaster.logs import log_event
from forecaster.store import observations
from forecaster.store.series import sync_series
from forecaster.store.tables import IngestRun, Series, utcnow, write_session

FetchFn = Callable[..., "sources.FetchResult"]


@dataclass(frozen=True)
class IngestOutcome:
    """What one series' ingest did.

    ``status``: ``ok``; ``snapshot`` (the source was unreachable and nothing
    was stored yet: the bundled snapshot was loaded); ``unavailable`` (the
    source was unreachable: nothing changed, the stored data keeps serving);
    ``failed`` (an answer that cannot be read, or an error: nothing from it was stored).
    ``rejection`` names the first rows of the answer that broke the series' rules
    (they are in ``rows_rejected``, the others were stored); the run row keeps it as its note.
    """

    series_key: str
    run_id: int
    status: str
    rows_new: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    rows_rejected: int = 0
    last_ts: dt.datetime | None = None
    error: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    rejection: str | None = None

    @property
    def ok(self) -> bool:
        """False only for ``failed``: an unreachable source is an outage upstream, not a fault here."""
        return self.status != "failed"


def unavailable_message(exc: Exception) -> str:
    """The one sentence for an unreachable source, in the CLI, the run record, the API and the log."""
    return f"source unreachable ({exc}); the stored data keeps serving"


def snapshot_message(exc: Exception, snapshot: str) -> str:
    """The one sentence for a fall-back to a bundled snapshot."""
    return f"source unreachable ({exc}); loaded the bundled snapshot {snapshot!r}"


# ---------------------------------------------------------------- retries


@dataclass(frozen=True)
class RetryPolicy:
    """How often one series' fetch is tried when its source is unavailable.

    ``tries`` attempts in all, waiting ``backoff_s``, then twice that, and so on
    (3 tries, 2 s: waits of 2 s and 4 s).
    """

    tries: int = 3
    backoff_s: float = 2.0

    def delay_s(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return self.backoff_s * 2.0 ** (attempt - 1)


class Attempts:
    """Fetch attempts per series, and the series whose retries were cut short.

    The run row says how many attempts a series took; a series given up
    because the run is stopping makes the run ``interrupted``.
    """

    def __init__(self) -> None:
        self.by_key: dict[str, int] = {}
        self.given_up: set[str] = set()


class RetryStopped(SourceError):
    """A retry cut short because the run is stopping: the series failed, with no verdict on the source."""


def retrying_fetch(policy: RetryPolicy, stop: threading.Event, attempts: Attempts | None = None) -> FetchFn:
    """Wrap ``sources.fetch`` so that ``SourceUnavailable`` is retried with backoff.

    Other errors (bad data, bad parameters) are not retried: another try would
    get the same answer. The backoff wait ends early when ``stop`` is set, and
    the series then fails with a message saying the retry was given up.
    """

    def fetch(spec: SeriesSpec, settings: Settings, *, since: dt.datetime | None = None) -> sources.FetchResult:
        attempt = 0
        while True:
            attempt += 1
            if attempts is not None:
                attempts.by_key[spec.key] = attempt
            try:
                return sources.fetch(spec, settings, since=since)
            except SourceUnavailable as exc:
                if attempt >= policy.tries:
                    raise SourceUnavailable(f"{exc} (gave up after {attempt} attempts)") from None
                wait_s = policy.delay_s(attempt)
                log_event("ingest.retry", series=spec.key, attempt=attempt, wait_s=wait_s, error=str(exc))
                if stop.wait(wait_s):
                    if attempts is not None:
                        attempts.given_up.add(spec.key)
                    raise RetryStopped(
                        f"{exc} (retry given up after {attempt} attempts: the run is stopping)"
                    ) from None

    return fetch



def sync_all_series(sm: sessionmaker[Session], settings: Settings) -> None:
    """Make sure every configured series has its row (so the API lists them before any data)."""
    with write_session(sm) as session:
        for spec in settings.series:
            sync_series(session, spec)


# ---------------------------------------------------------------- ingest


def _start_run(sm: sessionmaker[Session], spec: SeriesSpec, job_run_id: int | None) -> tuple[int, int]:
    with write_session(sm) as session:
        series = sync_series(session, spec)
        run = IngestRun(series_id=series.id, series_key=spec.key, source=spec.source,
                        status="running", job_run_id=job_run_id)
        session.add(run)
        session.flush()
        return series.id, run.id


def series_rules(session: Session, settings: Settings, series: Series,
                 first_ts: dt.datetime | None = None) -> SeriesRules:
    """The rules (forecaster/data/validation.py) a new observation of ``series`` must meet."""
    anchor = observations.first_ts(session, series.id)
    if anchor is None and series.source == "yfinance":
        anchor = first_ts  # intraday bars start at the exchange's open (NYSE: :30)
    return SeriesRules(series_key=series.key, frequency=series.frequency, calendar=series.calendar,
                       anchor=anchor, future_tolerance_s=settings.observations.future_tolerance_s)


def rejection_note(screened: ScreenedFrame) -> str | None:
    """The sentence naming the rows an upstream answer had that break the series' rules (None: none)."""
    if not screened.rejected:
        return None
    more = screened.rejected - len(screened.named)
    rows = "row that breaks" if screened.rejected == 1 else "rows that break"
    return (f"rejected {screened.rejected} {rows} the series' rules: " + "; ".join(screened.named)
            + (f"; and {more} more" if more else ""))


def _finish_run(sm: sessionmaker[Session], run_id: int, outcome: IngestOutcome) -> None:
    with write_session(sm) as session:
        run = session.get(IngestRun, run_id)
        assert run is not None
        run.finished_at = utcnow()
        run.status = outcome.status
        run.rows_new, run.rows_updated = outcome.rows_new, outcome.rows_updated
        run.rows_unchanged, run.rows_rejected = outcome.rows_unchanged, outcome.rows_rejected
        # the run's one line of text: the failure, the snapshot or outage message, and the rows set aside
        run.error = "; ".join(t for t in (outcome.error, outcome.rejection) if t) or None


AfterWrite = Callable[[Session, Series], None]


def ingest_series(
    sm: sessionmaker[Session],
    settings: Settings,
    spec: SeriesSpec,
    *,
    job_run_id: int | None = None,
    snapshot_fallback: bool = False,
    fetch: FetchFn | None = None,
    after_write: AfterWrite | None = None,
) -> IngestOutcome:
    """Fetch one series and upsert it in one transaction; record the run.

    Failures do not raise. When the source cannot give data, ``snapshot_fallback``
    is on, the series names a bundled snapshot and nothing is stored yet, the
    snapshot is loaded (``snapshot``); otherwise an unreachable source
    (``SourceUnavailable``) makes the outcome ``unavailable`` (the stored data
    keeps serving). Every row is checked against the series (forecaster/data/validation.py)
    one by one: the rows that break a rule are counted as rejected and the first
    few named (in the notes, the run's text and a WARNING log line), the others
    are stored. Any other error fails the series (``failed``, with the error
    text); a failure while writing rolls the series back to how it was.
    ``after_write(session, series)`` runs inside the same transaction when rows
    changed (the stored forecast is refreshed there).
    """
    fetch = fetch or sources.fetch
    series_id, run_id = _start_run(sm, spec, job_run_id)
    status, error = "ok", None
    notes: tuple[str, ...] = ()
    try:
        with sm() as session:
            since = observations.latest_ts(session, series_id)
        try:
            result = fetch(spec, settings, since=since)
        except SourceError as exc:
            if isinstance(exc, RetryStopped) or not (snapshot_fallback and spec.snapshot and since is None):
                if not isinstance(exc, SourceUnavailable):
                    raise  # the upstream answered, without data: a failure
                error = unavailable_message(exc)
                outcome = IngestOutcome(series_key=spec.key, run_id=run_id, status="unavailable", error=error,
                                        last_ts=since, notes=(error,))
                log_event("ingest.unavailable", level=logging.WARNING, series=spec.key, run_id=run_id, error=error)
                _finish_run(sm, run_id, outcome)
                return outcome
            error = snapshot_message(exc, spec.snapshot)
            status = "snapshot"
            frame = sources.load_snapshot(spec.snapshot)
            result = sources.tidy_frame(frame, label=f"snapshot {spec.snapshot}")
            notes = (error,)
            log_event("ingest.snapshot", level=logging.WARNING, series=spec.key, run_id=run_id,
                      snapshot=spec.snapshot, error=error)
        notes = notes + tuple(result.notes)
        with write_session(sm) as session:
            series = session.get(Series, series_id)
            assert series is not None
            first = result.frame["ts"].iloc[0].to_pydatetime() if len(result.frame) else None
            screened = screen_frame(result.frame, series_rules(session, settings, series, first),
                                    what=(f"snapshot {spec.snapshot!r} row" if status == "snapshot"
                                          else f"{spec.source} row"))
            counts = observations.upsert(session, series, screened.frame)
            if counts.changed and after_write is not None:
                after_write(session, series)
            last = observations.latest_ts(session, series_id)
        rejection = rejection_note(screened)
        if rejection is not None:
            notes = notes + (rejection,)
            log_event("ingest.rejected", level=logging.WARNING, series=spec.key, run_id=run_id,
                      rows=screened.rejected, detail=rejection)
        rejected = result.rejected + screened.rejected
        outcome = IngestOutcome(
            series_key=spec.key, run_id=run_id, status=status, rows_new=counts.new,
            rows_updated=counts.updated, rows_unchanged=counts.unchanged,
            rows_rejected=rejected, last_ts=last, error=error, notes=notes, rejection=rejection,
        )
        log_event("ingest.done", series=spec.key, run_id=run_id, status=status, new=counts.new,
                  updated=counts.updated, unchanged=counts.unchanged, rejected=rejected)
    except ForecasterError as exc:
        text = str(exc) if spec.key in str(exc) else f"{spec.key}: {exc}"  # the message names the series
        outcome = IngestOutcome(series_key=spec.key, run_id=run_id, status="failed", error=text)
        log_event("ingest.failed", level=logging.ERROR, series=spec.key, run_id=run_id, error=text)
    except Exception as exc:  # noqa: BLE001 - one series must never stop the others
        outcome = IngestOutcome(series_key=spec.key, run_id=run_id, status="failed",
                                error=f"{spec.key}: {type(exc).__name__}: {exc}")
        log_event("ingest.failed", level=logging.ERROR, series=spec.key, run_id=run_id, error=outcome.error,
                  exc_info=True)
    _finish_run(sm, run_id, outcome)
    return outcome


def select_specs(settings: Settings, keys: Sequence[str] | None) -> list[SeriesSpec]:
    """The configured series named by ``keys`` (all when empty).

    Raises:
        SeriesNotFound: a key is not in the config; the message lists the known keys.
    """
    if not keys:
        return list(settings.series)
    known = {s.key: s for s in settings.series}
    missing = [k for k in keys if k not in known]
    if missing:
        raise SeriesNotFound(
            f"series {', '.join(map(repr, missing))} not in the config (known: {', '.join(known) or 'none'})"
        )
    return [known[k] for k in keys]


def ingest_many(
    sm: sessionmaker[Session],
    settings: Settings,
    specs: Iterable[SeriesSpec],
    *,
    job_run_id: int | None = None,
    snapshot_fallback: bool = False,
    on_done: Callable[[IngestOutcome], None] | None = None,
    after_write: AfterWrite | None = None,
) -> list[IngestOutcome]:
    """Ingest each series in turn; a failing series never stops the others."""
    outcomes = []
    for spec in specs:
        if spec.source == "push":
            continue
        outcome = ingest_series(sm, settings, spec, job_run_id=job_run_id,
                                snapshot_fallback=snapshot_fallback, after_write=after_write)
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)
    return outcomes
