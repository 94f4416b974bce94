"""Prometheus metrics for ``GET /metrics``, in a registry of the app's own.

Two kinds:

- counted in this process: requests and latency by route template (never the
  raw path, so series keys do not explode the label set) and status (499: the
  client left before the answer), forecasts served, windows predicted;
- read from the database at each scrape, so that they are right however many
  API and scheduler processes there are: each champion's age, each series'
  last observation, ingest runs and job runs by status, and each series' live
  accuracy (MASE and interval coverage of what serves it, the drift flag), and
  the worker tasks waiting and running in the PostgreSQL queue.

The database figures come from ``forecaster.usecases.figures.metrics_figures``.

A per-app ``CollectorRegistry`` (not the process-global one) lets tests and
benchmarks build many apps in one process.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import CLIENT_GONE
from forecaster.config.settings import MonitoringSettings
from forecaster.logs import log_event
from forecaster.usecases.accuracy import all_accuracy, horizons
from forecaster.usecases.figures import metrics_figures

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"  # the route label of requests that matched no route (404s)
CLIENT_CLOSED_REQUEST = 499  # the status label of requests whose client left mid-request (nginx's code)


class ApiMetrics:
    """The registry and the instruments one app records into."""

    def __init__(self, sm: sessionmaker[Session] | None = None, monitoring: MonitoringSettings | None = None) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double the output and nobody graphs them
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "forecaster_http_requests", "HTTP requests answered, by route template and status.",
            ("method", "route", "status"), registry=self.registry,
        )
        self.latency = Histogram(
            "forecaster_http_request_duration_seconds", "Time from request to the last byte of the response.",
            ("method", "route"), buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.forecasts_served = Counter(
            "forecaster_forecasts_served", "Stored forecasts returned to clients, by series and method.",
            ("series", "method"), registry=self.registry,
        )
        self.forecast_reads = Counter(
            "forecaster_forecast_reads", "Forecast GETs answered from the response cache (the database provably "
            "unchanged since) or by reading the database.", ("source",), registry=self.registry,
        )
        self._children: dict[tuple[object, ...], Any] = {}
        self.in_flight = 0  # HTTP requests begun and not yet answered (MetricsMiddleware, on the event loop)
        self.other_at = float("-inf")  # time.monotonic() of the latest request that was not a predict
        self.predictions = Counter(
            "forecaster_predictions", "Windows predicted through POST /v1/models/{id}/predict.",
            registry=self.registry,
        )
        if sm is not None:
            self.registry.register(DatabaseCollector(sm, monitoring or MonitoringSettings()))

    def child(self, instrument: Counter | Histogram, *labels: str) -> Any:
        """``instrument.labels(*labels)``, remembered: the hot paths pay a dict lookup, not the label checks."""
        key = (id(instrument), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = instrument.labels(*labels)
        return found

    def render(self) -> bytes:
        """The exposition text of every metric (queries the database once)."""
        return generate_latest(self.registry)


class DatabaseCollector(Collector):
    """Gauges computed from the database when Prometheus scrapes."""

    def __init__(self, sm: sessionmaker[Session], monitoring: MonitoringSettings) -> None:
        self._sm = sm
        self._monitoring = monitoring

    def describe(self) -> Iterable[Metric]:
        return []  # computed at scrape; nothing to check up front

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("forecaster_database_up", "1 when the last scrape could read the database.")
        try:
            families = self._read()
        except SQLAlchemyError as exc:
            log_event("metrics.database_unavailable", level=logging.WARNING, error=type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list[Metric]:
        now = dt.datetime.now(dt.UTC)
        age = GaugeMetricFamily("forecaster_model_age_seconds", "Seconds since the serving champion was trained.",
                                labels=["series", "version"])
        last_obs = GaugeMetricFamily("forecaster_last_observation_timestamp_seconds",
                                     "Unix time of each series' newest observation.", labels=["series"])
        ingest = GaugeMetricFamily("forecaster_ingest_runs", "Ingest runs recorded, by status (all processes).",
                                   labels=["status"])
        jobs = GaugeMetricFamily("forecaster_job_runs", "Job runs recorded, by kind and status (all processes).",
                                 labels=["kind", "status"])
        queue = GaugeMetricFamily("forecaster_queue_tasks", "Worker tasks in the PostgreSQL queue, by queue and "
                                  "status (todo = waiting, doing = running); none on SQLite.",
                                  labels=["queue", "status"])
        with self._sm() as session:
            f = metrics_figures(session)
            live = self._live_accuracy(session)
        for key, version, created_at in f.champions:
            age.add_metric([key, str(version)], (now - created_at).total_seconds())
        for key, ts in f.newest_observation:
            last_obs.add_metric([key], ts.timestamp())
        for status, n in f.ingest_runs.items():
            ingest.add_metric([status], n)
        for (kind, status), n in f.job_runs.items():
            jobs.add_metric([kind, status], n)
        for (name, status), n in f.queue_tasks.items():
            queue.add_metric([name, status], n)
        return [age, last_obs, ingest, jobs, queue, *live]

    def _live_accuracy(self, session: Session) -> list[Metric]:
        mase = GaugeMetricFamily("forecaster_live_mase", "Live MASE of what serves each series (champion or "
                                 "baseline) over its recent actuals: its MAE / naive's on the same targets.",
                                 labels=["series"])
        coverage = GaugeMetricFamily("forecaster_live_coverage", "Share of recent actuals inside the served "
                                     "forecast's interval.", labels=["series"])
        drifting = GaugeMetricFamily("forecaster_drifting", "1 when the champion's live MASE is above 1 over "
                                     "enough actuals (monitoring.drift_min_actuals).", labels=["series"])
        step_mase = GaugeMetricFamily("forecaster_live_mase_by_step", "Live MASE of what serves each series at "
                                      "the first and the last step of its paths (step=\"1\" or \"last\").",
                                      labels=["series", "step"])
        step_coverage = GaugeMetricFamily("forecaster_live_coverage_by_step", "Interval coverage of what serves "
                                          "each series at the first and the last step of its paths.",
                                          labels=["series", "step"])
        m = self._monitoring
        last = horizons(session)  # two step labels per series, however long its paths: bounded cardinality
        wanted = {1, *last.values()}
        for key, acc in all_accuracy(session, window=m.accuracy_window, min_actuals=m.drift_min_actuals,
                                     steps=wanted).items():
            drifting.add_metric([key], 1.0 if acc.drifting else 0.0)
            if acc.serving is not None and acc.serving.mase is not None:
                mase.add_metric([key], acc.serving.mase)
            if acc.serving is not None and acc.serving.coverage is not None:
                coverage.add_metric([key], acc.serving.coverage)
            for s in acc.serving.by_step if acc.serving is not None else ():
                label = "1" if s.step == 1 else "last" if s.step == last.get(key) else None
                if label is None:
                    continue
                if s.mase is not None:
                    step_mase.add_metric([key, label], s.mase)
                if s.coverage is not None:
                    step_coverage.add_metric([key, label], s.coverage)
        return [mase, coverage, drifting, step_mase, step_coverage]


class MetricsMiddleware:
    """Count every HTTP request and time it, labelled by the route template it matched."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        self.metrics.in_flight += 1
        if not scope["path"].endswith("/predict"):
            self.metrics.other_at = time.monotonic()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight -= 1
            if scope.get(CLIENT_GONE):
                status = CLIENT_CLOSED_REQUEST  # nothing was answered, and no server error happened
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            method = scope.get("method", "")
            self.metrics.child(self.metrics.requests, method, template, str(status)).inc()
            self.metrics.child(self.metrics.latency, method, template).observe(time.perf_counter() - started)
