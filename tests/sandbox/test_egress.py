"""Egress from a sandbox: only through Godel's proxy, only with the agent's own credential, only to the hosts its
allowlist names, never into the server's network unless allowed; each refusal a ``safety:block`` event.

The "internet" here is an HTTP server of the test on 127.0.0.1 (nothing else is reachable from this machine), so
the tests that connect to it turn ``egress_allow_private`` on; the one that leaves it off shows that an allowlisted
name leading to a private address is refused.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from godel.core.events import EventFilter
from godel.core.ports import EventQuery
from godel.core.states import AgentState
from godel.scheduler.requests import SpawnRequest
from tests.conftest import make_repo
from tests.gateway.conftest import stack  # noqa: F401 (the fixture)
from tests.sandbox.conftest import require_gvisor, require_sandbox
from tests.sandbox.containers import require_container

UP = "127.0.0.2"  # the upstream's address: loopback, outside what the agent's NO_PROXY sends direct
PROBE = r"""
import base64, json, os, socket, urllib.error, urllib.request
from urllib.parse import urlsplit

port = int(os.environ["UPSTREAM_PORT"])
UP = "127.0.0.2"  # the host's loopback, but not a name the agent's NO_PROXY sends direct (127.0.0.1, localhost)
proxy = urlsplit(os.environ.get("HTTPS_PROXY", "http://none@127.0.0.1:1"))
out = {"proxy": f"{proxy.hostname}:{proxy.port}"}

def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=20) as reply:
            return [reply.status, reply.read().decode()]
    except urllib.error.HTTPError as exc:
        return [exc.code, exc.read().decode()]
    except Exception as exc:
        return [0, repr(exc)]

def connect(target, credential):
    s = socket.create_connection((proxy.hostname, proxy.port), timeout=20)
    auth = f"Proxy-Authorization: Basic {base64.b64encode(credential.encode()).decode()}\r\n" if credential else ""
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n".encode())
    head = s.recv(4096).decode(errors="replace")
    status = int(head.split(" ")[1])
    body = ""
    if status == 200:  # the tunnel: speak HTTP to the upstream through it
        s.sendall(b"GET /tunnel HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n")
        while chunk := s.recv(4096):
            body += chunk.decode(errors="replace")
    s.close()
    return [status, body]

mine = f"{proxy.username}:{proxy.password}"
out["http"] = fetch(f"http://{UP}:{port}/plain")
out["blocked"] = fetch("http://example.org/")
out["tunnel"] = connect(f"{UP}:{port}", mine)
out["other-port"] = connect(f"{UP}:{port + 1}", mine)
out["no-credential"] = connect(f"{UP}:{port}", "")
out["forged"] = connect(f"{UP}:{port}", f"{os.environ['OTHER_AGENT']}:{proxy.password}")
try:
    socket.create_connection((UP, port), timeout=5).close()
    out["direct"] = "connected"
except OSError as exc:
    out["direct"] = repr(exc)
