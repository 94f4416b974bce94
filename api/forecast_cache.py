"""Serialised stored forecasts, reused for as long as the database provably has not changed.

``GET /v1/series/{key}/forecast`` is the hot path. Through the ORM it costs a
threadpool hop and three queries per request; most requests would get the
same bytes as the one before. This cache keeps the response body per series
key together with a *change token* taken before the body was read
(``forecaster.usecases.forecasting.change_probe``: SQLite's ``PRAGMA data_version``; on PostgreSQL the row
versions of the rows the read uses, in one indexed statement), and serves it
only while the token is unchanged, so the next GET after a promotion, a
rollback, an ingest or a retrain — by this process or any other, on any
replica — sees the new forecast. Nothing here is time-based. Where no token can
be taken (in-memory SQLite, the database unreachable) every request reads.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from api.schemas import ForecastOut
from forecaster.usecases.forecasting import change_probe


@dataclass(frozen=True)
class CachedForecast:
    """A ready response body (the whole path, JSON), the method label the metrics need, and the
    forecast it was made from (what ``?h=`` and CSV answers are cut from)."""

    body: bytes
    method: str
    forecast: ForecastOut


class ForecastCache:
    """Response bodies by series key, each valid for the change token it was read under."""

    def __init__(self, engine: Engine) -> None:
        self._entries: dict[str, tuple[Hashable, CachedForecast]] = {}
        self._lock = threading.Lock()
        self._probe = change_probe(engine)

    async def token(self, key: str) -> Hashable | None:
        """The change token of ``key``'s forecast now, or None when none can be taken (nothing is cached)."""
        return None if self._probe is None else await self._probe.token(key)

    def get(self, key: str, token: Hashable | None) -> CachedForecast | None:
        """The cached body of ``key`` if it was read under ``token``."""
        if token is None:
            return None
        entry = self._entries.get(key)
        return entry[1] if entry is not None and entry[0] == token else None

    def put(self, key: str, token: Hashable | None, forecast: ForecastOut) -> CachedForecast:
        """Serialise ``forecast`` (read after ``token`` was taken) and keep it under that token."""
        cached = CachedForecast(forecast.model_dump_json().encode(), forecast.method, forecast)
        if token is not None:
            with self._lock:
                self._entries[key] = (token, cached)
        return cached

    async def aclose(self) -> None:
        with self._lock:
            self._entries.clear()
        if self._probe is not None:
            await self._probe.aclose()
