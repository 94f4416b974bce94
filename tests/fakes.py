"""Fake Yahoo Finance and Open-Meteo servers: real HTTP over loopback, real bundled data.

Each fake listens on ``127.0.0.1:0`` in a daemon thread, records every request
(``.requests``: method, path, query) and answers in the upstream's documented
format. Set ``.delay_s`` to answer late and ``.mode`` to make it fail: ``"429"``,
``"500"``, ``"malformed"``, ``"empty"``, ``"unknown"`` (Yahoo's 404 chart error,
Open-Meteo's 400 with a reason) or, for Open-Meteo only, ``"no_variable"``.

    from tests.fakes import fake_yahoo, fake_open_meteo   # pytest fixtures
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pytest

SNAPSHOTS = Path(__file__).resolve().parents[1] / "forecaster" / "snapshots"
Answer = tuple[int, dict[str, str], bytes]


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


class FakeServer:
    """A loopback HTTP server whose answers come from ``answer()``."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.mode = "ok"
        self.delay_s = 0.0  # answer this late (timeouts)
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                rec = Recorded(self.command, parts.path, dict(parse_qsl(parts.query)))
                with fake._lock:
                    fake.requests.append(rec)
                time.sleep(fake.delay_s)
                status, headers, body = fake.answer(rec)
                try:
                    self.send_response(status)
                    for k, v in {**headers, "Content-Length": str(len(body))}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def paths(self, prefix: str = "/") -> list[Recorded]:
        """Recorded requests whose path starts with ``prefix``."""
        with self._lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def answer(self, req: Recorded) -> Answer:
        raise NotImplementedError


# ---------------------------------------------------------------- Yahoo Finance


