"""Browser-side defences, in front of everything (the gateway's ``/proxy`` included), as one plain ASGI middleware.

- ``Host`` allowlist: a page on ``evil.example`` that rebinds its DNS name to 127.0.0.1 sends ``Host: evil.example``;
  such requests get 403, so a browser cannot be turned into a client of a server on the user's loopback.
- ``Origin``: a request (HTTP or WebSocket handshake) that carries an ``Origin`` other than this server's own or a
  configured CORS origin is refused. Browsers always send ``Origin`` on cross-site WebSockets and on cross-site
  POST/PUT/PATCH/DELETE (``text/plain`` body-less POSTs included); tools such as curl, the CLI and the agents send
  none, and are held by their credentials instead.
- A state-changing request authenticated by the session cookie must also *show* it is same-origin (``Origin`` or
  ``Referer``): see ``godel.api.access``.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

import orjson
import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from godel.api.errors import error_body
from godel.auth.audit import AuditLog

log = structlog.get_logger("godel.api")

_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def host_of(value: str) -> str:
    """``"Example.COM:7373"`` → ``"example.com"``; ``"[::1]:80"`` → ``"::1"``."""
    value = value.strip().lower()
    if value.startswith("["):  # "[::1]" or "[::1]:7373", and nothing else after the bracket
        end = value.find("]")
        rest = value[end + 1 :] if end > 0 else "x"
        return value[1:end] if rest == "" or (rest[0] == ":" and rest[1:].isdigit()) else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class BrowserGuard:
    def __init__(
        self, app: ASGIApp, *, allowed_hosts: Iterable[str], cors_origins: Iterable[str] = (),
        audit: AuditLog | None = None,
    ) -> None:  # fmt: skip
        self.app = app
        self.audit = audit  # refusals are recorded (this middleware sits outside the audit middleware)
        hosts = {host_of(h) for h in allowed_hosts if h}
        self.any_host = "*" in hosts
        self.hosts = hosts | set(_LOOPBACK)
        self.cors_origins = {o.rstrip("/").lower() for o in cors_origins}

    def origin_allowed(self, origin: str, host_header: str) -> bool:
        if origin.rstrip("/").lower() in self.cors_origins:
            return True
        parts = urlsplit(origin)
        # Same origin: the page was served by this server, under the name the request came to.
        return parts.scheme in ("http", "https") and parts.netloc.lower() == host_header.strip().lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host_header = headers.get(b"host", b"").decode("latin-1")
        problem = None
        if not self.any_host and host_of(host_header) not in self.hosts:
            problem = f"host {host_of(host_header) or '(none)'!r} is not served here (allowed_hosts)"
        elif (origin := headers.get(b"origin")) is not None and not self.origin_allowed(
            origin.decode("latin-1"), host_header
        ):
            problem = f"cross-site request from origin {origin.decode('latin-1')!r} refused"
        if problem is None:
            await self.app(scope, receive, send)
            return
        if self.audit is not None:
            client = scope.get("client")
            try:
                await self.audit.record(
                    actor="anonymous", action=f"{scope.get('method', 'WS')} {scope['path']}"[:100], outcome="denied",
                    status_code=403, client=client[0] if client else None, details={"refused": problem[:300]},
                )  # fmt: skip
            except Exception:
                log.exception("audit record failed")
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4403, "reason": problem[:120]})
            return
        rid = (scope.get("state") or {}).get("request_id", "")
        body = orjson.dumps(error_body(rid, "ORIGIN_REFUSED", problem))
        start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 403, "headers": start})
        await send({"type": "http.response.body", "body": body})
