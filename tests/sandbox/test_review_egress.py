"""Review of the egress proxy: requests a sandboxed agent can make with its own, valid proxy credential.

The proxy is the real one of a real server (``$GODEL_HOME/gateway/egress.sock``); the client speaks to that socket
exactly as the relay inside the sandbox does (the relay is a byte pipe), with the credential the server gives the
agent (``EgressTokens``). The "internet" is a recorder on 127.0.0.2 that keeps every byte it receives, so the tests
turn ``egress_allow_private`` on and allow exactly that host and port.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from godel.core.events import EventFilter
from godel.core.ports import EventQuery
from godel.core.states import AgentState
from godel.scheduler.egress import EgressTokens
from godel.scheduler.requests import SpawnRequest
from tests.api.conftest import kill_runs
from tests.conftest import make_repo
from tests.gateway.conftest import stack  # noqa: F401 (the fixture)
from tests.sandbox.conftest import require_sandbox

UP = "127.0.0.2"


@asynccontextmanager
async def recorder() -> AsyncIterator[tuple[int, list[bytes]]]:
    """An upstream that keeps all it receives on each connection (until the client half-closes or 3 s of quiet),
    then answers 200."""
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        try:
            while chunk := await asyncio.wait_for(reader.read(65536), 3):
                data += chunk
        except TimeoutError:
            pass
        received.append(data)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, UP, 0)
    try:
        yield server.sockets[0].getsockname()[1], received
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def a_live_agent(s: Any, repo: Path, egress: list[str]) -> AsyncIterator[tuple[Any, str]]:
    """A sandboxed agent that stays running, and its proxy credential as the server hands it out."""
    agent = await s.plane.spawn(
        SpawnRequest(task="idle", repo=str(repo), command="sleep 120", timeout=120,
                     config={"sandbox": {"egress": egress}})
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while (await s.plane.get(agent.id)).state != AgentState.EXECUTING:
        assert time.monotonic() < deadline, "the agent did not start"
        await asyncio.sleep(0.05)  # polling the store for the supervisor's verdict
    token = EgressTokens.in_home(s.plane.settings.home).token(agent.id)
    credential = base64.b64encode(f"{agent.id}:{token}".encode()).decode()
    try:
        yield agent, credential
    finally:
        await kill_runs(s.plane)


async def _exchange(socket: Path, data: bytes, *, half_close: bool = True, timeout: float = 10) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(socket))
    writer.write(data)
    await writer.drain()
    if half_close:
        writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(65536), timeout)
    except TimeoutError:
        return b""  # no answer in time
    finally:
        writer.close()


async def test_a_host_header_of_another_site_is_sent_to_the_allowed_address(stack: Any, fast_tmp: Path) -> None:  # noqa: F811
    """Domain fronting: the absolute URI names the allowed host, the Host header another. The proxy checks the URI and
    forwards the Host header untouched, so on a shared front (a CDN serving the allowed registry) the request reaches
    any other site of that front: exfiltration to a host the allowlist never named."""
    require_sandbox()
    repo = make_repo(fast_tmp / "repo")
    async with recorder() as (port, received), stack(
        [{"text": "unused"}], runtime="sandbox", egress_allow_private=True
    ) as s, a_live_agent(s, repo, [f"{UP}:{port}"]) as (_, credential):  # fmt: skip
        request = (
            f"GET http://{UP}:{port}/x HTTP/1.1\r\nHost: attacker.example\r\n"
            f"Proxy-Authorization: Basic {credential}\r\n\r\n"
        ).encode()
        answer = await _exchange(s.plane.settings.egress_socket, request)
    forwarded = b"".join(received)
    assert b"attacker.example" not in forwarded, (
        f"the proxy forwarded a Host header naming a host outside the allowlist (answer {answer[:40]!r}); upstream "
        f"saw {forwarded!r}. It must refuse a Host that differs from the URI's host, or rewrite it."
    )


async def test_a_pipelined_request_rides_an_allowed_connection_unchecked(stack: Any, fast_tmp: Path) -> None:  # noqa: F811
    """Keep-alive pipelining: after the first (checked) request, everything else the client sends is piped raw to the
    same upstream: a second request for another host is never checked nor logged, and its Proxy-Authorization (the
    agent's proxy credential) is handed to the upstream."""
    require_sandbox()
    repo = make_repo(fast_tmp / "repo")
    async with recorder() as (port, received), stack(
        [{"text": "unused"}], runtime="sandbox", egress_allow_private=True
    ) as s, a_live_agent(s, repo, [f"{UP}:{port}"]) as (agent, credential):  # fmt: skip
        auth = f"Proxy-Authorization: Basic {credential}\r\n"
        request = (
            f"GET http://{UP}:{port}/first HTTP/1.1\r\nHost: {UP}:{port}\r\n{auth}\r\n"
            f"GET http://not-allowed.example/second HTTP/1.1\r\nHost: not-allowed.example\r\n{auth}\r\n"
        ).encode()
        await _exchange(s.plane.settings.egress_socket, request)
        found = await s.plane.events(
            EventQuery(filter=EventFilter(patterns=("agent:egress", "safety:block"), agent_id=agent.id), limit=10)
        )
    forwarded = b"".join(received)
    assert b"/second" not in forwarded and b"Proxy-Authorization" not in forwarded, (
        "a second, pipelined request (for not-allowed.example) was piped to the allowed upstream without any "
        f"check, with the agent's proxy credential in it; upstream saw {forwarded!r}; events: "
        f"{[(e.type, e.payload.get('host')) for e in found]}"
    )


async def test_an_agent_looping_on_blocked_requests_grows_the_event_log_without_bound(
    stack: Any,  # noqa: F811
    fast_tmp: Path,
) -> None:
    """Every refusal is one ``safety:block`` row in the store: an agent (or a CLI retrying a blocked registry in a
    loop) writes as many rows as it makes requests, with nothing to bound or coalesce them."""
    require_sandbox()
    repo = make_repo(fast_tmp / "repo")
    attempts = 300
    async with stack([{"text": "unused"}], runtime="sandbox") as s, a_live_agent(s, repo, []) as (agent, credential):
        request = f"CONNECT blocked.example:443 HTTP/1.1\r\nProxy-Authorization: Basic {credential}\r\n\r\n".encode()
        for _ in range(attempts):
            assert b" 403 " in await _exchange(s.plane.settings.egress_socket, request, half_close=False)
        found = await s.plane.events(
            EventQuery(filter=EventFilter(patterns=("safety:block",), agent_id=agent.id), limit=1000)
        )
    assert len(found) < attempts // 10, (
        f"{attempts} blocked requests wrote {len(found)} safety:block events: the event log grows with whatever "
        "an agent loops on (coalesce repeats per host, or rate-limit them per agent)"
    )


