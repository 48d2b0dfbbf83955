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
Repeats of one event (same agent, host, port and reason) within a minute are counted, not written: the next one
written carries the count (``repeats``), so an agent looping on a blocked host cannot grow the event log.

Bounds: at most ``MAX_CONNECTIONS`` connections at once (503 beyond), ``MAX_PER_AGENT`` per agent (429), 10 s to
send a request head, and a tunnel or response idle for ``IDLE_TIMEOUT`` is closed. A plain ``http://`` request is
one request per connection: its body by ``Content-Length`` only (a chunked body is refused: use HTTPS), its
``Host`` the URI's, no ``Proxy-*`` header forwarded, and nothing the client sends after it reaches the upstream
(a pipelined second request for another host is never forwarded unchecked).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
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
MAX_HEADERS = 100
HEAD_TIMEOUT = 10.0  # seconds for a client to send its request head
CONNECT_TIMEOUT = 10.0
IDLE_TIMEOUT = 300.0  # seconds a tunnel or a response may pass no byte either way
MAX_CONNECTIONS = 256  # at once, every agent together: each is a descriptor of the server's process
MAX_PER_AGENT = 64  # at once, per agent
MAX_BODY = 64 * 1024 * 1024  # bytes of a plain http:// request body
EVENT_WINDOW = 60.0  # seconds within which repeats of one event are counted, not written
_REMEMBERED = 10_000  # events whose repeats are being counted, at most
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
        self._per_agent: dict[str, int] = {}
        self._recent: OrderedDict[tuple[str, ...], tuple[float, int]] = OrderedDict()  # event -> (written, repeats)

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
        if len(self._conns) >= MAX_CONNECTIONS:
            with contextlib.suppress(Exception):
                await _answer(writer, 503, "the egress proxy is at its connection limit; try again")
            writer.close()
            return
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
        agent: Agent | None = None
        counted = False
        try:
            agent = await self._agent(request)
            if self._per_agent.get(agent.id, 0) >= MAX_PER_AGENT:
                raise _Refused(429, f"at most {MAX_PER_AGENT} connections at once", agent=agent)
            self._per_agent[agent.id] = self._per_agent.get(agent.id, 0) + 1
            counted = True
            await self._forward(agent, request, reader, writer)
        except _Refused as refused:
            if refused.agent is not None:
                await self._record("safety:block", refused.agent, refused.host, refused.port, reason=refused.reason)
            extra = [("Proxy-Authenticate", 'Basic realm="godel-egress"')] if refused.status == 407 else []
            await _answer(writer, refused.status, refused.reason, extra)
        finally:
            if agent is not None and counted:
                self._per_agent[agent.id] -= 1
                if self._per_agent[agent.id] <= 0:
                    del self._per_agent[agent.id]

    async def _forward(
        self, agent: Agent, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        host, port = _destination(request, agent)
        if allowed(rules_of(agent.config), host, port) is None:
            raise _Refused(403, "not in the agent's egress allowlist", agent=agent, host=host, port=port)
        body = 0 if request.method == "CONNECT" else _body_length(request, agent, host, port)
        address = await self._vetted(agent, host, port)
        try:
            upstream_reader, upstream = await asyncio.wait_for(asyncio.open_connection(address, port), CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            await _answer(writer, 502, f"cannot connect to {host}:{port}: {exc}")
            return
        await self._record("agent:egress", agent, host, port, method=request.method)
        try:
            if request.method == "CONNECT":
                await _send(writer, b"HTTP/1.1 200 Connection established\r\n\r\n")
                await _pipe(reader, writer, upstream_reader, upstream)
                return
            # One request: its head as the origin expects it, exactly its body, then only the answer comes back.
            upstream.write(_origin_form(request, host, port))
            if body:
                upstream.write(await asyncio.wait_for(reader.readexactly(body), IDLE_TIMEOUT))
            await upstream.drain()
            await _pipe(None, writer, upstream_reader, upstream)
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
        key = (type_, agent.id, host, str(port), *extra.values())
        now = time.monotonic()
        seen = self._recent.get(key)
        if seen is not None and now - seen[0] < EVENT_WINDOW:
            self._recent[key] = (seen[0], seen[1] + 1)  # counted; written with the next one after the window
            return
        self._recent[key] = (now, 0)
        self._recent.move_to_end(key)
        while len(self._recent) > _REMEMBERED:
            self._recent.popitem(last=False)
        payload: dict[str, Any] = {"kind": "egress", "host": host, "port": port, **extra}
        if seen is not None and seen[1]:
            payload["repeats"] = seen[1]  # how many like it were not written in the window before this one
        log.info("egress", type=type_, agent=agent.id, **payload)
        try:
            await self.store.append_events(
                [make_event(type_, payload, component="egress", agent_id=agent.id, team_id=agent.team_id)]
            )
        except Exception:  # the decision stands; a store outage must not open or hang the connection
            log.exception("egress event not recorded", agent=agent.id, host=host)


# ---------------------------------------------------------------------------------------------------- HTTP


async def _read_head(reader: asyncio.StreamReader) -> _Request:
    """The request line and headers, each line ended by CRLF or a bare LF, up to the empty line."""
    lines: list[str] = []
    size = 0
    while True:
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            raise ValueError(f"request head larger than {MAX_HEAD} bytes") from exc
        size += len(raw)
        if size > MAX_HEAD or len(lines) > MAX_HEADERS:
            raise ValueError(f"request head larger than {MAX_HEAD} bytes or {MAX_HEADERS} lines")
        line = raw.decode("latin-1").rstrip("\r\n")
        if not line:
            if lines:
                break
            continue  # blank lines before a request line are allowed (RFC 9112)
        lines.append(line)
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
        name, sep, digits = request.target.rpartition(":")
        name = name.strip("[]").lower().rstrip(".")
        if not sep or not digits.isdigit() or not name or not 0 < int(digits) < 65536:
            raise _Refused(400, "CONNECT needs host:port", agent=agent, host=request.target)
        return name, int(digits)
    url = urlsplit(request.target)
    try:
        port = url.port or 80
    except ValueError:
        raise _Refused(400, "not a valid port", agent=agent, host=request.target) from None
    if url.scheme != "http" or not url.hostname:
        raise _Refused(400, "only http:// URLs and CONNECT are proxied", agent=agent, host=request.target)
    return url.hostname.lower().rstrip("."), port


def _body_length(request: _Request, agent: Agent, host: str, port: int) -> int:
    """The bytes of a plain request's body: by Content-Length only (a chunked body would let a second request
    follow it unchecked)."""
    names = {k.lower(): v for k, v in request.headers}
    if "transfer-encoding" in names:
        raise _Refused(400, "a chunked request body is not proxied over http://: use https", agent=agent,
                       host=host, port=port)  # fmt: skip
    length = names.get("content-length", "0").strip()
    if not length.isdigit() or int(length) > MAX_BODY:
        raise _Refused(400, f"Content-Length must be a number of at most {MAX_BODY} bytes", agent=agent, host=host,
                       port=port)  # fmt: skip
    return int(length)


# Headers of the hop between the agent and the proxy (and Host, set from the URI), never forwarded to the origin.
_HOP = ("connection", "keep-alive", "te", "trailer", "upgrade", "host")


def _origin_form(request: _Request, host: str, port: int) -> bytes:
    """The request as the origin server expects it: path only, ``Host`` the URI's (never another a client wrote:
    a fronted site behind the allowed address), no ``Proxy-*`` header, the connection closed after it."""
    url = urlsplit(request.target)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    keep = [(k, v) for k, v in request.headers if not k.lower().startswith("proxy-") and k.lower() not in _HOP]
    authority = host if port == 80 else f"{host}:{port}"
    lines = [f"{request.method} {path} {request.version}", f"Host: {authority}", *(f"{k}: {v}" for k, v in keep),
             "Connection: close"]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _pipe(
    client_reader: asyncio.StreamReader | None,
    client: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream: asyncio.StreamWriter,
) -> None:
    """Copy both ways (the upstream's answer only, without ``client_reader``) until both ends are done, or no byte
    has passed either way for ``IDLE_TIMEOUT``."""
    last = [time.monotonic()]

    async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while chunk := await src.read(65536):
                last[0] = time.monotonic()
                dst.write(chunk)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()
        except (ConnectionError, OSError):
            pass

    copies = [asyncio.ensure_future(copy(upstream_reader, client))]
    if client_reader is not None:
        copies.append(asyncio.ensure_future(copy(client_reader, upstream)))
    try:
        while not all(c.done() for c in copies):
            idle = time.monotonic() - last[0]
            if idle >= IDLE_TIMEOUT:
                break
            await asyncio.wait(copies, timeout=IDLE_TIMEOUT - idle)
    finally:
        for c in copies:
            c.cancel()
        await asyncio.gather(*copies, return_exceptions=True)


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
