"""Security headers on every HTML page: a Content-Security-Policy, no framing, no type sniffing.

The dashboard is server-rendered with inline styles and inline SVG and runs no script, so
its policy allows inline styles and nothing else. Swagger UI (/docs) and ReDoc (/redoc)
run inline scripts from this server; they get ``DOCS_CSP`` (ReDoc sets it itself). A page
that already carries a policy keeps it. JSON answers are left alone: no browser renders them.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
            "frame-ancestors 'none'")
PAGE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'")
ALWAYS = ((b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
          (b"referrer-policy", b"same-origin"))


class SecurityHeaders:
    """Add ``ALWAYS`` and a Content-Security-Policy (``PAGE_CSP``, or ``by_path``'s) to text/html answers."""

    def __init__(self, app: ASGIApp, by_path: Mapping[str, str]) -> None:
        self.app = app
        self.by_path = {path: csp.encode() for path, csp in by_path.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                media = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if media.startswith(b"text/html"):
                    headers += [h for h in ALWAYS if h[0] not in names]
                    if b"content-security-policy" not in names:
                        path = scope["path"].removeprefix(scope.get("root_path", ""))
                        headers.append((b"content-security-policy", self.by_path.get(path, PAGE_CSP.encode())))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
