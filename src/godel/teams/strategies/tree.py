"""``tree``: recursive decomposition, results flowing up.

Every node has a task and a path (the root is ``0``, its children ``0.0``, ``0.1``…). A node above the depth
limit asks a coordinator (``tree/PATH/plan``) for at most ``fanout`` subtasks (a JSON list; extra items are
dropped and the drop recorded). A node at the depth limit, or whose coordinator answers ``[]``, is a leaf: a
worker does its task (``tree/PATH/work``). An internal node waits for its children (they run at the same
time, at most ``maxAgents`` agents of the team at once), then a reduce agent (``tree/PATH/summary``) gets every
child's task, result and branch and sums them up; with a ``merge`` gate role it must also merge the children's
branches. The root's summary (or the root's work, for a one-node tree) is the team's result.

``depth`` counts levels below the root: depth 2, fan-out 2 is a root, 2 children, 4 leaves (10 agents: 3
plans, 4 leaves, 3 summaries). ``run.nodes`` records each node's task, depth and children.
"""

from __future__ import annotations

from typing import Any

from godel.core.models import Agent
from godel.teams import prompts
from godel.teams.parsing import FormatError, parse_subtasks
from godel.teams.runner import StepFailed, TeamRun
from godel.teams.strategies.common import check_merged, completed, gate_of, piece, together


class _Tree:
    def __init__(self, team: TeamRun) -> None:
        self.team = team
        self.nodes: dict[str, dict[str, Any]] = {}

    def expected(self) -> int:
        """Agents the nodes known so far need: a plan above the depth limit, and a work or summary agent."""
        limit = self.team.spec.depth
        return sum((1 if n["depth"] < limit else 0) + 1 for n in self.nodes.values())

    async def record(self) -> None:
        await self.team.note(nodes=self.nodes)
        await self.team.expect(self.expected())

    async def node(self, path: str, task: str, depth: int) -> Agent:
        spec = self.team.spec
        self.nodes.setdefault(path, {"task": task, "depth": depth, "children": []})
        subtasks: list[str] = []
        if depth < spec.depth:
            planner = await self.team.run_step(
                f"tree/{path}/plan", spec.role_of("coordinator"), prompts.plan(task, spec.fanout, depth, spec.depth),
                meta={"node": path, "depth": depth, "phase": "plan"},
            )  # fmt: skip
            completed(planner, f"the plan of node {path}")
            try:
                subtasks = parse_subtasks((planner.outcome or {}).get("result"))
            except FormatError as exc:
                raise StepFailed(f"the plan of node {path} (agent {planner.id}): {exc}") from None
            if len(subtasks) > spec.fanout:
                self.nodes[path]["dropped"] = subtasks[spec.fanout :]
                subtasks = subtasks[: spec.fanout]
        if not subtasks:
            self.nodes[path]["leaf"] = True
            await self.record()
            leaf = await self.team.run_step(
                f"tree/{path}/work", spec.role_of("worker"), task,
                meta={"node": path, "depth": depth, "phase": "work"},
            )  # fmt: skip
            return completed(leaf, f"the work of node {path}")
        children = [f"{path}.{i}" for i in range(len(subtasks))]
        self.nodes[path]["children"] = children
        for child, sub in zip(children, subtasks, strict=True):
            self.nodes.setdefault(child, {"task": sub, "depth": depth + 1, "children": []})
        await self.record()
        done = await together([self.node(c, s, depth + 1) for c, s in zip(children, subtasks, strict=True)])
        role = spec.role_of("reduce")
        merge = gate_of(self.team, role) == "merge"
        pieces = [piece(a, f"subtask {c}", s) for a, c, s in zip(done, children, subtasks, strict=True)]
        summary = await self.team.run_step(
            f"tree/{path}/summary", role, prompts.summary(task, pieces, merge=merge),
            meta={"node": path, "depth": depth, "phase": "summary"},
        )  # fmt: skip
        completed(summary, f"the summary of node {path}")
        if merge:
            await check_merged(self.team, summary, [a.branch for a in done])
        return summary


async def run(team: TeamRun) -> dict[str, Any]:
    tree = _Tree(team)
    root = await tree.node("0", team.spec.task or "", 0)
    await tree.record()
    return {
        "result": (root.outcome or {}).get("result"),
        "branch": root.branch,
        "agentId": root.id,
        "nodes": len(tree.nodes),
    }