class FakeYahoo(FakeServer):
    """``/v8/finance/chart/{symbol}`` over the last 300 real S&P 500 closes.

    ``bars`` holds what is served: ``date`` (trading day), ``close`` and
    ``adjclose`` (close scaled by a slowly drifting factor, so the two differ).
    Daily bars are stamped 09:30 New York time, as Yahoo does; ``interval=1h``
    serves ``hourly`` (seven bars a day over the last five trading days).
    """

    CRUMB = "fAkEcRuMb1"
    TZ = "America/New_York"

    def __init__(self) -> None:
        super().__init__()
        snap = pd.read_csv(SNAPSHOTS / "sp500_daily_close.csv").tail(300).reset_index(drop=True)
        close = snap["value"].to_numpy(dtype="float64")
        factor = 0.97 + 0.03 * np.arange(len(close)) / len(close)
        self.bars = pd.DataFrame({
            "date": pd.to_datetime(snap["ts"]).dt.date,
            "close": close,
            "adjclose": np.round(close * factor, 4),
        })
        days = self.bars.tail(5)
        rows = []
        for i, (day, c) in enumerate(zip(days["date"], days["close"])):
            for h in range(7):
                local = pd.Timestamp(day).tz_localize(self.TZ) + pd.Timedelta(hours=9, minutes=30 + 60 * h)
                rows.append((local.tz_convert("UTC"), round(c + 0.5 * (h - 3) + i, 2)))
        self.hourly = pd.DataFrame(rows, columns=["ts", "close"])

    def answer(self, req: Recorded) -> Answer:
        if req.path in ("/", ""):  # fc.yahoo.com: the cookie
            return 200, {"Set-Cookie": "A3=d=FAKE; Domain=.yahoo.com; Path=/; Max-Age=3600",
                         "Content-Type": "text/html"}, b"<html>ok</html>"
        if req.path == "/v1/test/getcrumb":
            return 200, {"Content-Type": "text/plain"}, self.CRUMB.encode()
        if not req.path.startswith("/v8/finance/chart/"):
            return _json(404, {"finance": {"result": None, "error": {"code": "Not Found"}}})
        symbol = req.path.rsplit("/", 1)[-1]
        if self.mode == "429":
            return 429, {"Content-Type": "text/plain"}, b"Too Many Requests"
        if self.mode == "500":
            return 500, {"Content-Type": "text/html"}, b"<html>Internal Server Error</html>"
        if self.mode == "malformed":
            return 200, {"Content-Type": "application/json"}, b'{"chart": {"result": [{"meta": '
        if self.mode == "unknown":
            return _json(404, {"chart": {"result": None, "error": {
                "code": "Not Found", "description": "No data found, symbol may be delisted"}}})
        return _json(200, {"chart": {"result": [self._result(symbol, req.query)], "error": None}})

    def _result(self, symbol: str, query: dict[str, str]) -> dict[str, Any]:
        interval = query.get("interval", "1d")
        rng = query.get("range", "5y")
        if interval == "1h":
            stamps = [int(t.timestamp()) for t in self.hourly["ts"]]
            close = adj = self.hourly["close"].tolist()
        else:
            bars = self.bars.tail(1) if rng == "1d" else self.bars
            stamps = [int((pd.Timestamp(d).tz_localize(self.TZ) + pd.Timedelta(hours=9, minutes=30))
                          .timestamp()) for d in bars["date"]]
            close, adj = bars["close"].tolist(), bars["adjclose"].tolist()
        last = stamps[-1]
        period = {"timezone": "EST", "gmtoffset": -18000, "start": last, "end": last + 23400}
        meta = {
            "currency": "USD", "symbol": symbol, "exchangeName": "SNP", "fullExchangeName": "SNP",
            "instrumentType": "INDEX", "firstTradeDate": -1325583000, "regularMarketTime": last,
            "hasPrePostMarketData": False, "gmtoffset": -18000, "timezone": "EST",
            "exchangeTimezoneName": self.TZ, "regularMarketPrice": close[-1],
            "chartPreviousClose": close[0], "priceHint": 2, "dataGranularity": interval,
            "range": rng, "currentTradingPeriod": {"pre": period, "regular": period, "post": period},
            "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
        }
        if interval == "1h":
            days = sorted({pd.Timestamp(t, unit="s").tz_localize("UTC").tz_convert(self.TZ).date()
                           for t in stamps})
            meta["tradingPeriods"] = [[{
                "timezone": "EST", "gmtoffset": -18000,
                "start": int((pd.Timestamp(d).tz_localize(self.TZ) + pd.Timedelta(hours=9.5)).timestamp()),
                "end": int((pd.Timestamp(d).tz_localize(self.TZ) + pd.Timedelta(hours=16)).timestamp()),
            }] for d in days]
        if self.mode == "empty":
            return {"meta": meta, "indicators": {"quote": [{}], "adjclose": [{}]}}
        quote = {"open": close, "high": [c * 1.002 for c in close], "low": [c * 0.998 for c in close],
                 "close": close, "volume": [1_000_000 + i for i in range(len(close))]}
        return {"meta": meta, "timestamp": stamps,
                "indicators": {"quote": [quote], "adjclose": [{"adjclose": adj}]}}


# ---------------------------------------------------------------- Open-Meteo


