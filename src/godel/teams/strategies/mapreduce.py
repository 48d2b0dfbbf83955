"""``map-reduce``: a split, one worker per item, then one reduce agent.

1. Split (``map/split``): the team's ``tasks`` when given; otherwise a coordinator agent answers a JSON list of
   subtasks (``parsing.parse_subtasks``). An empty list means "do it in one piece": one item, the task itself.
   A coordinator that fails, or answers no list, fails the team.
2. Map (``map/item/N``): one worker per item, at most ``size`` at once (the pool; a scale resizes it for the
   items not started yet; 0 holds them until it is raised again). Any worker that does not complete fails the
   team before the reduce.
3. Reduce (``reduce``): one agent whose task holds every item, its worker's result and its branch. If its role
   is a ``merge`` gate (``roles: {reduce: refinery}``), its branch must contain every worker's branch.

Result: the reduce agent's result, its branch, and the items' results.
"""

from __future__ import annotations

import asyncio
from typing import Any

from godel.teams import prompts
from godel.teams.parsing import FormatError, parse_subtasks
from godel.teams.progress import outcome
from godel.teams.runner import StepFailed, TeamRun
from godel.teams.strategies.common import as_json, check_merged, completed, gate_of, piece


async def split(team: TeamRun) -> list[str]:
    spec = team.spec
    if spec.tasks:
        return list(spec.tasks)
    await team.expect(max(int(team.noted("expectedAgents") or 0), 1 + spec.size + 1))
    coordinator = await team.run_step(
        "map/split", spec.role_of("coordinator"), prompts.split(spec.task or ""), meta={"phase": "split"}
    )
    completed(coordinator, "the split")
    try:
        items = parse_subtasks((coordinator.outcome or {}).get("result"))
    except FormatError as exc:
        raise StepFailed(f"the split (agent {coordinator.id}): {exc}") from None
    return items or [spec.task or ""]


async def run(team: TeamRun) -> dict[str, Any]:
    spec = team.spec
    items = await split(team)
    if team.noted("items") != items:
        await team.note(items=items)
    await team.expect((0 if spec.tasks else 1) + len(items) + 1)
    worker = spec.role_of("worker")
    whole = spec.task if spec.task else None
    agents = await asyncio.gather(
        *(
            team.run_step(
                f"map/item/{i}",
                worker,
                prompts.item(t, i, len(items), whole),
                pooled=True,
                meta={"item": i, "phase": "map"},
            )
            for i, t in enumerate(items)
        )
    )
    verdict = outcome(agents)
    if not verdict.ok:
        raise StepFailed(verdict.reason("worker") or "a worker failed")
    reducer_role = spec.role_of("reduce")
    merge = gate_of(team, reducer_role) == "merge"
    pieces = [piece(a, f"item {i + 1}: {t}", t) for i, (a, t) in enumerate(zip(agents, items, strict=True))]
    task = spec.reduce_task or spec.task or "the team's tasks, listed below"
    reducer = await team.run_step(
        "reduce", reducer_role, prompts.reduce(task, pieces, merge=merge), meta={"phase": "reduce"}
    )
    completed(reducer, "the reduce")
    if merge:
        await check_merged(team, reducer, [a.branch for a in agents])
    return {
        "result": (reducer.outcome or {}).get("result"),
        "branch": reducer.branch,
        "agentId": reducer.id,
        "items": [as_json(a, item=i, task=t) for i, (a, t) in enumerate(zip(agents, items, strict=True))],
    }
