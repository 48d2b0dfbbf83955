"""The sandbox's one way out: the gateway, through the relay to the server's Unix socket, with the gateway's own
authentication and metering; the control API on the same port number answers only the agent's own run credential
(``GODEL_API_KEY``, scoped to the agent), never a user's key, not even an administrator's found in the workspace."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from godel.core.states import AgentState
from godel.scheduler.requests import SpawnRequest
from tests.conftest import make_repo
from tests.gateway.conftest import MODEL, stack  # noqa: F401 (the fixture)
from tests.sandbox.conftest import require_gvisor, require_sandbox

PROBE = """
import json, os, pathlib, time, urllib.error, urllib.request
port = os.environ["GODEL_TEST_PORT"]
for _ in range(3000):
    if pathlib.Path("keys.json").exists():
        break
    time.sleep(0.01)
keys = json.loads(pathlib.Path("keys.json").read_text())

def call(method, path, headers, body=None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {**headers, "Content-Type": "application/json"}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return [reply.status, reply.read().decode()]
    except urllib.error.HTTPError as exc:
        return [exc.code, exc.read().decode()]

chat = {"model": keys["model"], "messages": [{"role": "user", "content": "hi"}]}
own = {"Authorization": f"Bearer {os.environ['GODEL_API_KEY']}"}
me = os.environ["GODEL_AGENT_ID"]
assert os.environ["GODEL_URL"] == f"http://127.0.0.1:{port}", os.environ["GODEL_URL"]
print(json.dumps({
    "self": call("GET", f"/api/v1/agents/{me}", own),
    "self-x-api-key": call("GET", f"/api/v1/agents/{me}", {"X-API-Key": os.environ["GODEL_API_KEY"]}),
    "others": call("GET", f"/api/v1/agents/{keys['other']}", own),
    "users": call("GET", "/api/v1/users", own),
    "spawn": call("POST", "/api/v1/agents", own, {"task": "t", "repo": ".", "command": "true"}),
    "none": call("GET", f"/api/v1/agents/{me}", {}),
    "chat": call("POST", "/proxy/v1/chat/completions", {"Authorization": f"Bearer {keys['agent']}"}, chat),
    "forged": call("POST", "/proxy/v1/chat/completions", {"Authorization": "Bearer sk-godel-not-a-key"}, chat),
    "api": call("GET", "/api/v1/agents", keys["admin"]),  # the administrator's own key: 200 if it were served
    "health": call("GET", "/health", {}),
}))
"""


ISOLATION = {"sandbox": "namespace", "gvisor": "user-kernel"}


@pytest.mark.parametrize("runtime", sorted(ISOLATION))
async def test_a_sandboxed_agent_reaches_the_gateway_and_nothing_else(
    stack: Any,  # noqa: F811
    fast_tmp: Path,
    runtime: str,
) -> None:
    if runtime == "gvisor":
        require_gvisor()
    else:
        require_sandbox()
    repo = make_repo(fast_tmp / "repo", {"probe.py": PROBE})
    async with stack([{"text": "Hello from the gateway."}], runtime=runtime, watch_interval=0.02) as s:
        assert s.plane.runtime.name == runtime
        async with httpx.AsyncClient() as http:
            caps = (await http.get(f"{s.url}/capabilities")).json()["data"]
            assert (await http.get(f"{s.url}/api/v1/agents", headers=s.headers)).status_code == 200  # from outside
        assert caps["isolation"] == ISOLATION[runtime] and caps["runtime"]["networkIsolation"] is True
        env = {"GODEL_TEST_PORT": str(s.plane.settings.port)}
        other = await s.plane.spawn(SpawnRequest(task="another", repo=str(repo), command="true"))
        agent = await s.plane.spawn(
            SpawnRequest(task="probe", repo=str(repo), command="/usr/bin/python3 probe.py", env=env, timeout=60)
        )
        key = await s.key("agent", agent.id)
        while not (running := await s.plane.get(agent.id)).worktree:  # noqa: ASYNC110 (admitted, workspace made)
            await asyncio.sleep(0.02)
        workspace = Path(running.worktree or "")
        keys = {"agent": key, "admin": s.headers, "model": MODEL, "other": other.id}
        (workspace / "keys.json").write_text(json.dumps(keys))
        deadline = time.monotonic() + 60
        while (done := await s.plane.get(agent.id)).state not in (AgentState.COMPLETED, AgentState.FAILED):
            assert time.monotonic() < deadline, "the probe did not end"
            await asyncio.sleep(0.05)
        out = (s.plane.settings.home / "logs" / agent.id / "stdout.log").read_text()
        err = (s.plane.settings.home / "logs" / agent.id / "stderr.log").read_text()
        assert done.state == AgentState.COMPLETED, (done.last_error, out, err)
        seen = json.loads(out.strip().splitlines()[-1])
        assert seen["chat"][0] == 200 and "Hello from the gateway." in seen["chat"][1]
        assert seen["forged"][0] == 401  # the gateway's own authentication holds on the socket too
        assert seen["api"][0] == 404 and seen["health"][0] == 404  # a user's key gets nothing: not served here
        assert seen["none"][0] == 404
        # The agent's own run credential reaches the API, within its role: itself, nothing else.
        assert seen["self"][0] == 200 and json.loads(seen["self"][1])["data"]["id"] == agent.id, seen["self"]
        assert seen["self-x-api-key"][0] == 200
        assert seen["others"][0] in (403, 404) and seen["users"][0] == 403, (seen["others"], seen["users"])
        assert seen["spawn"][0] == 403, seen["spawn"]  # its spawn did not allow sub-agents
        records = await s.records()
        assert [(r.agent_id, r.status_code) for r in records] == [(agent.id, 200)]  # metered to this agent
        assert records[0].output_tokens > 0


async def test_with_authentication_off_the_socket_serves_no_api(stack: Any) -> None:  # noqa: F811
    """Authentication off: every caller would be the local administrator, so no credential can be trusted and the
    socket answers 404 to every API path, whatever it carries; the gateway still answers there."""
    async with stack([{"text": "unused"}], runtime="sandbox", auth_enabled=False) as s:
        socket = s.plane.settings.gateway_socket
        transport = httpx.AsyncHTTPTransport(uds=str(socket))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            for headers in ({}, {"Authorization": "Bearer godel_ak_x_y"}, {"X-API-Key": "godel_ak_x_y"}):
                assert (await c.get("/api/v1/agents", headers=headers)).status_code == 404
            forged = await c.post("/proxy/v1/chat/completions", json={"model": MODEL, "messages": []},
                                  headers={"Authorization": "Bearer sk-godel-not-a-key"})  # fmt: skip
            assert forged.status_code == 401  # the gateway is served, with its own authentication
        async with httpx.AsyncClient() as http:  # on the TCP port, authentication off, the API answers
            assert (await http.get(f"{s.url}/api/v1/agents")).status_code == 200
