"""A seeded synthetic series for demos and tests: the same params give the same frame."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecaster.config.settings import SeriesSpec, SineParams
from forecaster.data.sources.base import FetchResult, tidy_frame
from forecaster.errors import InvalidInput


def fetch_sine(spec: SeriesSpec) -> FetchResult:
    """``level + amplitude*sin(2*pi*t/period) + noise*N(0, 1)`` at ``spec.frequency``.

    ``t`` counts steps from ``params.start``; the noise comes from
    ``numpy.random.default_rng(params.seed)``, so a re-fetch is identical and a
    re-ingest changes nothing.

    Raises:
        InvalidInput: ``params.start`` is not a timestamp.
    """
    p: SineParams = spec.typed_params()
    try:
        start = pd.Timestamp(p.start)
    except ValueError:
        raise InvalidInput(
            f"{spec.key}: params.start = {p.start!r} is not a timestamp "
            "(e.g. '2024-01-01T00:00:00Z')"
        ) from None
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    ts = pd.date_range(start=start, periods=p.length, freq=spec.frequency)
    t = np.arange(p.length, dtype="float64")
    noise = np.random.default_rng(p.seed).standard_normal(p.length)
    value = p.level + p.amplitude * np.sin(2 * np.pi * t / p.period) + p.noise * noise
    return tidy_frame(pd.DataFrame({"ts": ts, "value": value}), label=spec.key)
