"""The egress proxy: the one way from a sandbox to a host other than the gateway, and only to allowed hosts.

An HTTP forward proxy on a Unix socket (``$GODEL_HOME/gateway/egress.sock``, beside the gateway's, bound into each
sandbox and relayed inside to ``127.0.0.1:EGRESS_PORT``; the agent's ``HTTP_PROXY``/``HTTPS_PROXY`` point there).
It serves ``CONNECT host:port`` (HTTPS, git over HTTPS: the tunnel carries the client's own TLS, never read here)
and plain ``http://`` requests. Each request must carry the agent's proxy credential (``Proxy-Authorization: Basic``
of ``AGENT-ID:TOKEN``, see ``godel.scheduler.egress``), of an agent that is still live, and name a host its
allowlist (``config.sandbox.egress``) lets through. The host is resolved here once, and every address it resolves to
must be public (no loopback, private, link-local or metadata address, unless ``egress_allow_private``); the
connection goes to the address that was checked, so a name cannot be re-resolved into the server's network between
the check and the connect.

Every refusal of a known agent is a ``safety:block`` event (kind ``egress``: host, port, reason); every tunnel
opened an ``agent:egress`` event. A request without a valid credential gets 407 and no event (it names no agent).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import structlog

from godel.core.addresses import private_address
from godel.core.events import Event, make_event
from godel.core.models import Agent
from godel.core.states import AgentState
from godel.errors import NotFoundError, RuntimeFailure
from godel.scheduler.egress import EgressTokens, allowed, rules_of

log = structlog.get_logger("godel.egress")

MAX_HEAD = 16 * 1024  # bytes of a request line and headers
HEAD_TIMEOUT = 30.0  # seconds for a client to send its request head
CONNECT_TIMEOUT = 10.0
_ENDED = (AgentState.COMPLETED, AgentState.FAILED, AgentState.KILLED)


class EgressStore(Protocol):
    async def get_agent(self, agent_id: str) -> Agent: ...
    async def append_events(self, events: list[Event]) -> list[Event]: ...


@dataclass(frozen=True)
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]  # what follows the head stays in the reader, for the pipe to carry


class _Refused(Exception):
    def __init__(self, status: int, reason: str, *, agent: Agent | None = None, host: str = "", port: int = 0):
        super().__init__(reason)
        self.status, self.reason, self.agent, self.host, self.port = status, reason, agent, host, port


class EgressProxy:
    def __init__(self, path: Path, *, tokens: EgressTokens, store: EgressStore, allow_private: bool = False) -> None:
        self.path = path
        self.tokens = tokens
        self.store = store
        self.allow_private = allow_private
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(self.path.lstat().st_mode):
                self.path.unlink()  # left by a server that died
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_HEAD)
            os.chmod(self.path, 0o600)
        except OSError as exc:
            raise RuntimeFailure(f"cannot serve the egress proxy on {self.path}: {exc}") from exc
        log.info("egress proxy served on a Unix socket for sandboxed agents", path=str(self.path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    # ------------------------------------------------------------------------------------------ one client

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away, or never said anything: nothing to answer
        except Exception:  # one client's trouble must not take the proxy down
            log.exception("egress proxy: a connection failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._conns.discard(task)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(_read_head(reader), HEAD_TIMEOUT)
        except ValueError as exc:
            await _answer(writer, 400, str(exc))
            return
        try:
            agent = await self._agent(request)
            host, port = _destination(request, agent)
            if allowed(rules_of(agent.config), host, port) is None:
                raise _Refused(403, "not in the agent's egress allowlist", agent=agent, host=host, port=port)
            address = await self._vetted(agent, host, port)
            upstream_reader, upstream = await asyncio.wait_for(asyncio.open_connection(address, port), CONNECT_TIMEOUT)
        except _Refused as refused:
            if refused.agent is not None:
                await self._record("safety:block", refused.agent, refused.host, refused.port, reason=refused.reason)
            extra = [("Proxy-Authenticate", 'Basic realm="godel-egress"')] if refused.status == 407 else []
            await _answer(writer, refused.status, refused.reason, extra)
            return
        except (OSError, TimeoutError) as exc:
            await _answer(writer, 502, f"cannot connect to {host}:{port}: {exc}")
            return
        await self._record("agent:egress", agent, host, port, method=request.method)
        try:
            if request.method == "CONNECT":
                await _send(writer, b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream.write(_origin_form(request))
            await _pipe(reader, writer, upstream_reader, upstream)
        finally:
            upstream.close()

    async def _agent(self, request: _Request) -> Agent:
        """The live agent whose credential the request carries; 407 otherwise."""
        credential = next((v for k, v in request.headers if k.lower() == "proxy-authorization"), "")
        scheme, _, encoded = credential.partition(" ")
        try:
            agent_id, _, token = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            agent_id, token = "", ""
        if scheme.lower() != "basic" or not agent_id or not self.tokens.check(agent_id, token):
            raise _Refused(407, "proxy credentials required: the agent's own (HTTP_PROXY as Godel set it)")
        try:
            agent = await self.store.get_agent(agent_id)
        except NotFoundError:
            raise _Refused(407, "proxy credentials of an agent that no longer exists") from None
        if agent.state in _ENDED:
            raise _Refused(407, "proxy credentials of an agent that has ended")
        return agent

    async def _vetted(self, agent: Agent, host: str, port: int) -> str:
        """The address to connect to: ``host`` resolved once, every address it has checked."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise _Refused(502, f"{host} does not resolve ({exc})", agent=agent, host=host, port=port) from exc
        addresses = [str(info[4][0]) for info in infos]
        if not self.allow_private and (private_address(host) or any(private_address(a) for a in addresses)):
            why = f"{host} is or resolves to a private address ({', '.join(addresses)}): egress_allow_private is off"
            raise _Refused(403, why, agent=agent, host=host, port=port)
        return addresses[0]

    async def _record(self, type_: str, agent: Agent, host: str, port: int, **extra: str) -> None:
        payload = {"kind": "egress", "host": host, "port": port, **extra}
        log.info("egress", type=type_, agent=agent.id, **payload)
        try:
            await self.store.append_events(
                [make_event(type_, payload, component="egress", agent_id=agent.id, team_id=agent.team_id)]
            )
        except Exception:  # the decision stands; a store outage must not open or hang the connection
            log.exception("egress event not recorded", agent=agent.id, host=host)