class FakeOpenMeteo(FakeServer):
    """``/v1/archive`` and ``/v1/forecast``, hourly or daily, from the real SF temperatures.

    The value at a UTC hour is ``snapshot[hours since 2010-01-01 mod 8759]`` in
    degrees F (converted to C unless ``temperature_unit=fahrenheit``); a daily
    value is the mean of its local day's hours. Like Open-Meteo, times are local
    wall-clock text in the requested ``timezone`` with today's offset applied to
    the whole answer (``utc_offset_seconds``). ``forecast_offset`` is added to
    forecast-API values and the first ``forecast_nulls`` forecast hours are null,
    to test merging.
    """

    EPOCH = pd.Timestamp("2010-01-01T00:00:00Z")

    def __init__(self) -> None:
        super().__init__()
        self.temps_f = pd.read_csv(SNAPSHOTS / "sf_temp_hourly.csv")["value"].to_numpy("float64")
        self.forecast_offset = 0.0
        self.forecast_nulls = 0
        self.now: dt.datetime | None = None  # pin the fake's clock

    @staticmethod
    def offset_of(timezone: str, at: dt.datetime) -> int:
        """Seconds east of UTC that Open-Meteo applies for ``timezone`` today."""
        if timezone in ("GMT", "UTC", "auto"):
            return 0
        return int(ZoneInfo(timezone).utcoffset(at.replace(tzinfo=None)).total_seconds())

    def hourly_value(self, utc: pd.Timestamp, unit: str | None = None) -> float:
        f = self.temps_f[int((utc - self.EPOCH) / pd.Timedelta(hours=1)) % len(self.temps_f)]
        return float(f) if unit == "fahrenheit" else round((f - 32) * 5 / 9, 1)

    def daily_value(self, day: dt.date, offset_s: int, unit: str | None = None) -> float:
        start = pd.Timestamp(day).tz_localize("UTC") - pd.Timedelta(seconds=offset_s)
        return round(float(np.mean([self.hourly_value(start + pd.Timedelta(hours=h), unit)
                                    for h in range(24)])), 2)

    def answer(self, req: Recorded) -> Answer:
        q = req.query
        if req.path not in ("/v1/archive", "/v1/forecast"):
            return _json(404, {"error": True, "reason": f"Unknown path {req.path}"})
        if self.mode == "429":
            return _json(429, {"error": True, "reason": "Too many API requests"})
        if self.mode == "500":
            return 500, {"Content-Type": "text/html"}, b"<html>502 Bad Gateway</html>"
        if self.mode == "malformed":
            return 200, {"Content-Type": "application/json"}, b'{"latitude": 52.5, "hourly": {"ti'
        lat, lon = float(q.get("latitude", "nan")), float(q.get("longitude", "nan"))
        if self.mode == "unknown" or not (-90 <= lat <= 90):
            return _json(400, {"error": True,
                               "reason": f"Latitude must be in range of -90 to 90°. Given: {lat}."})
        timezone = q.get("timezone", "GMT")
        now = self.now or dt.datetime.now(dt.UTC)
        try:
            offset = self.offset_of(timezone, now)
        except (ZoneInfoNotFoundError, ValueError):
            return _json(400, {"error": True, "reason": f"Invalid timezone {timezone}"})
        section = "daily" if "daily" in q else "hourly"
        variable = q.get(section, "")
        if req.path == "/v1/archive":
            first = dt.date.fromisoformat(q["start_date"])
            last = dt.date.fromisoformat(q["end_date"])
        else:
            today = (now + dt.timedelta(seconds=offset)).date()
            first = today - dt.timedelta(days=int(q.get("past_days", 0)))
            last = today + dt.timedelta(days=int(q.get("forecast_days", 7)) - 1)
        block = self._block(section, variable, first, last, offset, q, req.path == "/v1/forecast")
        if self.mode == "empty":
            block = {"time": [], variable: []}
        elif self.mode == "no_variable":
            block.pop(variable)
        return _json(200, {
            "latitude": round(lat, 2), "longitude": round(lon, 2), "generationtime_ms": 0.1,
            "utc_offset_seconds": offset, "timezone": timezone if timezone != "auto" else "GMT",
            "timezone_abbreviation": "LOCAL", "elevation": 10.0,
            f"{section}_units": {"time": "iso8601", variable: "°C"}, section: block,
        })

    def _block(self, section: str, variable: str, first: dt.date, last: dt.date, offset: int,
               q: dict[str, str], forecast: bool) -> dict[str, list[Any]]:
        unit = q.get("temperature_unit")
        extra = self.forecast_offset if forecast else 0.0
        times: list[str] = []
        values: list[float | None] = []
        if section == "daily":
            for day in pd.date_range(first, last, freq="D").date:
                times.append(day.isoformat())
                values.append(round(self.daily_value(day, offset, unit) + extra, 2))
        else:
            local = pd.date_range(pd.Timestamp(first), pd.Timestamp(last) + pd.Timedelta(hours=23), freq="h")
            for i, t in enumerate(local):
                times.append(t.strftime("%Y-%m-%dT%H:%M"))
                utc = t.tz_localize("UTC") - pd.Timedelta(seconds=offset)
                null = forecast and i < self.forecast_nulls
                values.append(None if null else round(self.hourly_value(utc, unit) + extra, 2))
        return {"time": times, variable: values}


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def fake_yahoo() -> Iterator[FakeYahoo]:
    """A started FakeYahoo; point ``sources.yfinance.base_url`` at ``fake_yahoo.url``."""
    fake = FakeYahoo().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake_open_meteo() -> Iterator[FakeOpenMeteo]:
    """A started FakeOpenMeteo; its ``url`` + ``/v1/archive`` and ``/v1/forecast``."""
    fake = FakeOpenMeteo().start()
    try:
        yield fake
    finally:
        fake.stop()
