"""Review of the per-agent runtimes and the sandbox's control API: ways out of the sandbox that go through Godel.

Each test is an attacker's move made from inside a real sandbox (bubblewrap, the relay, the server's socket): the
sandboxed agent holds its own run credential (``GODEL_API_KEY``), which the gateway socket now serves the control API
to, and tries to get something run outside its sandbox. A marker file in a directory the sandbox cannot see shows
whether the move worked: it can only appear if something ran on the host.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from godel.core.states import AgentState
from godel.scheduler.requests import SpawnRequest
from tests.api.conftest import kill_runs
from tests.conftest import make_repo
from tests.gateway.conftest import stack  # noqa: F401 (the fixture)
from tests.sandbox.conftest import require_sandbox

# Run inside the sandbox: spawn the sub-agent described by $CHILD through GODEL_URL with the run's own credential.
SPAWNER = r"""
import json, os, urllib.error, urllib.request
body = json.loads(os.environ["CHILD"])
request = urllib.request.Request(
    os.environ["GODEL_URL"] + "/api/v1/agents", data=json.dumps(body).encode(), method="POST",
    headers={"Authorization": "Bearer " + os.environ["GODEL_API_KEY"], "Content-Type": "application/json"},
)
try:
    with urllib.request.urlopen(request, timeout=30) as reply:
        print(json.dumps([reply.status, json.loads(reply.read())]))
except urllib.error.HTTPError as exc:
    print(json.dumps([exc.code, exc.read().decode()]))
"""

ENDED = (AgentState.COMPLETED, AgentState.FAILED, AgentState.KILLED)


async def _ended(s: Any, agent_id: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while (agent := await s.plane.get(agent_id)).state not in ENDED:
        assert time.monotonic() < deadline, f"agent {agent_id} did not end (state {agent.state})"
        await asyncio.sleep(0.05)  # polling the store for the supervisor's verdict
    return agent


async def _spawn_from_inside(s: Any, repo: Path, child: dict[str, Any]) -> tuple[int, Any]:
    """A sandboxed parent allowed sub-agents spawns ``child`` from inside its sandbox; (status, body), and the
    child (if any) is waited for to its end."""
    parent = await s.plane.spawn(
        SpawnRequest(task="spawn a helper", repo=str(repo), command="/usr/bin/python3 spawner.py", timeout=60,
                     env={"CHILD": json.dumps(child)}, allow_subagents=True)
    )  # fmt: skip
    done = await _ended(s, parent.id)
    logs = s.plane.settings.home / "logs" / parent.id
    out, err = (logs / "stdout.log").read_text(), (logs / "stderr.log").read_text()
    assert done.state == AgentState.COMPLETED and done.runtime_name == "sandbox", (done.last_error, out, err)
    status, body = json.loads(out.strip().splitlines()[-1])
    if status == 201:
        await _ended(s, body["data"]["id"])
    return status, body


async def test_a_sandboxed_agent_runs_a_host_command_through_a_sub_agents_setup(
    stack: Any,  # noqa: F811
    fast_tmp: Path,
) -> None:
    """The run credential is now served inside the sandbox; with allowSubagents it spawns a sub-agent whose
    ``setup`` runs on the HOST (LocalRuntime.prepare -> worktrees.run_setup), as the server's user, unconfined."""
    require_sandbox()
    repo = make_repo(fast_tmp / "repo", {"spawner.py": SPAWNER})
    outside = fast_tmp / "host-only"  # not bound into any sandbox
    outside.mkdir()
    marker = outside / "escaped"
    child = {"task": "t", "repo": str(repo), "command": "true",
             "setup": f"(id -u; cat /proc/sys/kernel/hostname) > {marker}"}  # fmt: skip
    async with stack([{"text": "unused"}], runtime="sandbox", watch_interval=0.02) as s:
        try:
            status, _body = await _spawn_from_inside(s, repo, child)
        finally:
            await kill_runs(s.plane)
    assert not marker.exists(), (
        "SANDBOX ESCAPE: a sandboxed agent (allowSubagents) spawned, through the gateway socket, a sub-agent whose "
        f"setup command ran on the host and wrote {marker}: {marker.read_text()!r} (spawn answer {status})"
    )


