"""The one reader of pushed observations: a JSON list of ``{ts, value}`` or a ``ts,value`` CSV, by the same rules.

    parse_json_rows(body) -> list[(ts, value)]     # bytes of a JSON list
    parse_csv_rows(text)  -> list[(ts, value)]     # a CSV with the header ts,value

* ``ts``: ISO-8601 extended text with a UTC offset: ``2024-01-01T00:00:00Z``,
  ``2024-01-01T01:00+01:00``; seconds and up to six decimals are optional, a
  space may stand for the ``T`` (as pandas writes CSV). Refused: epoch numbers
  (seconds or milliseconds cannot be told apart), ISO basic (``20240101T000000Z``),
  week and ordinal dates, and times without an offset (they name no instant).
* ``value``: a finite number, written as JSON writes numbers (``1``, ``-2.5``,
  ``3e4``): a JSON number, or that text in a CSV cell. Refused: booleans, null
  or an empty cell, text (``"1.5"`` in JSON, ``1,5``, ``NaN``), and numbers
  too large for a float.

Both stop at the first bad row, naming it (row 1 is the first row sent, or the
first after the CSV header): ``InvalidInput`` (422), so nothing is stored.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
from typing import Any

from pydantic import TypeAdapter, ValidationError

from forecaster.errors import InvalidInput

Row = tuple[dt.datetime, float]

_TS = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?P<offset>Z|[+-]\d{2}:\d{2})?")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_NON_FINITE_WORDS = frozenset({"nan", "-nan", "+nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})
_EXAMPLE = "such as '2024-01-01T00:00:00Z' or '2024-01-01T01:00:00+01:00'"
_JSON = TypeAdapter(Any)  # pydantic's parser: fast on number-heavy bodies, and bounded in depth


def parse_ts(raw: object, row: int) -> dt.datetime:
    """An aware timestamp from the ``ts`` of row ``row`` (JSON value or CSV text)."""
    is_number = isinstance(raw, (int, float)) and not isinstance(raw, bool)
    if is_number or (isinstance(raw, str) and _NUMBER.fullmatch(raw)):
        raise InvalidInput(f"row {row}: ts {raw} is a number; send ISO-8601 text with a UTC offset, {_EXAMPLE} "
                           "(epoch numbers are not read: seconds and milliseconds cannot be told apart)")
    if raw is None or raw == "":
        raise InvalidInput(f"row {row}: ts is missing; send ISO-8601 text with a UTC offset, {_EXAMPLE}")
    if not isinstance(raw, str):
        raise InvalidInput(f"row {row}: ts {raw!r} is not text; send ISO-8601 with a UTC offset, {_EXAMPLE}")
    match = _TS.fullmatch(raw)
    if match is not None and match["offset"] is None:
        raise InvalidInput(f"row {row}: timestamp {raw!r} has no UTC offset; add one, {_EXAMPLE}")
    try:
        if match is None:
            raise ValueError(raw)
        return dt.datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"row {row}: timestamp {raw!r} cannot be read; use ISO-8601 extended format "
                           f"with a UTC offset, {_EXAMPLE}") from None


def parse_value(raw: object, row: int) -> float:
    """A finite float from the ``value`` of row ``row`` (JSON value or CSV text)."""
    if raw is None or raw == "":
        raise InvalidInput(f"row {row}: value is missing; every row needs a finite number")
    if isinstance(raw, bool):
        raise InvalidInput(f"row {row}: value {raw!r} is a boolean, not a number")
    if isinstance(raw, str):
        if raw.lower() in _NON_FINITE_WORDS:
            raise InvalidInput(f"row {row}: value {raw!r} is not a finite number")
        if not _NUMBER.fullmatch(raw):
            raise InvalidInput(f"row {row}: value {raw!r} is not a number (write it as JSON does: 1, -2.5, 3e4)")
        raw = float(raw)
    if not isinstance(raw, (int, float)):
        raise InvalidInput(f"row {row}: value {raw!r} is not a number")
    try:
        value = float(raw)
    except OverflowError:  # a JSON integer past what a float holds
        value = math.inf
    if not math.isfinite(value):
        raise InvalidInput(f"row {row}: value {raw!r} is not a finite number")
    return value


def parse_json_rows(body: bytes) -> list[Row]:
    """Rows of a JSON body: a list of objects with exactly the keys ``ts`` and ``value``."""
    try:
        data = _JSON.validate_json(body)
    except ValidationError as exc:  # malformed, or nested past the parser's depth limit
        reason = (exc.errors()[0].get("ctx") or {}).get("error", exc.errors()[0]["msg"])
        raise InvalidInput(f"the body is not valid JSON: {reason}") from None
    if not isinstance(data, list):
        raise InvalidInput(f"the body is a JSON {type(data).__name__}, not a list: send a JSON list of "
                           "{\"ts\", \"value\"} objects")
    out: list[Row] = []
    for n, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            raise InvalidInput(f"row {n}: {_short(item)} is not an object {{\"ts\": ..., \"value\": ...}}")
        extra = sorted(set(item) - {"ts", "value"})
        if extra:
            raise InvalidInput(f"row {n}: unknown field {extra[0]!r}; a row has only ts and value")
        out.append((parse_ts(item.get("ts"), n), parse_value(item.get("value"), n)))
    return out


def parse_csv_rows(text: str) -> list[Row]:
    """Rows of a CSV body whose header names the columns ``ts`` and ``value`` (others are ignored)."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = [h.strip().lower() for h in next(reader, [])]
        if "ts" not in header or "value" not in header:
            raise InvalidInput(f"CSV header must name the columns ts,value; got {','.join(header) or 'nothing'!r}")
        i_ts, i_value = header.index("ts"), header.index("value")
        out: list[Row] = []
        for n, row in enumerate(reader, start=1):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) <= max(i_ts, i_value):
                raise InvalidInput(f"row {n}: {len(row)} columns; expected ts,value")
            out.append((parse_ts(row[i_ts].strip(), n), parse_value(row[i_value].strip(), n)))
    except csv.Error as exc:  # a NUL byte, an unclosed quote at the end
        raise InvalidInput(f"the CSV body cannot be read: {exc} (line {reader.line_num})") from None
    return out


def _short(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."
