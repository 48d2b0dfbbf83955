"""The fallback chain of the issue's example, each runtime real or faked at its paid edge: an agent asks for
``e2b`` with ``container`` and ``sandbox`` behind it. E2B refuses to create the sandbox (the fake answers 403), the
container runtime has no such image on this machine, and the agent runs in the sandbox; each move is an
``agent:runtime:fallback`` event, and nothing was left behind by the runtimes that failed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from godel.core.events import EventFilter
from godel.core.ports import EventQuery
from godel.core.states import AgentState
from godel.scheduler.plane import ControlPlane
from godel.scheduler.requests import SpawnRequest
from tests.api.conftest import kill_runs, settings_for
from tests.conftest import make_repo, run_git
from tests.remote.conftest import API_KEY, fake_e2b
from tests.sandbox.conftest import require_sandbox
from tests.sandbox.containers import require_container


async def test_e2b_then_container_then_sandbox(fast_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_sandbox()
    require_container()
    fake = fake_e2b()
    monkeypatch.setenv("E2B_API_KEY", API_KEY)
    settings = settings_for(
        fast_tmp / "home", runtime="local", runtimes=["e2b", "container", "sandbox"], use_gateway=False,
        e2b_api_url=fake.url, e2b_sandbox_url=fake.url, container_image="localhost/godel-no-such-image:1",
    )  # fmt: skip
    repo = make_repo(fast_tmp / "repo")
    plane = ControlPlane(settings)
    await plane.start()
    try:
        fake.fail_next["create"] = 403  # e.g. the account may not create sandboxes (a 5xx the SDK retries)
        chain = {"runtime": "e2b", "fallback": ["container", "sandbox"]}
        agent = await plane.spawn(
            SpawnRequest(task="t", repo=str(repo), command="cat /proc/sys/kernel/hostname > where.txt && git add -A"
                         " && git commit -qm where", config={"sandbox": chain})
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while (done := await plane.get(agent.id)).state not in (AgentState.COMPLETED, AgentState.FAILED):
            assert time.monotonic() < deadline, "the agent did not end"
            await __import__("asyncio").sleep(0.05)  # polling the store for the supervisor's verdict
        assert done.state == AgentState.COMPLETED, done.last_error
        assert done.runtime_name == "sandbox"
        assert run_git(repo, "show", f"{done.branch}:where.txt").strip() == "godel-sandbox"
        found = await plane.events(
            EventQuery(filter=EventFilter(patterns=("agent:runtime:fallback",), agent_id=agent.id), limit=10)
        )
        moves = [(e.payload["from"], e.payload["to"], e.payload["code"]) for e in found]
        assert moves == [("e2b", "container", "RUNTIME_ERROR"), ("container", "sandbox", "RUNTIME_UNAVAILABLE")]
        assert "403" in found[0].payload["error"] and "godel-no-such-image" in found[1].payload["error"]
        assert "create" not in fake.fail_next  # E2B was really asked, and refused
        # The failed runtimes left nothing: one workspace (the sandbox's), no other branch.
        assert run_git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/godel/").split() == [done.branch]
    finally:
        await kill_runs(plane)
        await plane.stop()
