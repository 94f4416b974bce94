"""What every source returns, and the one function that makes a frame fit to store.

A source answers with a ``FetchResult``: a frame of ``ts`` (aware UTC) and ``value``
(finite float64), sorted and unique, plus how many rows were dropped and why.
``tidy_frame`` is the only way a frame gets there, for fetched and pushed data alike.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from forecaster.errors import InvalidInput

_NAN_WORDS = frozenset({"", "nan", "-nan", "+nan", "na", "n/a", "null", "none",
                        "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})


@dataclass(frozen=True)
class FetchResult:
    """Observations from one fetch, ready to upsert.

    Attributes:
        frame: columns ``ts`` (datetime64, UTC) and ``value`` (float64); sorted
            ascending, unique ``ts``, every value finite.
        rejected: rows dropped on the way (non-finite values, duplicates, no time).
        notes: one human-readable line per kind of dropped row.
    """

    frame: pd.DataFrame
    rejected: int = 0
    notes: tuple[str, ...] = ()


def tidy_frame(
    frame: pd.DataFrame,
    *,
    label: str,
    ts_col: str = "ts",
    value_col: str = "value",
    timezone: str | None = None,
) -> FetchResult:
    """Make ``frame`` storable: aware UTC ``ts``, finite float ``value``, sorted, unique.

    Naive timestamps are read as wall-clock time in ``timezone``; text with an
    offset (``Z``, ``+01:00``) keeps its own. Rows whose value is missing, NaN or
    infinite are dropped, and so are rows with no timestamp; of rows sharing a
    timestamp the last one wins. Every drop is counted in ``rejected`` and told
    in ``notes``.

    Args:
        frame: the raw observations.
        label: names the data in error messages (a series key, a file path).
        ts_col: the column holding timestamps.
        value_col: the column holding values.
        timezone: IANA zone for timestamps that carry no offset.

    Raises:
        InvalidInput: a column is missing, a timestamp or value cannot be parsed
            (naming the first bad one), naive timestamps arrive without
            ``timezone``, or ``timezone`` is not a known zone.
    """
    for col, what in ((ts_col, "time"), (value_col, "value")):
        if col not in frame.columns:
            found = ", ".join(map(str, frame.columns)) or "none"
            raise InvalidInput(f"{label}: no {what} column {col!r} (columns found: {found})")
    ts = _to_utc(frame[ts_col].reset_index(drop=True), label=label, timezone=timezone)
    value = _to_float(frame[value_col].reset_index(drop=True), label=label)
    notes: list[str] = []

    no_time = ts.isna()
    bad_value = ~np.isfinite(value.to_numpy()) & ~no_time.to_numpy()
    if n := int(no_time.sum()):
        notes.append(f"dropped {n} rows with no timestamp")
    if n_bad := int(bad_value.sum()):
        notes.append(f"dropped {n_bad} rows with NaN/inf values")
    keep = ~no_time.to_numpy() & ~bad_value
    out = pd.DataFrame({"ts": ts[keep], "value": value[keep]})
    out = out.sort_values("ts", kind="stable")
    dup = out["ts"].duplicated(keep="last")
    if n_dup := int(dup.sum()):
        notes.append(f"{n_dup} duplicate timestamps: kept the last")
    out = out[~dup].reset_index(drop=True)
    out["ts"] = out["ts"].dt.as_unit("us")
    return FetchResult(frame=out, rejected=len(frame) - len(out), notes=tuple(notes))


def _zone(timezone: str, label: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"{label}: timezone {timezone!r} is not an IANA zone (e.g. 'UTC', 'Europe/Berlin')"
        ) from None


def _to_utc(raw: pd.Series, *, label: str, timezone: str | None) -> pd.Series:
    """Parse ``raw`` into an aware UTC series; missing entries become NaT."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(raw.dtype):
        return _localise(raw, label=label, timezone=timezone)
    if pd.api.types.is_numeric_dtype(raw.dtype) and raw.notna().any():
        first = raw[raw.notna()].iloc[0]
        raise InvalidInput(
            f"{label}: timestamp {first!r} is a number; give ISO-8601 text such as "
            "'2024-01-01T00:00:00Z'"
        )
    text = raw.astype("object").where(raw.notna(), None)
    text = text.map(lambda v: None if isinstance(v, str) and not v.strip() else v)
    try:
        with warnings.catch_warnings():  # pandas 2: mixed offsets parse to objects with a FutureWarning; handled below
            warnings.simplefilter("ignore", FutureWarning)
            parsed = pd.to_datetime(text, format="ISO8601")
    except (ValueError, TypeError, OverflowError):
        parsed = _parse_each(text, label=label)
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        return parsed.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(parsed.dtype):
        return _localise(parsed, label=label, timezone=timezone)
    return _mixed_to_utc(parsed, label=label, timezone=timezone)


