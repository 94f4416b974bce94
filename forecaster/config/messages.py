"""How a rejected configuration reads: one clause per error, naming the key and the bad value.

Loaded from a file, each clause is blamed on the ``FORECASTER_*`` variable that set the
value, or else on the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

ENV_PREFIX = "FORECASTER_"
_MISSING = object()  # no value at that place: distinct from a value of None


def _loc(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as the key a user writes: ``series[0].params.ticker``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "literal[", "constrained-")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _value_at(data: Any, loc: tuple[Any, ...]) -> Any:
    """The value the user gave at ``loc`` in the raw data, or ``_MISSING``."""
    cur = data
    for part in loc:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return cur


def _env_overrides() -> dict[tuple[str, ...], str]:
    """Setting paths given in the environment, each with the variable that gives it."""
    out: dict[tuple[str, ...], str] = {}
    for name in os.environ:
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper != "FORECASTER_CONFIG":
            out[tuple(upper[len(ENV_PREFIX):].lower().split("__"))] = name
    return out


def _env_for(loc: tuple[Any, ...], env: dict[tuple[str, ...], str]) -> str | None:
    """The variable that set ``loc`` or a table above it, if one did."""
    path = tuple(str(p).lower() for p in loc)
    for n in range(len(path), 0, -1):
        if path[:n] in env:
            return env[path[:n]]
    return None


def describe_errors(exc: ValidationError, *, prefix: str = "", data: Any = None, file: Path | None = None) -> str:
    """One clause per error, naming the key and the bad value; with ``file``, each clause
    is blamed on the environment variable that set the value, or else on the file."""
    env = _env_overrides() if file is not None else {}
    lines: list[str] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = _loc(((prefix,) if prefix else ()) + loc)
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        var = _env_for(loc, env) if env else None
        origin = "" if file is None or var else f"{file}: "
        if var:  # blamed on the variable, not the file
            where = f"{where} (from environment variable {var})"
        if err["type"] == "missing":
            lines.append(f"{origin}{where} is missing")
            continue
        value = _value_at(data, loc) if data is not None and var is None else err.get("input", _MISSING)
        if value is _MISSING:
            value = err.get("input", _MISSING)
        if var is not None and value is not _MISSING and not isinstance(value, dict | list):
            where, _, source = where.partition(" (from ")
            lines.append(f"{where} = {value!r} (from {source}: {msg}")
            continue
        if err["type"] == "extra_forbidden":
            lines.append(f"{origin}{where} is not a known setting")
        elif isinstance(value, dict) and msg.startswith("params"):
            lines.append(f"{origin}{where}.{msg}")  # nested message already names the key
        elif value is _MISSING or isinstance(value, dict):
            lines.append(f"{origin}{where}: {msg}")
        else:
            lines.append(f"{origin}{where} = {value!r}: {msg}")
    return "; ".join(lines)