print(json.dumps(out))
"""


@asynccontextmanager
async def upstream() -> AsyncIterator[tuple[int, list[str]]]:
    """A plain HTTP server on loopback that answers every request with the path it was asked for."""
    seen: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.decode().split(" ")[1]
        seen.append(path)
        body = f"upstream saw {path}".encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, UP, 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        await server.wait_closed()


async def _run(s: Any, repo: Path, env: dict[str, str], egress: list[str]) -> tuple[Any, dict[str, Any]]:
    other = await s.plane.spawn(SpawnRequest(task="another", repo=str(repo), command="true"))
    agent = await s.plane.spawn(
        SpawnRequest(task="probe", repo=str(repo), command="/usr/bin/python3 probe.py", timeout=60,
                     env={**env, "OTHER_AGENT": other.id}, config={"sandbox": {"egress": egress}})
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while (done := await s.plane.get(agent.id)).state not in (AgentState.COMPLETED, AgentState.FAILED):
        assert time.monotonic() < deadline, "the probe did not end"
        await asyncio.sleep(0.05)  # polling the store for the supervisor's verdict
    logs = s.plane.settings.home / "logs" / agent.id
    out, err = (logs / "stdout.log").read_text(), (logs / "stderr.log").read_text()
    assert done.state == AgentState.COMPLETED, (done.last_error, out, err)
    return done, json.loads(out.strip().splitlines()[-1])


async def _events(s: Any, agent_id: str, pattern: str) -> list[dict[str, Any]]:
    found = await s.plane.events(EventQuery(filter=EventFilter(patterns=(pattern,), agent_id=agent_id), limit=100))
    return [e.payload for e in found]


@pytest.mark.parametrize("runtime", ["sandbox", "gvisor", "container"])
async def test_egress_goes_through_the_proxy_to_allowed_hosts_only(
    stack: Any,  # noqa: F811
    fast_tmp: Path,
    runtime: str,
) -> None:
    if runtime == "gvisor":
        require_gvisor()
    elif runtime == "container":
        require_container()
    else:
        require_sandbox()
    repo = make_repo(fast_tmp / "repo", {"probe.py": PROBE})
    async with upstream() as (port, seen), stack([{"text": "unused"}], runtime=runtime,
                                                  egress_allow_private=True) as s:  # fmt: skip
        agent, seen_inside = await _run(s, repo, {"UPSTREAM_PORT": str(port)}, [f"{UP}:{port}"])
        assert seen_inside["proxy"] == "127.0.0.1:3128"
        assert seen_inside["http"] == [200, "upstream saw /plain"]  # http:// through the proxy, path rewritten
        assert seen_inside["tunnel"][0] == 200 and "upstream saw /tunnel" in seen_inside["tunnel"][1]  # CONNECT
        assert seen_inside["blocked"][0] == 403 and "allowlist" in seen_inside["blocked"][1]
        assert seen_inside["other-port"][0] == 403  # the rule names one port
        assert seen_inside["no-credential"][0] == 407 and seen_inside["forged"][0] == 407
        assert "Connection refused" in seen_inside["direct"]  # its own loopback: no way around the proxy
        assert seen == ["/plain", "/tunnel"]  # what reached the upstream: the two allowed requests, nothing else

        blocks = await _events(s, agent.id, "safety:block")
        assert {(b["host"], b["port"]) for b in blocks} == {("example.org", 80), (UP, port + 1)}
        assert all(b["kind"] == "egress" and "allowlist" in b["reason"] for b in blocks)
        passed = await _events(s, agent.id, "agent:egress")
        assert sorted((p["host"], p["port"], p["method"]) for p in passed) == [
            (UP, port, "CONNECT"), (UP, port, "GET")
        ]  # fmt: skip


async def test_an_allowlisted_name_cannot_lead_into_the_servers_network(stack: Any, fast_tmp: Path) -> None:  # noqa: F811
    require_sandbox()
    repo = make_repo(fast_tmp / "repo", {"probe.py": PROBE})
    async with upstream() as (port, seen), stack([{"text": "unused"}], runtime="sandbox") as s:
        agent, seen_inside = await _run(s, repo, {"UPSTREAM_PORT": str(port)}, [f"{UP}:{port}"])
        assert seen_inside["http"][0] == 403 and "private address" in seen_inside["http"][1]
        assert seen_inside["tunnel"][0] == 403
        assert seen == []  # nothing reached the server's own network
        blocks = await _events(s, agent.id, "safety:block")
        assert blocks and all("private address" in b["reason"] for b in blocks if b["port"] == port)


async def test_a_bad_allowlist_is_refused_before_anything_is_made(stack: Any, fast_tmp: Path) -> None:  # noqa: F811
    repo = make_repo(fast_tmp / "repo")
    async with stack([{"text": "unused"}], runtime="sandbox") as s:
        import httpx

        async with httpx.AsyncClient(base_url=s.url, headers=s.headers) as http:
            for bad in (["http://github.com"], "github.com", ["*github.com"], ["a.com:99999"], [1]):
                body = {"task": "t", "repo": str(repo), "command": "true", "config": {"sandbox": {"egress": bad}}}
                r = await http.post("/api/v1/agents", json=body)
                assert r.status_code == 400, (bad, r.text)
                assert r.json()["error"]["details"]["fields"][0]["field"].startswith("config.sandbox.egress")
            assert (await http.get("/api/v1/agents")).json()["data"]["items"] == []
