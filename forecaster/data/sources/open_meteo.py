"""Open-Meteo: the archive API for history, the forecast API for the last few days.

Both answer ``{"utc_offset_seconds": .., "hourly": {"time": [..], "<variable>": [..]}}``
(or ``"daily"``), with ``time`` as local wall-clock text in the requested
timezone. Open-Meteo applies one offset (the one valid today) to the whole
series, so subtracting ``utc_offset_seconds`` gives UTC exactly.

Hourly data is asked for in GMT whatever ``timezone`` says: stored in UTC, a
local hour of a zone such as Asia/Kolkata (+05:30) would fall at :30, off the
series' hourly grid. ``timezone`` decides where a day begins, so it shapes daily
values, which are stamped at midnight UTC of their local date, like daily stock bars.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from forecaster.config.settings import OpenMeteoParams, SeriesSpec, Settings
from forecaster.data.sources._http import host_of, http_get
from forecaster.data.sources.base import FetchResult, tidy_frame
from forecaster.errors import InvalidInput, SourceDataError

ARCHIVE_LAG_DAYS = 5  # the archive's reanalysis trails real time by a few days


def _section(spec: SeriesSpec) -> str:
    offset = pd.tseries.frequencies.to_offset(spec.frequency)
    if offset == pd.tseries.frequencies.to_offset("1D"):
        return "daily"
    if offset == pd.tseries.frequencies.to_offset("1h"):
        return "hourly"
    raise InvalidInput(
        f"{spec.key}: open-meteo serves hourly or daily data, not frequency "
        f"{spec.frequency!r}; set frequency to '1h' or '1D'"
    )


def fetch_open_meteo(
    spec: SeriesSpec,
    settings: Settings,
    *,
    since: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> FetchResult:
    """Observed values of ``params.variable`` at ``params.latitude``/``longitude``.

    The archive covers ``history_days`` back to five days ago; the forecast API's
    ``past_days`` covers the rest (keep it at 5 or more, or days go missing) and
    wins where both have a value. Values later
    than ``now`` (hourly) or days not yet over (daily) are forecasts and are left out.

    Args:
        spec: the series; its params validate as ``OpenMeteoParams``.
        settings: supplies the two base URLs and the timeout.
        since: the last stored timestamp; when the forecast API's ``past_days``
            reach back past it the archive is not asked.
        now: the current time (tests pin it); defaults to the clock, in UTC.

    Raises:
        SourceUnavailable: a connection error, timeout, HTTP 429 or 5xx.
        SourceDataError: Open-Meteo refused the request (its reason is quoted),
            or answered with malformed JSON, without the variable, or with no times.
        InvalidInput: the series frequency is neither hourly nor daily.
    """
    p: OpenMeteoParams = spec.typed_params()
    om = settings.sources.open_meteo
    section = _section(spec)
    label = f"open-meteo {p.latitude:g},{p.longitude:g}"
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    today = now.date()
    query: dict[str, Any] = {
        "latitude": p.latitude,
        "longitude": p.longitude,
        section: p.variable,
        "timezone": p.timezone if section == "daily" else "GMT",
    }
    if p.temperature_unit:
        query["temperature_unit"] = p.temperature_unit

    start = today - dt.timedelta(days=p.history_days)
    end = today - dt.timedelta(days=ARCHIVE_LAG_DAYS)
    recent_enough = since is not None and since >= now - dt.timedelta(days=p.past_days)
    frames = []
    if start <= end and not recent_enough:
        archive_q = {**query, "start_date": start.isoformat(), "end_date": end.isoformat()}
        frames.append(_get_frame(om.archive_url, archive_q, section, p.variable, label, om.timeout_s))
    forecast_q = {**query, "past_days": p.past_days, "forecast_days": 1}
    frames.append(_get_frame(om.forecast_url, forecast_q, section, p.variable, label, om.timeout_s))

    merged = _merge(frames)
    now_ts = pd.Timestamp(now)
    observed = merged[merged["ends"] <= now_ts] if section == "daily" else merged[merged["ts"] <= now_ts]
    return tidy_frame(observed[["ts", "value"]], label=f"{spec.key} ({label})")


def _merge(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One row per timestamp: a finite value beats a missing one, then the later frame wins."""
    ranked = [f.assign(_rank=np.isfinite(f["value"]) * 2 * len(frames) + i) for i, f in enumerate(frames)]
    merged = pd.concat(ranked, ignore_index=True).sort_values(["ts", "_rank"], kind="stable")
    return merged.drop_duplicates("ts", keep="last").drop(columns="_rank")


def _get_frame(
    url: str, query: dict[str, Any], section: str, variable: str, label: str, timeout_s: float
) -> pd.DataFrame:
    resp = http_get(url, params=query, timeout_s=timeout_s, label=label)
    host = host_of(url)
    try:
        body = resp.json()
    except ValueError:
        snippet = resp.text[:80].replace("\n", " ")
        raise SourceDataError(f"{label}: {host} answered with malformed JSON: {snippet!r}") from None
    return parse_response(body, section=section, variable=variable, label=f"{label}: {host}")


def parse_response(body: Any, *, section: str, variable: str, label: str) -> pd.DataFrame:
    """Turn one Open-Meteo JSON answer into ``ts`` (UTC), ``ends`` (UTC) and ``value``.

    ``ends`` is when the value's period is over: ``ts`` itself for hourly data,
    the end of the local day for daily data.

    Raises:
        SourceDataError: the answer lacks the section, the variable or times,
            or its lists do not line up.
    """
    if not isinstance(body, dict):
        raise SourceDataError(f"{label} answered with JSON that is not an object")
    if body.get("error"):
        raise SourceDataError(f"{label} refused: {body.get('reason', 'no reason given')}")
    block = body.get(section)
    if not isinstance(block, dict):
        raise SourceDataError(f"{label} answered without a {section!r} block")
    if variable not in block:
        found = ", ".join(k for k in block if k != "time") or "none"
        raise SourceDataError(
            f"{label} answered without {section} variable {variable!r} (found: {found}); "
            "check params.variable"
        )
    times, values = block.get("time") or [], block[variable] or []
    if not times:
        raise SourceDataError(f"{label} returned no {section} times for {variable!r}")
    if len(times) != len(values):
        raise SourceDataError(f"{label} returned {len(times)} times but {len(values)} values")
    try:
        offset = pd.Timedelta(seconds=int(body.get("utc_offset_seconds") or 0))
        if all(isinstance(t, int) for t in times):  # timeformat=unixtime: already UTC
            local = pd.to_datetime(times, unit="s") + offset
        else:
            local = pd.to_datetime(pd.Index(times, dtype="object"), format="ISO8601")
        vals = np.array([np.nan if v is None else v for v in values], dtype="float64")
    except (ValueError, TypeError) as exc:
        raise SourceDataError(f"{label} returned unreadable {section} data ({exc})") from None
    if local.tz is not None:
        raise SourceDataError(f"{label} returned times with an offset; expected local wall-clock")
    if section == "daily":
        ts = local.normalize().tz_localize("UTC")
        ends = (local.normalize() + pd.Timedelta(days=1) - offset).tz_localize("UTC")
    else:
        ts = ends = (local - offset).tz_localize("UTC")
    return pd.DataFrame({"ts": ts.as_unit("us"), "ends": ends.as_unit("us"), "value": vals})
