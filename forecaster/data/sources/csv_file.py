"""A CSV file (or http(s) URL) with a time column and a value column."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from forecaster.config.settings import CsvParams, SeriesSpec, Settings
from forecaster.data.sources._http import http_get
from forecaster.data.sources.base import FetchResult, tidy_frame
from forecaster.errors import InvalidInput, SourceDataError

URL_TIMEOUT_S = 30.0


def resolve_path(path: str, settings: Settings) -> Path:
    """``path`` made absolute: relative paths start at the config file's folder.

    Without a config file (``settings.config_path`` is None) they start at the
    current directory.
    """
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    base = Path(settings.config_path).parent if settings.config_path else Path.cwd()
    return base / p


def fetch_csv(spec: SeriesSpec, settings: Settings) -> FetchResult:
    """Read ``params.path`` and tidy its ``time_column`` / ``value_column``.

    Raises:
        SourceDataError: the file is missing, unreadable or empty (naming the path).
        SourceUnavailable: a URL could not be fetched for now.
        InvalidInput: a column is missing (naming it and the columns found), the
            text is not CSV, or a timestamp / value cannot be read.
    """
    p: CsvParams = spec.typed_params()
    is_url = p.path.startswith(("http://", "https://"))
    where = p.path if is_url else str(resolve_path(p.path, settings))
    label = f"csv {where}"
    if is_url:
        text = http_get(p.path, params=None, timeout_s=URL_TIMEOUT_S, label=label).text
        source: io.StringIO | str = io.StringIO(text)
    else:
        source = where
    try:
        raw = pd.read_csv(source, dtype={p.time_column: "string"})
    except FileNotFoundError:
        raise SourceDataError(
            f"{label}: no such file; fix params.path (relative paths start at the "
            "config file's folder)"
        ) from None
    except (IsADirectoryError, PermissionError) as exc:
        raise SourceDataError(f"{label}: cannot be read ({exc.strerror})") from None
    except pd.errors.EmptyDataError:
        raise SourceDataError(f"{label}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{label}: not readable as CSV ({exc})") from None
    missing = [c for c in (p.time_column, p.value_column) if c not in raw.columns]
    if missing:
        found = ", ".join(map(str, raw.columns))
        raise InvalidInput(
            f"{label}: no column {missing[0]!r} (columns found: {found}); "
            "set params.time_column / params.value_column"
        )
    if raw.empty:
        raise SourceDataError(f"{label}: the file has a header but no rows")
    return tidy_frame(raw, label=label, ts_col=p.time_column, value_col=p.value_column,
                      timezone=p.timezone)
