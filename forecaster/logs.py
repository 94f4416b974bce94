"""Structured logging: one line per event, ``noun.verb key=value ...``."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
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


FORMAT = "%(asctime)s %(levelname)s %(message)s"


class _UTCFormatter(logging.Formatter):
    def __init__(self, fmt: str | None = FORMAT, datefmt: str | None = None, style: Any = "%", **_: Any) -> None:
        super().__init__(fmt or FORMAT, datefmt, style)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))


class UvicornFormatter(_UTCFormatter):
    """uvicorn's own lines as events: ``http.access client=... method=GET path=/ status=200``
    for requests, ``uvicorn.log msg="..."`` for the rest (start, stop, errors)."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord(record.__dict__)
        args = record.args if isinstance(record.args, tuple) else ()
        if record.name == "uvicorn.access" and len(args) == 5:
            client, method, path, http, status = args
            record.msg = " ".join(["http.access", f"client={_fmt(client)}", f"method={_fmt(method)}",
                                   f"path={_fmt(path)}", f"http={_fmt(http)}", f"status={status}"])
        else:
            record.msg = f"uvicorn.log msg={_fmt(record.getMessage())}"
        record.args = ()
        return super().format(record)


def _handlers(stream: Any, log_file: str | None) -> list[logging.Handler]:
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if log_file:
        Path(log_file).expanduser().parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(Path(log_file).expanduser(), encoding="utf-8"))
    return handlers


def configure_logging(level: str | int = "INFO", stream: Any = None, log_file: str | None = None) -> None:
    """Send forecaster's events to ``stream`` (stderr), and to ``log_file`` when set
    (appended), as one UTC-stamped line each."""
    root = logging.getLogger("forecaster")
    for old in root.handlers:
        old.close()
    handlers = _handlers(stream, log_file)
    for handler in handlers:
        handler.setFormatter(_UTCFormatter())
    root.handlers[:] = handlers
    root.setLevel(level.upper() if isinstance(level, str) else level)
    root.propagate = False


def log_to_file(log_file: str | None) -> None:
    """Also append forecaster's lines to ``log_file`` (after ``configure_logging``); None does nothing."""
    if not log_file:
        return
    root = logging.getLogger("forecaster")
    path = str(Path(log_file).expanduser().resolve())
    if any(isinstance(h, logging.FileHandler) and h.baseFilename == path for h in root.handlers):
        return
    (handler,) = _handlers(None, log_file)[1:]
    handler.setFormatter(_UTCFormatter())
    root.addHandler(handler)


def uvicorn_log_config(level: str = "INFO", log_file: str | None = None) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn: its lines in our one-line format, to stderr
    and to ``log_file`` (appended) like forecaster's own."""
    handlers: dict[str, Any] = {"stderr": {"class": "logging.StreamHandler", "formatter": "uvicorn",
                                           "stream": "ext://sys.stderr"}}
    if log_file:
        handlers["file"] = {"class": "logging.FileHandler", "formatter": "uvicorn",
                            "filename": str(Path(log_file).expanduser()), "encoding": "utf-8"}
    names = list(handlers)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"uvicorn": {"()": "forecaster.logs.UvicornFormatter"}},
        "handlers": handlers,
        "loggers": {
            "uvicorn": {"handlers": names, "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper(), "handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": names, "level": level.upper(), "propagate": False},
        },
    }
