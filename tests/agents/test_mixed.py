"""Ten agents of the six kinds at once on one repository: each on its own branch, each against its own scripted
model, no cross-talk between them."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from godel.agents import get_adapter
from godel.core.states import AgentState
from godel.scheduler.plane import ControlPlane
from godel.scheduler.requests import SpawnRequest
from godel.settings import Settings
from godel.testing import ScriptedModel
from tests.agents import test_aider, test_claude, test_codex, test_gemini, test_miniswe, test_pi
from tests.agents.conftest import MODEL, agents_dir, require_cli
from tests.conftest import make_repo, run_git

SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "pi": test_pi.EDIT,
    "claude": test_claude.EDIT,
    "codex": test_codex.EDIT,
    "gemini": test_gemini.EDIT,
    "aider": test_aider.EDIT,
    "mini-swe-agent": test_miniswe.EDIT,
}
FLEET = ["pi", "pi", "claude", "claude", "codex", "codex", "gemini", "aider", "mini-swe-agent", "mini-swe-agent"]


async def test_ten_agents_of_mixed_kinds_in_parallel_on_one_repo(fast_tmp: Path) -> None:
    for kind in SCRIPTS:
        require_cli(kind)
    repo = make_repo(fast_tmp / "repo")
    head = run_git(repo, "rev-parse", "HEAD")
    with ExitStack() as stack:
        providers: dict[str, Any] = {}
        models: dict[str, ScriptedModel] = {}
        for kind, turns in SCRIPTS.items():
            # One server per kind: the script is the CLI's own tool calls. Both agents of a kind share it (the
            # server keys turns on the request, not on a conversation, so they cannot disturb each other).
            model = models[kind] = stack.enter_context(ScriptedModel(turns))
            wire = get_adapter(kind).wire_apis[0]
            base = model.base_url if wire.startswith("openai") else model.url
            providers[f"m-{kind}"] = {"kind": wire, "base_url": base, "models": [MODEL]}
        settings = Settings(
            home=fast_tmp / "home", watch_interval=0.05, reconcile_interval=0.05, kill_grace=2.0,
            max_concurrent_agents=10, agents_dir=agents_dir(), agent_cli_retries=0, providers=providers,
            use_gateway=False, default_timeout=300.0,
        )  # fmt: skip
        plane = ControlPlane(settings)
        await plane.start()
        try:
            agents = [
                await plane.spawn(
                    SpawnRequest(
                        task="create hello.txt",
                        repo=str(repo),
                        agent=kind,
                        model=f"m-{kind}/{MODEL}",
                        label=f"{kind}-{i}",
                    ),
                    actor="test",
                )
                for i, kind in enumerate(FLEET)
            ]
            ended = await asyncio.wait_for(_all_ended(plane, [a.id for a in agents]), timeout=280)
        finally:
            for agent_id in list(plane.supervisor.runs):
                await plane.kill(agent_id, actor="test", reason="teardown")
            await plane.stop()

    branches = set()
    for agent in ended:
        assert agent.state == AgentState.COMPLETED, (agent.label, agent.last_error)
        # its own change, and only its own, on its own branch
        assert run_git(repo, "show", f"{agent.branch}:hello.txt") == f"hello from {agent.kind.split('-')[0]}"
        changed = run_git(repo, "diff", "--name-only", f"{head}..{agent.branch}").split()
        assert changed == ["hello.txt"], (agent.label, changed)
        branches.add(agent.branch)
    assert len(branches) == 10
    # the repository's own checkout was never touched
    assert run_git(repo, "status", "--porcelain") == "" and run_git(repo, "rev-parse", "HEAD") == head
    # every agent's usage came from its own kind's server, and all of it was recorded
    for kind, model in models.items():
        recorded = sum(a.outcome["usage"].get("outputTokens", 0) for a in ended if a.kind == kind)
        if kind == "aider":  # aider does not report its commit-message calls
            assert 0 < recorded <= model.usage_reported.output_tokens
        else:
            assert recorded == model.usage_reported.output_tokens, kind


async def _all_ended(plane: ControlPlane, ids: list[str]) -> list[Any]:
    while True:
        agents = [await plane.get(i) for i in ids]
        if all(a.state in (AgentState.COMPLETED, AgentState.FAILED, AgentState.KILLED) for a in agents):
            return agents
        await asyncio.sleep(0.2)  # polling the store for the supervisor's verdicts
