"""Agents in containers end to end, through a real server: a ``command`` agent reaches the gateway (and nothing else)
through the relay to the server's Unix socket, and the real ``pi`` CLI (the host's node and CLI folder bound
read-only) completes its edit through the gateway, metered to its virtual key."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from godel.core.states import AgentState
from godel.scheduler.requests import SpawnRequest
from tests.agents import test_pi
from tests.agents.conftest import agents_dir, require_cli
from tests.conftest import make_repo, run_git
from tests.gateway.conftest import MODEL, UPSTREAM_KEY, stack  # noqa: F401 (the fixture)
from tests.sandbox.containers import require_container
from tests.sandbox.test_gateway import PROBE


async def _until_done(s: Any, agent_id: str, within: float) -> Any:
    deadline = time.monotonic() + within
    while (done := await s.plane.get(agent_id)).state not in (AgentState.COMPLETED, AgentState.FAILED):
        assert time.monotonic() < deadline, "the agent did not end"
        await asyncio.sleep(0.05)  # polling the store for the supervisor's verdict
    return done


async def test_a_contained_agent_reaches_the_gateway_and_nothing_else(stack: Any, fast_tmp: Path) -> None:  # noqa: F811
    require_container()
    repo = make_repo(fast_tmp / "repo", {"probe.py": PROBE})
    async with stack([{"text": "Hello from the gateway."}], runtime="container", watch_interval=0.02) as s:
        assert s.plane.runtime.name == "container"
        env = {"GODEL_TEST_PORT": str(s.plane.settings.port)}
        other = await s.plane.spawn(SpawnRequest(task="another", repo=str(repo), command="true"))
        agent = await s.plane.spawn(
            SpawnRequest(task="probe", repo=str(repo), command="python3 probe.py", env=env, timeout=60)
        )
        key = await s.key("agent", agent.id)
        while not (running := await s.plane.get(agent.id)).worktree:  # noqa: ASYNC110 (admitted, workspace made)
            await asyncio.sleep(0.02)
        workspace = Path(running.worktree or "")
        keys = {"agent": key, "admin": s.headers, "model": MODEL, "other": other.id}
        (workspace / "keys.json").write_text(json.dumps(keys))
        done = await _until_done(s, agent.id, 60)
        logs = s.plane.settings.home / "logs" / agent.id
        out, err = (logs / "stdout.log").read_text(), (logs / "stderr.log").read_text()
        assert done.state == AgentState.COMPLETED, (done.last_error, out, err)
        seen = json.loads(out.strip().splitlines()[-1])
        assert seen["chat"][0] == 200 and "Hello from the gateway." in seen["chat"][1]
        assert seen["forged"][0] == 401  # the gateway's own authentication holds on the socket too
        assert seen["api"][0] == 404 and seen["health"][0] == 404  # a user's key gets nothing inside
        assert seen["self"][0] == 200 and seen["others"][0] in (403, 404)  # the agent's own credential: itself only
        records = await s.records()
        assert [(r.agent_id, r.status_code) for r in records] == [(agent.id, 200)]  # metered to this agent


async def test_pi_completes_its_edit_in_a_container(stack: Any, fast_tmp: Path) -> None:  # noqa: F811
    require_cli("pi")
    require_container()
    repo = make_repo(fast_tmp / "repo-pi")
    settings = {"agents_dir": agents_dir(), "agent_cli_retries": 0, "watch_interval": 0.02,
                "reconcile_interval": 0.05, "runtime": "container"}  # fmt: skip
    async with stack(test_pi.EDIT, **settings) as s:
        agent = await s.plane.spawn(
            SpawnRequest(task="create hello.txt", repo=str(repo), agent="pi", model=f"scripted/{MODEL}", timeout=120)
        )
        done = await _until_done(s, agent.id, 120)
        assert done.state == AgentState.COMPLETED, done.last_error
        assert run_git(repo, "show", f"{done.branch}:hello.txt").startswith("hello from")
        records = await s.records()
        assert records and all(r.agent_id == agent.id and r.status_code == 200 for r in records)
        assert sum(r.output_tokens for r in records) == s.model.usage_reported.output_tokens
        assert set(s.model.credentials) <= {UPSTREAM_KEY, f"Bearer {UPSTREAM_KEY}"}  # the agent never had it
