"""Where observations come from: one ``fetch`` that dispatches on ``spec.source``.

    fetch(spec, settings, since=None) -> FetchResult   # yfinance, open-meteo, csv, sine
    tidy_frame(frame, label=..., timezone=None)        # the only way a frame gets stored
    load_snapshot(name) -> DataFrame                   # real series bundled for offline use

Every source raises from the same tree: ``SourceUnavailable`` when a retry may
help (network, HTTP 429/5xx, timeouts), ``SourceDataError`` when the upstream
answered without usable data, ``InvalidInput`` when the configuration or the
data itself is wrong.
"""

from __future__ import annotations

import datetime as dt
import time

from forecaster.config.settings import SeriesSpec, Settings
from forecaster.data.sources.base import FetchResult, tidy_frame
from forecaster.data.sources.csv_file import fetch_csv
from forecaster.data.sources.open_meteo import fetch_open_meteo
from forecaster.data.sources.sine import fetch_sine
from forecaster.data.sources.snapshot import load_snapshot
from forecaster.data.sources.yfinance_source import fetch_yfinance
from forecaster.errors import InvalidInput
from forecaster.logs import log_event
from forecaster.snapshots import SNAPSHOTS

__all__ = ["SNAPSHOTS", "FetchResult", "fetch", "load_snapshot", "tidy_frame"]


def fetch(spec: SeriesSpec, settings: Settings, *, since: dt.datetime | None = None) -> FetchResult:
    """Fetch the observations of one series from its upstream.

    Args:
        spec: the series; ``spec.source`` picks the upstream.
        settings: base URLs, timeouts and the config file's location.
        since: the last stored timestamp (aware UTC), or None. A source may use
            it to ask for less; none relies on it.

    Raises:
        InvalidInput: the series is a push series (nothing to fetch), or its
            parameters or data are unusable.
        SourceUnavailable: the upstream cannot be reached for now (retry later).
        SourceDataError: the upstream answered without usable data.
    """
    started = time.perf_counter()
    if spec.source == "sine":
        result = fetch_sine(spec)
    elif spec.source == "csv":
        result = fetch_csv(spec, settings)
    elif spec.source == "open-meteo":
        result = fetch_open_meteo(spec, settings, since=since)
    elif spec.source == "yfinance":
        result = fetch_yfinance(spec, settings)
    elif spec.source == "push":
        raise InvalidInput(
            f"{spec.key} is a push series: it has no upstream to fetch; POST observations instead"
        )
    else:
        raise InvalidInput(f"{spec.key}: source {spec.source!r} is not one forecaster can fetch")
    log_event("source.fetch", series=spec.key, source=spec.source, rows=len(result.frame),
              rejected=result.rejected, duration_s=round(time.perf_counter() - started, 3))
    return result
