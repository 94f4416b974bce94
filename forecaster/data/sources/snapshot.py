"""Real series bundled with the package, for the offline default and for tests."""

from __future__ import annotations

from importlib import resources

import pandas as pd

from forecaster.errors import InvalidInput
from forecaster.data.sources.base import tidy_frame

SNAPSHOTS: dict[str, str] = {
    "sp500_daily_close": (
        "S&P 500 index daily close, trading days 1999-01-04..2018-12-31, stamped at "
        "midnight UTC of the trading day (from the arch package's sp500 data, "
        "originally Yahoo Finance)"
    ),
    "sf_temp_hourly": (
        "San Francisco hourly air temperature in degrees F, 2010 (from vega_datasets "
        "sf-temps, NOAA data)"
    ),
    "greensboro_temp_hourly": (
        "Greensboro NC hourly dry-bulb air temperature in degrees C, one typical "
        "meteorological year stamped 1990 (NREL TMY3 file 723170 as bundled in pvlib)"
    ),
    "nino12_sst_monthly": (
        "Nino 1+2 monthly mean sea-surface temperature in degrees C, 1950..2010 "
        "(NOAA ERSST v3b as bundled in statsmodels' elnino data set)"
    ),
}


def load_snapshot(name: str) -> pd.DataFrame:
    """The bundled series ``name`` as a frame of ``ts`` (UTC) and ``value``.

    Raises:
        InvalidInput: ``name`` is not a bundled snapshot (the message lists them).
    """
    if name not in SNAPSHOTS:
        known = ", ".join(sorted(SNAPSHOTS))
        raise InvalidInput(f"snapshot {name!r} is not bundled (known: {known})")
    resource = resources.files("forecaster") / "snapshots" / f"{name}.csv"
    with resources.as_file(resource) as path:
        raw = pd.read_csv(path, dtype={"ts": "string"})
    return tidy_frame(raw, label=f"snapshot {name}").frame