# ---------------------------------------------------------------------------------------------------- HTTP


async def _read_head(reader: asyncio.StreamReader) -> _Request:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise ValueError(f"request head larger than {MAX_HEAD} bytes") from exc
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError("not an HTTP/1.x request line")
    headers = []
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError("malformed header line")
            headers.append((name.strip(), value.strip()))
    return _Request(parts[0].upper(), parts[1], parts[2], headers)


def _destination(request: _Request, agent: Agent) -> tuple[str, int]:
    if request.method == "CONNECT":
        host, sep, port = request.target.rpartition(":")
        host = host.strip("[]")
        if not sep or not port.isdigit() or not host:
            raise _Refused(400, "CONNECT needs host:port", agent=agent, host=request.target)
        return host.lower(), int(port)
    url = urlsplit(request.target)
    if url.scheme != "http" or not url.hostname:
        raise _Refused(400, "only http:// URLs and CONNECT are proxied", agent=agent, host=request.target)
    return url.hostname.lower(), url.port or 80


def _origin_form(request: _Request) -> bytes:
    """The request as the origin server expects it: path only, no proxy headers, the connection closed after it."""
    url = urlsplit(request.target)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    keep = [(k, v) for k, v in request.headers if not k.lower().startswith("proxy-") and k.lower() != "connection"]
    lines = [f"{request.method} {path} {request.version}", *(f"{k}: {v}" for k, v in keep), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _pipe(
    client_reader: asyncio.StreamReader,
    client: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream: asyncio.StreamWriter,
) -> None:
    async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while chunk := await src.read(65536):
                dst.write(chunk)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()
        except (ConnectionError, OSError):
            pass

    await asyncio.gather(copy(client_reader, upstream), copy(upstream_reader, client))


async def _answer(
    writer: asyncio.StreamWriter, status: int, reason: str, extra: list[tuple[str, str]] | None = None
) -> None:
    body = f"{reason}\n".encode()
    phrase = {400: "Bad Request", 403: "Forbidden", 407: "Proxy Authentication Required", 502: "Bad Gateway"}
    head = [f"HTTP/1.1 {status} {phrase.get(status, 'Error')}", "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(body)}", "Connection: close", *(f"{k}: {v}" for k, v in extra or [])]  # fmt: skip
    await _send(writer, ("\r\n".join(head) + "\r\n\r\n").encode() + body)


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()
