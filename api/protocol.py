"""uvicorn's httptools protocol with a bound on each request's head (request line and headers).

uvicorn bounds neither the size of a head read by httptools nor the time it may take:
a header that never ends grows the server's memory without limit, and a connection
that sends a head byte by byte (or nothing at all) stays open forever. Here:

- a head over ``MAX_HEAD_BYTES`` is answered 431 and the connection closed;
- a head not complete ``HEAD_TIMEOUT_S`` after its first byte (or after the connection
  opened) is answered 408 and the connection closed (closed silently when nothing came).

Bodies are bounded per route by the app (api/limits.py); idle keep-alive connections
by uvicorn's ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import http
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

MAX_HEAD_BYTES = 64 * 1024  # request line and headers of one request (nginx: 4 x 8 KiB buffers, Node: 16 KiB)
HEAD_TIMEOUT_S = 10.0  # from a head's first byte (or the connection's start) to its end
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this (uvicorn's default, made explicit)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that refuses a head over ``MAX_HEAD_BYTES`` or slower than ``HEAD_TIMEOUT_S``."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._in_head = True  # the next bytes belong to a request line and headers
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn's own signature
        super().connection_made(transport)
        self._arm()  # a connection that never completes a head is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)  # may count a previous body's tail: a little early, never late
            if self._head_timer is None:
                self._arm()
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._answer_and_close(431, f"request line and headers over {MAX_HEAD_BYTES} bytes")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:  # a pipelined head behind a slow answer
            self._arm()
            return
        if self._head_bytes:
            self._answer_and_close(408, f"request line and headers not complete within {HEAD_TIMEOUT_S:g} s")
        else:
            self.transport.close()

    def _answer_and_close(self, status: int, reason: str) -> None:
        self.logger.warning("Refused a request head: %s.", reason)
        body = reason.encode("ascii")
        self.transport.write(b"".join([
            f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode("ascii"),
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n", body,
        ]))
        self.transport.close()


def server_options() -> dict[str, Any]:
    """The uvicorn options every API server runs with (``forecaster serve``, its workers, the tests)."""
    return {"http": BoundedHttpToolsProtocol, "timeout_keep_alive": KEEP_ALIVE_S}