def _parse_each(text: pd.Series, *, label: str) -> pd.Series:
    """Element-wise parse (mixed offsets or formats); raise on the first bad value."""
    out: list[Any] = []
    for v in text:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append(pd.NaT)
            continue
        try:
            ts = pd.Timestamp(v)
        except (ValueError, TypeError, OverflowError):
            ts = pd.NaT
        if ts is pd.NaT:
            raise InvalidInput(
                f"{label}: timestamp {v!r} cannot be read; use ISO-8601 such as "
                "'2024-01-01T00:00:00Z'"
            )
        out.append(ts)
    return pd.Series(out, index=text.index, dtype="object")


def _mixed_to_utc(parsed: pd.Series, *, label: str, timezone: str | None) -> pd.Series:
    """Timestamps with different offsets, some perhaps naive, as one UTC series."""
    naive = parsed.map(lambda t: t is not pd.NaT and t.tzinfo is None).astype(bool)
    aware = parsed.notna() & ~naive
    out = pd.Series(pd.NaT, index=parsed.index, dtype="datetime64[us, UTC]")
    if aware.any():  # microseconds: a stamp past 2262 (which nanoseconds cannot hold) still reaches validation
        utc = [t.tz_convert("UTC").tz_localize(None).as_unit("us").to_datetime64() for t in parsed[aware]]
        out[aware] = pd.DatetimeIndex(np.array(utc, dtype="datetime64[us]")).tz_localize("UTC")
    if naive.any():
        local = pd.Series(pd.to_datetime(parsed[naive].tolist()), index=parsed.index[naive])
        out[naive] = _localise(local, label=label, timezone=timezone).dt.as_unit("us")
    return out


def _refuse_naive(example: Any, label: str) -> InvalidInput:
    return InvalidInput(
        f"{label}: timestamp {str(example)!r} has no UTC offset; add one "
        "('2024-01-01T00:00:00Z') or set a timezone for this data"
    )


def _localise(naive: pd.Series, *, label: str, timezone: str | None) -> pd.Series:
    if not naive.notna().any():
        return naive.dt.tz_localize("UTC")
    if timezone is None:
        raise _refuse_naive(naive[naive.notna()].iloc[0], label)
    zone = _zone(timezone, label)
    local = naive.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
    unclear = local.isna() & naive.notna()
    if unclear.any():
        raise InvalidInput(
            f"{label}: local time '{naive[unclear].iloc[0]}' is ambiguous or does not exist "
            f"in {timezone} (a daylight-saving change); give timestamps with a UTC offset"
        )
    return local.dt.tz_convert("UTC")


def _to_float(raw: pd.Series, *, label: str) -> pd.Series:
    """Values as float64; missing/NaN spellings become NaN, other text is refused."""
    if pd.api.types.is_bool_dtype(raw.dtype):
        raise InvalidInput(f"{label}: values are true/false, not numbers")
    if pd.api.types.is_numeric_dtype(raw.dtype):
        return raw.astype("float64")
    values = pd.to_numeric(raw, errors="coerce").astype("float64")
    suspect = values.isna() & raw.notna()
    for v in raw[suspect]:
        if isinstance(v, bool) or str(v).strip().lower() not in _NAN_WORDS:
            raise InvalidInput(f"{label}: value {v!r} is not a number")
    return values
