"""``parallel``: independent agents, each on its own branch.

With one ``task``, ``size`` agents work on it (steps ``agent/0``, ``agent/1``…) and the team scales live: up
spawns more agents on the task at once; down kills the newest agents still running (recorded in
``run.scaledDown`` before they are killed, so a restart knows they were let go on purpose, not lost) — agents
that already ended are never undone. Step numbers are never reused: scaling 3 → 1 → 3 runs ``agent/3`` and
``agent/4`` next. The team completes when the agents it keeps have all ended, and fails if any of them did
not complete.

With a list of ``tasks``, one agent per task (``task/0``…), at most ``size`` at once (the pool; a scale resizes
it for the tasks not yet started).

Result: one entry per kept agent ``{agentId, step, state, branch, result}``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from godel.core.models import Agent
from godel.core.runs import ended_for_good
from godel.errors import GodelError
from godel.teams.progress import outcome
from godel.teams.runner import StepFailed, TeamRun
from godel.teams.strategies.common import as_json

PREFIX = "agent/"


async def run(team: TeamRun) -> list[dict[str, Any]]:
    if team.spec.tasks:
        return await _task_list(team)
    return await _one_task(team)


async def _task_list(team: TeamRun) -> list[dict[str, Any]]:
    tasks = team.spec.tasks
    role = team.spec.role_of("worker")
    await team.expect(len(tasks))
    agents = await asyncio.gather(
        *(team.run_step(f"task/{i}", role, t, pooled=True, meta={"item": i}) for i, t in enumerate(tasks))
    )
    verdict = outcome(agents)
    if not verdict.ok:
        raise StepFailed(verdict.reason("worker") or "a worker failed")
    return [as_json(a, item=i, task=t) for i, (a, t) in enumerate(zip(agents, tasks, strict=True))]


def index_of(step: str) -> int:
    return int(step.removeprefix(PREFIX))


def kept(team: TeamRun) -> list[Agent]:
    """The agents on the task that a scale-down did not let go, oldest first."""
    gone = set(team.noted("scaledDown", []))
    mine = [a for step, a in team.known.items() if step.startswith(PREFIX) and a.id not in gone]
    return sorted(mine, key=lambda a: index_of(str(a.metadata["step"])))


async def _one_task(team: TeamRun) -> list[dict[str, Any]]:
    task = team.spec.task or ""
    role = team.spec.role_of("worker")
    waits: dict[str, asyncio.Task[Agent]] = {}
    try:
        while True:
            team.scaled.clear()
            live = kept(team)
            next_index = max((index_of(s) for s in team.known if s.startswith(PREFIX)), default=-1) + 1
            wanted = range(next_index, next_index + max(0, team.spec.size - len(live)))
            live += await asyncio.gather(*(team.launch(f"{PREFIX}{n}", role, task, meta={"index": n}) for n in wanted))
            await team.expect(len(live) + len(team.noted("scaledDown", [])))
            pending = [a for a in live if not ended_for_good(a)]
            if not pending:
                break
            for agent in pending:
                if agent.id not in waits:
                    waits[agent.id] = asyncio.create_task(team.wait(agent))
            scaled = asyncio.create_task(team.scaled.wait())
            try:
                await asyncio.wait([scaled, *(waits[a.id] for a in pending)], return_when=asyncio.FIRST_COMPLETED)
            finally:
                scaled.cancel()
            for agent_id, waiting in list(waits.items()):
                if waiting.done():
                    waiting.result()  # the agent is recorded in team.known; a failure to wait is raised here
                    del waits[agent_id]
    finally:
        for waiting in waits.values():
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await waiting
    agents = kept(team)
    verdict = outcome(agents)
    if not verdict.ok:
        raise StepFailed(verdict.reason("worker") or "a worker failed")
    return [as_json(a) for a in agents]


async def rescale(team: TeamRun, size: int) -> list[str]:
    """Apply a new size to a running one-task team: kill the newest running agents beyond it (recorded first).
    Returns the ids killed; growing needs nothing here (the strategy's loop spawns on ``team.scaled``)."""
    if team.spec.tasks:
        return []
    live = kept(team)
    excess = len(live) - size
    if excess <= 0:
        return []
    fresh = {a.id: a for a in live}
    for agent_id in list(fresh):  # the newest state of each: one may have ended since it was last seen
        with contextlib.suppress(GodelError):
            fresh[agent_id] = await team.plane.get(agent_id)
    running = [a for a in reversed(live) if not ended_for_good(fresh[a.id])]
    victims = running[:excess]
    if not victims:
        return []
    await team.note(scaledDown=[*team.noted("scaledDown", []), *(a.id for a in victims)])
    for agent in victims:
        try:
            await team.plane.kill(agent.id, actor=team.actor, reason=f"team scaled down to {size}")
        except GodelError:
            pass  # it ended meanwhile: it is still let go (recorded above), and its result is not counted
    return [a.id for a in victims]
