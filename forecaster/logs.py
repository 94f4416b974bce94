"""Structured logging: one line per event, ``noun.verb key=value ...``."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

logger = logging.getLogger("forecaster")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = str(value)
    if not text or any(c.isspace() for c in text) or '"' in text:
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def log_event(event: str, *, level: int = logging.INFO, exc_info: bool = False, **fields: Any) -> None:
    """Log ``event`` with ``fields`` as ``key=value`` pairs on one line."""
    if not logger.isEnabledFor(level):
        return
    parts = [event] + [f"{k}={_fmt(v)}" for k, v in fields.items() if v is not None]
    logger.log(level, " ".join(parts), exc_info=exc_info)


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", self.converter(record.created))


def configure_logging(level: str | int = "INFO", stream: Any = None) -> None:
    """Send forecaster's events to ``stream`` (stderr) as one UTC-stamped line each."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_UTCFormatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("forecaster")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
