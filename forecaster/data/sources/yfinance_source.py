"""Yahoo Finance prices through the yfinance library.

yfinance keeps process-wide state: one ``YfData`` (session, cookie, crumb), an
in-memory cache of past chart answers and on-disk caches of ticker time zones
and cookies. This module turns the disk caches off, clears the memory cache
before each fetch (so every fetch asks Yahoo again), serialises fetches, and
starts a fresh ``YfData`` whenever ``sources.yfinance.base_url`` changes.

With ``base_url`` set, every request for a ``*.yahoo.com`` host (cookie, crumb,
chart) goes to that host instead, keeping path and query: a mirror, a proxy or
the tests' fake. That needs a plain ``requests`` session, so curl_cffi is turned
off (``YF_DISABLE_CURL_CFFI``) before yfinance is first imported.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import requests
from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

from forecaster.config.settings import SeriesSpec, Settings, YFinanceParams
from forecaster.data.sources.base import FetchResult, tidy_frame
from forecaster.errors import InvalidInput, SourceDataError, SourceUnavailable

YAHOO_HOST = "query2.finance.yahoo.com"
_INTERVALS = {"1D": "1d", "1B": "1d", "1h": "1h", "30min": "30m", "15min": "15m",
              "5min": "5m", "1min": "1m", "1W": "1wk", "1MS": "1mo"}
_FIELDS = {"close": "Close", "adjclose": "Adj Close"}
_TRANSIENT = {"Timeout", "TimeoutError", "ConnectionError", "ConnectTimeout", "ReadTimeout",
              "ChunkedEncodingError", "RemoteDisconnected", "ProxyError", "SSLError",
              "DNSError", "CurlError", "IncompleteRead"}  # the last three: curl_cffi's names

_TRANSIENT_TYPES = (requests.ConnectionError, requests.Timeout, TimeoutError, ConnectionError)

_lock = threading.Lock()
_state: dict[str, Any] = {"base_url": object(), "session": None}


def interval_for(frequency: str) -> str:
    """The yfinance ``interval`` for a series frequency.

    Raises:
        InvalidInput: the frequency has no Yahoo bar size (the message lists those that do).
    """
    want = pd.tseries.frequencies.to_offset(frequency)
    for freq, interval in _INTERVALS.items():
        if pd.tseries.frequencies.to_offset(freq) == want:
            return interval
    raise InvalidInput(
        f"yfinance has no bars for frequency {frequency!r}; use one of {', '.join(_INTERVALS)}"
    )


def fetch_yfinance(spec: SeriesSpec, settings: Settings) -> FetchResult:
    """Closing (or adjusted closing) prices of ``params.ticker`` over ``params.period``.

    Daily, weekly and monthly bars are stamped at midnight UTC of their trading
    day in the exchange's calendar; intraday bars keep their instant, in UTC.

    Raises:
        SourceUnavailable: no connection, a timeout, HTTP 429 or 5xx from Yahoo.
        SourceDataError: Yahoo knows no such ticker, has no prices for it, or
            answered with something that is not a chart.
        InvalidInput: the frequency has no Yahoo bar size, or ``params.period``
            is not one Yahoo accepts.
    """
    p: YFinanceParams = spec.typed_params()
    interval = interval_for(spec.frequency)
    base_url = settings.sources.yfinance.base_url
    host = urlsplit(base_url).netloc if base_url else YAHOO_HOST
    label = f"yfinance {p.ticker}"
    with _lock:
        yf = _import_yfinance(base_url)
        session = _session_for(yf, base_url)
        session.answers.clear()
        session.failures.clear()
        yf.data.YfData.cache_get.cache_clear()
        try:
            hist = yf.Ticker(p.ticker, session=session).history(
                period=p.period, interval=interval, auto_adjust=False, actions=False,
                timeout=settings.sources.yfinance.timeout_s,
            )
        except Exception as exc:  # noqa: BLE001 - yfinance raises whatever its HTTP stack raised; mapped below
            raise _map_error(exc, label=label, host=host, period=p.period,
                             answers=list(session.answers), failures=list(session.failures)) from None
        answers = list(session.answers)
    if hist is None or hist.empty:
        _check_answers(answers, label=label, host=host)
        raise SourceDataError(
            f"{label}: {host} returned no prices (period={p.period}, interval={interval}); "
            "check the ticker symbol and the period"
        )
    column = _FIELDS[p.field]
    if column not in hist.columns:
        found = ", ".join(map(str, hist.columns))
        raise SourceDataError(f"{label}: no {column!r} column in Yahoo's answer (found: {found})")
    index = pd.DatetimeIndex(hist.index)
    if interval[-1] in "mh":
        ts = index.tz_convert("UTC")
    else:  # the trading day's date, at midnight UTC
        ts = index.tz_localize(None).normalize().tz_localize("UTC")
    frame = pd.DataFrame({"ts": ts, "value": hist[column].to_numpy(dtype="float64")})
    return tidy_frame(frame, label=label)


def _import_yfinance(base_url: str | None) -> ModuleType:
    if base_url and "yfinance" not in sys.modules:
        os.environ["YF_DISABLE_CURL_CFFI"] = "1"  # read once, at yfinance's import
    with warnings.catch_warnings():  # undo the filter yfinance adds to the global list
        import yfinance as yf
        import yfinance.cache
        import yfinance.data

    if base_url:  # plain requests is our choice here, not a degraded fallback
        yf._http._fallback_warned = True

    if not getattr(yf, "_forecaster_configured", False):
        yf.config.debug.hide_exceptions = False  # raise instead of logging and returning nothing
        # Its warnings ("Cookie/crumb fetch failed ...") would reach the user's terminal
        # beside our own one-line error for the same failure.
        logging.getLogger("yfinance").setLevel(logging.ERROR)
        # No ticker-timezone or cookie database under ~/.cache: nothing leaks between runs.
        yfinance.cache._TzCacheManager._tz_cache = yfinance.cache._TzCacheDummy()
        yfinance.cache._CookieCacheManager._Cookie_cache = yfinance.cache._CookieCacheDummy()
        yf._forecaster_configured = True
    module: ModuleType = yf  # yfinance is untyped here: name what it is
    return module


def _session_for(yf: ModuleType, base_url: str | None) -> Any:
    """The session for ``base_url``, made (with a fresh YfData) when the URL changed."""
    if _state["base_url"] == base_url and _state["session"] is not None:
        return _state["session"]
    old = _state["session"]
    if base_url:
        session = _recording(requests.Session)()
        session.headers["User-Agent"] = "forecaster (yfinance)"
        adapter = _RewriteAdapter(base_url)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
    else:  # yfinance's own choice: curl_cffi impersonating a browser when it can
        template = yf._http.new_session()
        kwargs = {"impersonate": "chrome"} if yf._http.HAS_CURL_CFFI else {}
        session = _recording(type(template))(**kwargs)
        session.headers.update(template.headers)
        template.close()
    # The singleton YfData holds the previous host's cookie and crumb: drop it,
    # and the next Ticker makes a fresh one around this session.
    getattr(type(yf.data.YfData), "_instances", {}).pop(yf.data.YfData, None)
    _state.update(base_url=base_url, session=session)
    if old is not None:
        old.close()
    return session


def _recording(cls: type) -> type:
    """A subclass of session class ``cls`` noting transport failures and each chart
    answer's status and Yahoo's reason, whatever yfinance makes of them."""

    class RecordingSession(cls):  # type: ignore[misc]  # a class chosen at run time
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.answers: list[tuple[int, str | None]] = []
            self.failures: list[Exception] = []

        def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                resp = super().request(method, url, *args, **kwargs)
            except Exception as exc:  # yfinance may mask it (e.g. as an AttributeError)
                self.failures.append(exc)
                raise
            if "/finance/chart/" in str(url):
                self.answers.append((resp.status_code, _chart_error(resp)))
            return resp

    return RecordingSession


def _chart_error(resp: Any) -> str | None:
    """Yahoo's ``chart.error.description`` in a failed answer, if it gave one."""
    if resp.status_code < 400:
        return None
    try:
        error = resp.json()["chart"]["error"]
        return str(error.get("description") or error.get("code"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class _RewriteAdapter(HTTPAdapter):
    """Sends requests for any ``*.yahoo.com`` host to ``base_url`` (same path and query)."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self._base = urlsplit(base_url.rstrip("/"))

    def send(self, request: PreparedRequest, stream: bool = False,
             timeout: float | tuple[float | None, float | None] | None = None, verify: bool | str = True,
             cert: str | tuple[str, str] | None = None, proxies: dict[str, str] | None = None) -> Response:
        parts = urlsplit(request.url or "")
        host = parts.hostname or ""
        if host == "yahoo.com" or host.endswith(".yahoo.com"):
            request = request.copy()
            request.url = urlunsplit((self._base.scheme, self._base.netloc,
                                      self._base.path + (parts.path or "/"), parts.query, ""))
        return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)


def _check_answers(answers: list[tuple[int, str | None]], *, label: str, host: str) -> None:
    """Raise for what Yahoo's chart answers say: rate limit, server error, no such ticker."""
    if not answers:
        return
    status = answers[-1][0]
    if status == 429:
        raise SourceUnavailable(f"{label}: HTTP 429 from {host} (rate limited); retry later")
    if status >= 500:
        raise SourceUnavailable(f"{label}: HTTP {status} from {host} (server error); retry later")
    for status, reason in reversed(answers):
        if reason:
            raise SourceDataError(f"{label}: HTTP {status} from {host}: {reason}; check the ticker symbol")


def _map_error(exc: Exception, *, label: str, host: str, period: str,
               answers: list[tuple[int, str | None]], failures: list[Exception]) -> Exception:
    """The forecaster error for an exception out of ``Ticker.history``."""
    from yfinance import exceptions as yfe

    if isinstance(exc, yfe.YFRateLimitError):
        return SourceUnavailable(f"{label}: HTTP 429 from {host} (rate limited); retry later")
    try:
        _check_answers(answers, label=label, host=host)
    except (SourceUnavailable, SourceDataError) as known:
        return known
    for cause in [exc, *reversed(failures)]:
        if type(cause).__name__ in _TRANSIENT or isinstance(cause, _TRANSIENT_TYPES):
            return SourceUnavailable(
                f"{label}: cannot reach {host} ({type(cause).__name__}); check the network "
                "(and sources.yfinance.base_url if set), then retry")
    if isinstance(exc, yfe.YFInvalidPeriodError):
        return InvalidInput(f"{label}: params.period = {period!r} is not accepted by Yahoo ({exc})")
    if isinstance(exc, (yfe.YFPricesMissingError, yfe.YFTzMissingError)):
        return SourceDataError(f"{label}: no prices from {host}: {exc}; check the ticker symbol and period")
    if isinstance(exc, ValueError):  # JSON that does not parse
        return SourceDataError(f"{label}: {host} answered with malformed JSON ({exc})")
    return SourceDataError(f"{label}: {host} answered with an unreadable chart ({type(exc).__name__}: {exc})")
