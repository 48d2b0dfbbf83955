"""Real agent CLIs through the gateway: each gets a virtual key, the provider's key never reaches it, and every
token the model reported is metered."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from godel.core.events import EventFilter
from godel.core.ports import EventQuery
from godel.core.states import AgentState
from godel.scheduler.requests import SpawnRequest
from tests.agents import test_aider, test_claude, test_codex, test_gemini, test_miniswe, test_pi
from tests.agents.conftest import agents_dir, require_cli
from tests.conftest import make_repo, run_git
from tests.gateway.conftest import MODEL, UPSTREAM_KEY
from tests.sandbox.conftest import require_gvisor, require_sandbox

CASES = {
    "pi": ("scripted", test_pi.EDIT),
    "claude": ("scripted-anthropic", test_claude.EDIT),
    "codex": ("scripted-responses", test_codex.EDIT),
    "aider": ("scripted", test_aider.EDIT),
    "mini-swe-agent": ("scripted", test_miniswe.EDIT),
    "gemini": ("scripted-gemini", test_gemini.EDIT),
}


# Every CLI on the local runtime and in the sandbox (bubblewrap: the gateway reached through its relay and Unix
# socket, nothing else); pi and codex in gvisor (the sandbox's contract, gVisor's kernel).
RUNS = [(kind, runtime) for runtime in ("local", "sandbox") for kind in CASES] + [("pi", "gvisor"), ("codex", "gvisor")]


@pytest.mark.parametrize(("kind", "runtime"), RUNS, ids=[f"{k}-{r}" for k, r in RUNS])
async def test_agent_runs_through_the_gateway_with_a_virtual_key(
    stack: Any, fast_tmp: Path, kind: str, runtime: str
) -> None:
    require_cli(kind)
    if runtime == "sandbox":
        require_sandbox()
    if runtime == "gvisor":
        require_gvisor()
    provider, turns = CASES[kind]
    repo = make_repo(fast_tmp / f"repo-{kind}")
    settings = {"agents_dir": agents_dir(), "agent_cli_retries": 0, "watch_interval": 0.02,
                "reconcile_interval": 0.05, "runtime": runtime}  # fmt: skip
    async with stack(turns, **settings) as s:
        agent = await s.plane.spawn(
            SpawnRequest(task="create hello.txt", repo=str(repo), agent=kind, model=f"{provider}/{MODEL}", timeout=120)
        )
        deadline = time.monotonic() + 120
        while (done := await s.plane.get(agent.id)).state not in (AgentState.COMPLETED, AgentState.FAILED):
            assert time.monotonic() < deadline, f"{kind} did not end"
            await asyncio.sleep(0.1)  # polling the store for the supervisor's verdict
        logs = s.plane.settings.home / "logs" / agent.id
        tail = "".join(f.read_text(errors="replace")[-6000:] for f in sorted(logs.glob("*.log")))
        assert done.state == AgentState.COMPLETED, (done.last_error, tail)
        assert run_git(repo, "show", f"{done.branch}:hello.txt").startswith("hello from")

        # Every request reached the provider with the provider's key, and was metered to this agent.
        records = await s.records()
        assert records and all(r.agent_id == agent.id and r.status_code == 200 and r.complete for r in records)
        assert sum(r.output_tokens for r in records) == s.model.usage_reported.output_tokens
        assert sum(r.input_tokens + r.cached_tokens for r in records) == s.model.usage_reported.input_tokens
        assert set(s.model.credentials) <= {UPSTREAM_KEY, f"Bearer {UPSTREAM_KEY}"}
        assert all(r.path.startswith("/v1beta/") for r in s.model.requests) == (kind == "gemini")

        # The provider's key is nowhere the agent could see it: its config dir, output, workspace, events.
        home = s.plane.settings.home
        for root in (home / "run" / agent.id, Path(done.worktree or ""), home / "logs" / agent.id):
            for f in root.rglob("*"):
                if f.is_file() and ".git" not in f.parts:
                    assert UPSTREAM_KEY not in f.read_text(errors="replace"), f
        events = await s.plane.events(EventQuery(filter=EventFilter(agent_id=agent.id), limit=10_000))
        assert all(UPSTREAM_KEY not in str(e.payload) for e in events)

        # Its virtual key died with the run.
        keys = await s.plane.store.list_keys(scope_type="agent", scope_id=agent.id, revoked=True)
        assert keys and all(k.revoked_at is not None for k in keys)
