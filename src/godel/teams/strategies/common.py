"""What the strategies share: checking an agent completed, reading its result as a ``Piece``, the merge gate."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from godel.core.models import Agent
from godel.core.states import AgentState
from godel.runtimes.git import git_bytes
from godel.teams.prompts import Piece
from godel.teams.runner import StepFailed, TeamRun

T = TypeVar("T")


async def together(steps: Sequence[Awaitable[T]]) -> list[T]:
    """All of ``steps`` side by side; the first to fail stops the others (no sibling goes on spawning agents
    for a team that has failed) and its exception is raised as it is."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def completed(agent: Agent, what: str) -> Agent:
    """The agent, if it completed; otherwise the team fails, saying which step did not and why."""
    if agent.state != AgentState.COMPLETED:
        why = agent.last_error or (agent.outcome or {}).get("reason") or "no reason recorded"
        raise StepFailed(f"{what} ({agent.metadata.get('step')}, agent {agent.id}) ended {agent.state.value}: {why}")
    return agent


def piece(agent: Agent, label: str, task: str) -> Piece:
    return Piece(label=label, task=task, result=str((agent.outcome or {}).get("result") or ""), branch=agent.branch)


def as_json(agent: Agent, **extra: object) -> dict[str, object]:
    return {
        "agentId": agent.id,
        "step": agent.metadata.get("step"),
        "state": agent.state.value,
        "branch": agent.branch,
        "result": (agent.outcome or {}).get("result"),
        **extra,
    }


async def check_merged(run: TeamRun, agent: Agent, branches: Sequence[str | None]) -> None:
    """The merge gate: a refinery's branch must contain every branch it was given."""
    missing = []
    for branch in branches:
        if not branch or not agent.branch:
            continue
        rc, _, _ = await git_bytes("merge-base", "--is-ancestor", branch, agent.branch, cwd=run.repo_path(),
                                   check=False)  # fmt: skip
        if rc != 0:
            missing.append(branch)
    if missing:
        raise StepFailed(
            f"the refinery ({agent.metadata.get('step')}, agent {agent.id}) did not merge {', '.join(missing)} "
            f"into {agent.branch}"
        )


def gate_of(run: TeamRun, role_name: str) -> str:
    role = run.roles.get(role_name)
    return role.gate if role else "none"
