"""Real agent CLIs inside the sandbox, end to end: the model through the gateway (relay → Unix socket), the edit
committed on the agent's branch, every token metered. The other CLIs join as the sandbox becomes the default."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from godel.core.states import AgentState
from godel.scheduler.requests import SpawnRequest
from tests.agents.conftest import agents_dir, require_cli
from tests.conftest import make_repo, run_git
from tests.gateway.conftest import MODEL, stack  # noqa: F401 (the fixture)
from tests.gateway.test_agents_through_gateway import CASES
from tests.sandbox.conftest import require_sandbox


@pytest.mark.parametrize("kind", ["pi", "codex"])
async def test_a_real_cli_completes_in_the_sandbox(stack: Any, fast_tmp: Path, kind: str) -> None:  # noqa: F811
    require_sandbox()
    require_cli(kind)
    provider, turns = CASES[kind]
    repo = make_repo(fast_tmp / f"repo-{kind}")
    settings = {"agents_dir": agents_dir(), "agent_cli_retries": 0, "watch_interval": 0.02, "runtime": "sandbox"}
    async with stack(turns, **settings) as s:
        agent = await s.plane.spawn(
            SpawnRequest(task="create hello.txt", repo=str(repo), agent=kind, model=f"{provider}/{MODEL}", timeout=120)
        )
        deadline = time.monotonic() + 120
        while (done := await s.plane.get(agent.id)).state not in (AgentState.COMPLETED, AgentState.FAILED):
            assert time.monotonic() < deadline, f"{kind} did not end"
            await asyncio.sleep(0.1)
        logs = s.plane.settings.home / "logs" / agent.id
        assert done.state == AgentState.COMPLETED, (done.last_error, (logs / "stderr.log").read_text()[-3000:])
        assert run_git(repo, "show", f"{done.branch}:hello.txt").startswith("hello from")
        records = await s.records()
        assert records and all(r.agent_id == agent.id and r.status_code == 200 for r in records)
        assert sum(r.output_tokens for r in records) == s.model.usage_reported.output_tokens
