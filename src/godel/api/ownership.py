"""Whose each kind of resource is, for the scopes of RBAC (``godel.auth.permissions``).

Agents record their owner in a column; teams and tasks in their metadata (``owner``); workflows in ``created_by``;
merge runs in their request. An agent is also its own credential's (``agent:<id>``), and a sub-agent spawned by an
agent belongs to that agent and to the person the parent agent belonged to (``onBehalfOf``). A resource made
without an owner (by the system, or before owners were recorded) has none: only ``all`` reaches it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from godel.api.access import OWNER_KEY
from godel.auth.permissions import Owner
from godel.auth.service import OwnerLookup
from godel.merging.service import MergeService
from godel.scheduler.plane import ControlPlane
from godel.teams import TeamOrchestrator
from godel.workflow.engine import WorkflowEngine


def _principal(value: Any) -> str | None:
    return value if isinstance(value, str) and value.startswith(("user:", "agent:")) else None


def owner_lookups(
    plane: ControlPlane, teams: TeamOrchestrator, workflows: WorkflowEngine, merges: MergeService
) -> Mapping[str, OwnerLookup]:
    auth = plane.auth

    async def agent(agent_id: str) -> Owner:
        found = await plane.get(agent_id)
        behalf = _principal(found.metadata.get("onBehalfOf"))
        owner = found.owner
        if owner is None and isinstance(found.metadata.get("workflowId"), str):  # a workflow's step: its owner's
            owner = (await auth.owner_of("workflow", found.metadata["workflowId"])).id
        if owner is None and found.team_id:  # an agent a team spawned: the team owner's
            owner = (await auth.owner_of("team", found.team_id)).id
        also = tuple(p for p in (behalf, f"agent:{agent_id}") if p)
        return Owner(owner, None, also)

    async def team(team_id: str) -> Owner:
        return Owner(_principal((await teams.get(team_id)).metadata.get(OWNER_KEY)))

    async def workflow(workflow_id: str) -> Owner:
        wf, _ = await workflows.get(workflow_id)
        return Owner(_principal(wf.created_by))

    async def task(task_id: str) -> Owner:
        return Owner(_principal((await plane.task_queue.get(task_id)).metadata.get(OWNER_KEY)))

    async def merge(merge_id: str) -> Owner:
        return Owner(_principal((await merges.get(merge_id)).get("owner")))

    async def user(name: str) -> Owner:
        return Owner(f"user:{name}")

    return {"agent": agent, "team": team, "workflow": workflow, "task": task, "merge": merge, "user": user}