async def test_a_sandboxed_agent_spawns_an_unconfined_sub_agent(stack: Any, fast_tmp: Path) -> None:  # noqa: F811
    """An operator who offers ``local`` for trusted jobs (runtimes = ["local"]) beside a sandbox default: a sandboxed
    agent names ``config.sandbox.runtime = "local"`` for its sub-agent, which then runs on the host."""
    require_sandbox()
    repo = make_repo(fast_tmp / "repo", {"spawner.py": SPAWNER})
    outside = fast_tmp / "host-only"
    outside.mkdir()
    marker = outside / "escaped"
    child = {"task": "t", "repo": str(repo), "command": f"cat /proc/sys/kernel/hostname > {marker}",
             "config": {"sandbox": {"runtime": "local"}}}  # fmt: skip
    async with stack([{"text": "unused"}], runtime="sandbox", runtimes=["local"], watch_interval=0.02) as s:
        try:
            status, body = await _spawn_from_inside(s, repo, child)
        finally:
            await kill_runs(s.plane)
    isolation = body["data"]["isolation"] if status == 201 else None
    assert not marker.exists() and isolation != {"runtime": "local", "level": "worktree"}, (
        "RUNTIME DOWNGRADE: a sandboxed agent's sub-agent ran unconfined (config.sandbox.runtime=local, spawned "
        f"from inside the sandbox); it wrote {marker} on the host. Spawn answer {status}, isolation {isolation}. "
        "A sub-agent must not get a weaker runtime than its parent's."
    )


async def test_a_sub_agent_names_a_fallback_chain_that_ends_unconfined(stack: Any, fast_tmp: Path) -> None:  # noqa: F811
    """The same downgrade, dressed as a fallback: a sandboxed parent's sub-agent asks for the sandbox with
    ``fallback: ["local"]``; the chain is accepted as is, so the parent chose where its child may end up."""
    require_sandbox()
    repo = make_repo(fast_tmp / "repo", {"spawner.py": SPAWNER})
    child = {"task": "t", "repo": str(repo), "command": "true",
             "config": {"sandbox": {"runtime": "sandbox", "fallback": ["local"]}}}  # fmt: skip
    async with stack([{"text": "unused"}], runtime="sandbox", runtimes=["local"], watch_interval=0.02) as s:
        try:
            status, body = await _spawn_from_inside(s, repo, child)
        finally:
            await kill_runs(s.plane)
    chain = body["data"]["config"]["sandbox"]["fallback"] if status == 201 else None
    assert status != 201 or "local" not in (chain or []), (
        f"a sandboxed agent gave its sub-agent a fallback chain into the local runtime ({chain}): any runtime "
        "failure of the sandbox now lands the child unconfined"
    )


pytestmark = pytest.mark.timeout(180)


# Run inside the sandbox: spawn $CHILD, wait for it to end, and print what it printed (read back with the run's own
# credential, which may read the sub-agents it spawned).
READER = r"""
import json, os, time, urllib.error, urllib.request
def call(method, path, body=None):
    request = urllib.request.Request(
        os.environ["GODEL_URL"] + path, data=json.dumps(body).encode() if body is not None else None, method=method,
        headers={"Authorization": "Bearer " + os.environ["GODEL_API_KEY"], "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
status, made = call("POST", "/api/v1/agents", json.loads(os.environ["CHILD"]))
lines = []
if status == 201:
    child = made["data"]["id"]
    for _ in range(600):
        if call("GET", f"/api/v1/agents/{child}")[1]["data"]["state"] in ("completed", "failed", "killed"):
            break
        time.sleep(0.05)
    lines = [x["line"] for x in call("GET", f"/api/v1/agents/{child}/logs?tail=20")[1]["data"]["items"]]
print(json.dumps([status, lines]))
"""


async def test_a_sandboxed_agent_reads_another_repository_through_a_sub_agent(stack: Any, fast_tmp: Path) -> None:  # noqa: F811
    """The sandbox shows an agent its own workspace only; its sub-agent may be spawned on ANY repository the server
    can reach (here one holding a secret), and the parent reads the sub-agent's output back through the API."""
    require_sandbox()
    repo = make_repo(fast_tmp / "repo", {"reader.py": READER})
    secret = make_repo(fast_tmp / "someone-elses", {"secret.txt": "the-other-teams-secret"})
    child = {"task": "t", "repo": str(secret), "command": "cat secret.txt"}
    async with stack([{"text": "unused"}], runtime="sandbox", watch_interval=0.02) as s:
        try:
            parent = await s.plane.spawn(
                SpawnRequest(task="read", repo=str(repo), command="/usr/bin/python3 reader.py", timeout=90,
                             env={"CHILD": json.dumps(child)}, allow_subagents=True)
            )  # fmt: skip
            done = await _ended(s, parent.id, timeout=90)
        finally:
            await kill_runs(s.plane)
        out = (s.plane.settings.home / "logs" / parent.id / "stdout.log").read_text()
    assert done.state == AgentState.COMPLETED, (done.last_error, out)
    status, lines = json.loads(out.strip().splitlines()[-1])
    assert "the-other-teams-secret" not in lines, (
        f"a sandboxed agent spawned a sub-agent on another repository ({secret}, answer {status}) and read its "
        f"files back: {lines}. Sub-agents of an agent should be held to the parent's repository."
    )