async def test_a_request_head_ended_by_bare_newlines_is_answered(stack: Any, fast_tmp: Path) -> None:  # noqa: F811
    """A head ending in LF LF (which many servers accept) is neither refused nor served: the proxy waits for CRLF CRLF
    and holds the connection, silently, for its whole 30 s head timeout."""
    require_sandbox()
    async with stack([{"text": "unused"}], runtime="sandbox") as s:
        started = time.monotonic()
        answer = await _exchange(
            s.plane.settings.egress_socket, b"CONNECT example.org:443 HTTP/1.1\n\n", half_close=False, timeout=5
        )
        assert answer.startswith(b"HTTP/1.1 4"), (
            f"no answer to a LF-only request head within {time.monotonic() - started:.1f}s ({answer!r})"
        )


pytestmark = pytest.mark.timeout(180)


async def test_the_proxy_bounds_the_connections_an_agent_holds_open(stack: Any, fast_tmp: Path) -> None:  # noqa: F811
    """Slowloris: nothing bounds the proxy's connections. Each silent one is held for the 30 s head timeout (a
    tunnel, for ever), and each costs the server process a descriptor shared with its API, gateway and store: a
    sandboxed agent that opens about as many as the process may have (20000 here) takes the control plane down."""
    require_sandbox()
    held = 500
    async with stack([{"text": "unused"}], runtime="sandbox") as s:
        conns = [await asyncio.open_unix_connection(str(s.plane.settings.egress_socket)) for _ in range(held)]
        try:
            open_ = 0
            for reader, _ in conns:
                try:
                    await asyncio.wait_for(reader.read(1), 0.01)  # b"": the proxy closed it
                except TimeoutError:
                    open_ += 1  # still held by the proxy
        finally:
            for _, writer in conns:
                writer.close()
    assert open_ < held, (
        f"the egress proxy held all {held} silent connections open at once: no limit on concurrent connections "
        "(per proxy or per agent), so one agent can exhaust the server's descriptors"
    )
