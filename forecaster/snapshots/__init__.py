"""Real series bundled with the package (the CSV files beside this module), by name, with where each comes from."""

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
