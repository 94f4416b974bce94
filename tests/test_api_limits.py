"""What a hostile or careless client cannot do to the API: stall it with big bodies, and make a
dropped upload look like a server error. The real app under uvicorn on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api_server import (  # noqa: F401
    ADMIN_KEY,
    TRAINED,
    api_template,
    copy_database,
    free_socket,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
PROBLEM = "application/problem+json"
BIG_BYTES = 40 * 1024 * 1024  # what a stall is made of: ~3 s of parsing on the event loop before the caps
HEAD_TIMEOUT_S = 1.5  # the served API's head timeout here (10 s in production), to keep the tests short
SERVE = """
import sys
import api.protocol
api.protocol.HEAD_TIMEOUT_S = float(sys.argv[3])
from api.server import serve
from forecaster.config.loading import load_settings
serve(load_settings(sys.argv[1]), port=int(sys.argv[2]))
"""


@dataclass
class Served:
    """``forecaster serve``'s code in a process of its own: its URL, process and log file."""

    url: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024


@pytest.fixture(scope="module")
def served(api_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:  # noqa: F811
    """The API served by ``api.server.serve`` (uvicorn, httptools) in a subprocess, logging at DEBUG."""
    folder = tmp_path_factory.mktemp("served")
    url = f"sqlite:///{folder / 'api.db'}"
    copy_database(api_template, url)
    config = folder / "forecaster.toml"
    config.write_text(f'database_url = "{url}"\napi_keys = ["{ADMIN_KEY}"]\nlog_level = "DEBUG"\n\n'
                      f'[[series]]\nkey = "{TRAINED}"\nsource = "sine"\nfrequency = "1h"\n', encoding="utf-8")
    with free_socket() as sock:
        port = sock.getsockname()[1]
    log = folder / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORECASTER_")}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-c", SERVE, str(config), str(port), str(HEAD_TIMEOUT_S)],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Served(f"http://127.0.0.1:{port}", "127.0.0.1", port, process, log)
    try:
        def up() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout_s=60)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)


def _big_keys_body(size: int = BIG_BYTES) -> bytes:
    """A valid JSON ``{"keys": [...]}`` of about ``size`` bytes."""
    key = b'"sine:trained",'
    return b'{"keys": [' + key * (size // len(key)) + b'"sine:trained"]}'


def _big_windows_body(size: int = BIG_BYTES) -> bytes:
    """A valid JSON predict body of about ``size`` bytes (24-value windows)."""
    row = b"[" + b", ".join([b"0.123456789"] * 24) + b"],"
    return b'{"windows": [' + row * (size // len(row)) + b"[" + b", ".join([b"0.5"] * 24) + b"]]}"


def _post(served: Served, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, float, Any]:
    """POST ``body`` over a plain socket (one ``sendall``: the GIL is free while it is sent, so this
    process's /healthz polling is not slowed); the status, the seconds it took, the JSON answer."""
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": "x", "Content-Type": "application/json",
                                                 "Content-Length": str(len(body)), **(headers or {})}.items())
    started = time.perf_counter()
    with socket.create_connection((served.host, served.port), timeout=60) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        top, rest = answer.split(b"\r\n\r\n", 1)
        length = int(next(line.split(b":")[1] for line in top.split(b"\r\n") if line.lower().startswith(b"content-length")))
        while len(rest) < length:
            rest += sock.recv(65536)
    return int(top.split(b" ")[1]), time.perf_counter() - started, json.loads(rest)


def _health_while(served: Served, work: list[threading.Thread]) -> float:
    """Start ``work``, poll /healthz until it is done; the slowest /healthz answer in seconds."""
    slowest = 0.0
    for t in work:
        t.start()
    with httpx.Client(base_url=served.url, timeout=30) as client:
        while any(t.is_alive() for t in work):
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
            time.sleep(0.01)
    for t in work:
        t.join()
    return slowest


def _champion_id(served: Served) -> int:
    return int(httpx.get(f"{served.url}/v1/series/{TRAINED}").json()["champion_model_version_id"])


# ---------------------------------------------------------------- bodies


def test_big_bodies_are_refused_before_they_are_parsed_and_health_checks_stay_fast(served: Served) -> None:
    keys, windows = _big_keys_body(), _big_windows_body()
    predict = f"/v1/models/{_champion_id(served)}/predict"
    calls = [("/v1/jobs/train", keys), (f"/v1/series/{TRAINED}/promote", keys),  # admin routes, no key
             ("/v1/forecast", keys), (predict, windows)]  # public routes, over their caps
    answers: dict[str, tuple[int, float, Any]] = {}
    work = [threading.Thread(target=lambda p=p, b=b: answers.__setitem__(p, _post(served, p, b)))
            for p, b in calls]
    slowest = _health_while(served, work)
    assert slowest < 0.5, f"/healthz took {slowest:.2f} s while big bodies were in flight"
    for (path, _), expected in zip(calls, (401, 401, 413, 413)):
        status, took, body = answers[path]
        assert status == expected, (path, body)
        assert took < 3, f"{path} answered {status} only after {took:.1f} s"
    assert answers["/v1/jobs/train"][2]["type"] == "urn:forecaster:problem:not-authenticated"
    forecast = answers["/v1/forecast"][2]
    assert forecast["type"] == "urn:forecaster:problem:body-too-large" and forecast["status"] == 413
    assert f"over {forecast['limit']} bytes" in forecast["detail"] and "1000 series keys" in forecast["detail"]
    assert forecast["limit"] < 1024 * 1024  # a list of keys needs kilobytes
    assert "api.max_predict_batch = 4096 windows" in answers[predict][2]["detail"]


