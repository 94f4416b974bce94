"""One GET with httpx, its failures mapped onto the source error tree."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from forecaster.errors import SourceDataError, SourceUnavailable


def host_of(url: str) -> str:
    """The ``host[:port]`` part of ``url``, for messages."""
    return urlsplit(url).netloc or url


def http_get(url: str, *, params: dict[str, Any] | None, timeout_s: float, label: str) -> httpx.Response:
    """GET ``url`` and return the response when it is a 2xx.

    Args:
        url: the endpoint.
        params: query parameters.
        timeout_s: connect/read timeout in seconds.
        label: what is being fetched, to start every message (e.g. ``open-meteo 52.52,13.41``).

    Raises:
        SourceUnavailable: no connection, a timeout, HTTP 429 or 5xx (worth a retry).
        SourceDataError: another 4xx; carries the upstream's ``reason`` when it gave one.
    """
    host = host_of(url)
    try:
        resp = httpx.get(url, params=params, timeout=timeout_s, follow_redirects=True)
    except httpx.TimeoutException:
        raise SourceUnavailable(
            f"{label}: no answer from {host} within {timeout_s:g} s (timeout); retry later"
        ) from None
    except httpx.HTTPError as exc:
        raise SourceUnavailable(
            f"{label}: cannot reach {host} ({type(exc).__name__}: {exc}); "
            "check the URL and the network, then retry"
        ) from None
    status = resp.status_code
    if status == 429:
        raise SourceUnavailable(f"{label}: HTTP 429 from {host} (rate limited); retry later")
    if status >= 500:
        raise SourceUnavailable(f"{label}: HTTP {status} from {host} (server error); retry later")
    if status >= 400:
        raise SourceDataError(f"{label}: HTTP {status} from {host}: {_reason(resp)}")
    return resp


def _reason(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        body = None
    reason = body.get("reason") if isinstance(body, dict) else None
    if isinstance(reason, str):
        return reason
    text = resp.text.strip().replace("\n", " ")
    return text[:200] or resp.reason_phrase or "no reason given"
