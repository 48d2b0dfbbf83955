"""The gateway, and an agent's own API, on a Unix socket: the only way out of a sandboxed agent
(``godel.runtimes.sandbox``).

A sandbox has no network; the socket's directory is bound into it and a relay inside listens on the loopback port
of the gateway URL the agent was given. What answers on the socket is ``ProxyMiddleware`` (``/proxy/…``, with the
gateway's own authentication: the agent's virtual key) in front of ``AgentsOnly``: the control API (``/api/…``) for
a request that carries an agent's run credential (``GODEL_API_KEY``, which lets it report on itself and, when its
spawn allowed it, spawn sub-agents), and a 404 for everything else -- a user's key or token (even an administrator's
that leaked into a workspace), no credential, the login, the dashboard, health. With authentication off no
credential can be told from another, so the API is not served here at all.

The socket is served by a second uvicorn server in the same process and event loop, started and stopped with the
application's lifespan. The main server owns the process's signals; this one installs no handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog
import uvicorn
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from godel.api.proxy import ProxyMiddleware
from godel.auth.credentials import AGENT_KEY
from godel.auth.service import AuthService, Presented
from godel.errors import GodelError, RuntimeFailure
from godel.gateway.service import Gateway

log = structlog.get_logger("godel.api")

_MAX_SOCKET_PATH = 107  # bytes in sockaddr_un.sun_path, less the terminating NUL


async def _nothing_else(scope: Scope, receive: Receive, send: Send) -> None:
    """Everything that is not ``/proxy/…``: not served here."""
    if scope["type"] != "http":
        return  # lifespan and websockets: nothing to do, nothing accepted
    body = (
        b'{"success":false,"error":{"code":"NOT_FOUND","message":"only the gateway (/proxy/...) and, to an '
        b"agent's own credential, the API are served here\"}}"
    )
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass
class AgentsOnly:
    """``/api/…`` of the main application for an agent's run credential; 404 for every other request."""

    auth: AuthService | None  # None: authentication is off, and the API is not served here
    api: ASGIApp | None = None  # the main application, set once it is built

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.api is not None and await self._an_agent(scope):
            await self.api(scope, receive, send)
            return
        await _nothing_else(scope, receive, send)

    async def _an_agent(self, scope: Scope) -> bool:
        if self.auth is None or not str(scope.get("path", "")).startswith("/api/"):
            return False
        headers = Headers(scope=scope)
        api_key = headers.get("x-api-key")
        scheme, _, bearer = headers.get("authorization", "").partition(" ")
        text = api_key or (bearer if scheme.lower() == "bearer" else "")
        if not text.strip().startswith(AGENT_KEY):  # only a run credential is worth looking up here
            return False
        try:
            principal = await self.auth.authenticate(Presented(api_key=api_key, bearer=bearer or None))
        except GodelError:
            return False
        return principal.kind == "agent" and principal.agent_id is not None


def gateway_only_app(gateway: Gateway, agents: AgentsOnly | None = None) -> ProxyMiddleware:
    return ProxyMiddleware(agents or AgentsOnly(None), gateway=gateway)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the main server handles SIGINT/SIGTERM and stops this one through the lifespan


class GatewaySocket:
    """``start()`` binds ``path`` (owner only, in a private directory) and serves; ``stop()`` closes and removes it."""

    def __init__(self, gateway: Gateway, path: Path, *, auth: AuthService | None = None) -> None:
        """``auth``: the server's authentication, to serve its API to agents' run credentials (None: the gateway
        alone). The main application is handed over later, as ``api``, once it is built."""
        if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
            raise RuntimeFailure(
                f"the gateway socket path {path} is longer than a Unix socket allows ({_MAX_SOCKET_PATH} bytes): "
                "use a shorter GODEL_HOME",
                details={"path": str(path)},
            )
        self.path = path
        self.agents = AgentsOnly(auth)
        config = uvicorn.Config(
            gateway_only_app(gateway, self.agents), lifespan="off", log_config=None, log_level="warning",
            access_log=False, timeout_graceful_shutdown=1,
        )  # fmt: skip
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(self.path.lstat().st_mode):
                    self.path.unlink()  # left by a server that died
            sock.bind(str(self.path))  # bound here, so a failure raises here (uvicorn would exit the process)
            os.chmod(self.path, 0o600)
        except OSError as exc:
            sock.close()
            raise RuntimeFailure(f"cannot serve the gateway on {self.path}: {exc}") from exc
        self._task = asyncio.create_task(self._server.serve([sock]), name="gateway socket")  # serves until stop()
        while not self._server.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
            await asyncio.sleep(0.005)
        log.info("gateway served on a Unix socket for sandboxed agents", path=str(self.path))

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._task = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