def test_a_chunked_body_is_cut_off_at_the_cap_as_it_streams(served: Served) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: 50 MB of one JSON document, 1 MB at a time
        yield b'{"keys": ["'
        for _ in range(50):
            yield b"k" * (1024 * 1024)
        yield b'"]}'

    before = served.rss_bytes()
    started = time.perf_counter()
    r = httpx.post(f"{served.url}/v1/forecast", content=chunks(), headers={"content-type": "application/json"},
                   timeout=30)
    assert r.status_code == 413 and r.headers["content-type"].startswith(PROBLEM), r.text[:300]
    assert r.json()["limit"] < 1024 * 1024
    assert time.perf_counter() - started < 5
    assert served.rss_bytes() - before < 20 * 1024 * 1024, "the refused body was buffered"
    # Bodies within the caps still work, on the same routes.
    assert httpx.post(f"{served.url}/v1/forecast", json={"keys": [TRAINED]}).status_code == 200
    r = httpx.post(f"{served.url}/v1/series/{TRAINED}/promote", json={"version": 2}, headers={"X-API-Key": ADMIN_KEY})
    assert r.status_code == 200, r.text


def test_an_admin_route_with_the_key_has_its_cap_too(served: Served) -> None:
    status, _, body = _post(served, f"/v1/series/{TRAINED}/promote", _big_keys_body(1024 * 1024),
                            headers={"X-API-Key": ADMIN_KEY})
    assert status == 413 and body["limit"] == 4096, body
    status, _, body = _post(served, f"/v1/series/{TRAINED}/promote", b'{"version": 2}',
                            headers={"X-API-Key": "wrong"})
    assert status == 403 and body["type"] == "urn:forecaster:problem:forbidden"


# ---------------------------------------------------------------- a client that leaves


def _predict_5xx_and_499(served: Served) -> tuple[float, float]:
    """The predict route's 5xx and 499 counts in /metrics."""
    server, gone = 0.0, 0.0
    for line in httpx.get(f"{served.url}/metrics").text.splitlines():
        if line.startswith("forecaster_http_requests_total{") and "/predict" in line:
            status, count = line.split('status="')[1].split('"')[0], float(line.rsplit(" ", 1)[1])
            server += count if status.startswith("5") else 0
            gone += count if status == "499" else 0
    return server, gone


def test_a_client_that_leaves_mid_upload_is_no_server_error(served: Served) -> None:
    body = _big_windows_body(200_000)
    head = (f"POST /v1/models/{_champion_id(served)}/predict HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    errors_before, gone_before = _predict_5xx_and_499(served)
    log_before = served.log.stat().st_size
    with socket.create_connection((served.host, served.port)) as sock:
        sock.sendall(head + body[: len(body) // 2])
        time.sleep(0.2)  # the route is reading the body when the client goes
    wait_for(lambda: _predict_5xx_and_499(served)[1] == gone_before + 1, timeout_s=5)
    assert _predict_5xx_and_499(served)[0] == errors_before, "a dropped upload was counted as a server error"
    log = served.log.read_bytes()[log_before:].decode()
    assert "api.client_disconnected" in log and " DEBUG " in log
    assert "ERROR" not in log and "Traceback" not in log, log


# ---------------------------------------------------------------- request heads


def _until_closed(sock: socket.socket, timeout_s: float) -> bytes:
    """What the server sends until it closes the connection (an AssertionError after ``timeout_s``)."""
    sock.settimeout(timeout_s)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the connection was still open after {timeout_s} s (got {got[:80]!r})") from None
    return got


def test_a_header_that_never_ends_is_refused_without_growing_the_server(served: Served) -> None:
    before = served.rss_bytes()
    sent = 0
    started = time.perf_counter()
    with socket.create_connection((served.host, served.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        try:
            while sent < 20 * 1024 * 1024:  # 20 MB of one header value, as long as the server takes it
                sock.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _until_closed(sock, 5)
    assert time.perf_counter() - started < 5
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert served.rss_bytes() - before < 5 * 1024 * 1024, f"the server grew while {sent} header bytes came"
    assert httpx.get(f"{served.url}/healthz").status_code == 200


def _trickle_until_closed(sock: socket.socket, every_s: float, limit_s: float) -> tuple[float, bytes]:
    """Send one more header line every ``every_s`` (never the blank line that ends them) until the
    server closes; the seconds that took and what it answered."""
    started = time.perf_counter()
    sock.settimeout(every_s)
    n = 0
    while time.perf_counter() - started < limit_s:
        try:
            sock.sendall(f"X-Slow-{n}: 1\r\n".encode())
            n += 1
            answer = sock.recv(65536)  # the server's answer, or b"" when it closed
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            answer = b""
        return time.perf_counter() - started, answer
    raise AssertionError(f"still open after {limit_s} s of a slow head")


def test_a_slow_or_silent_connection_is_closed_after_the_head_timeout(served: Served) -> None:
    with socket.create_connection((served.host, served.port)) as slow, \
            socket.create_connection((served.host, served.port)) as silent:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        took, answer = _trickle_until_closed(slow, every_s=0.3, limit_s=HEAD_TIMEOUT_S + 5)
        assert HEAD_TIMEOUT_S - 0.5 <= took < HEAD_TIMEOUT_S + 2, took
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert _until_closed(silent, 2) == b""  # a connection that sent nothing is closed as well
    # Requests whose heads arrive in time, on one kept-alive connection, are unaffected.
    with httpx.Client(base_url=served.url) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(HEAD_TIMEOUT_S / 2)
