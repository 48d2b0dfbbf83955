"""Cleanup policies: when an agent's worktree is removed (its branch never is).

``immediate`` removes it when the agent ends, ``on-success`` only when it completed, ``delayed`` after
``cleanup_delay`` seconds, ``manual`` never. The runtime snapshots a dirty worktree before removing it, so
uncommitted work survives as a ref.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from godel.core.events import make_event
from godel.core.models import Agent, CleanupPolicy
from godel.core.ports import RuntimeHandle
from godel.core.states import ACTIVE, AgentState
from godel.errors import NotFoundError

if TYPE_CHECKING:
    from godel.scheduler.supervisor import Supervisor


async def apply_cleanup(sup: Supervisor, agent: Agent, handle: RuntimeHandle, *, succeeded: bool = False) -> None:
    if not agent.worktree or not Path(agent.worktree).exists():
        return
    succeeded = succeeded or agent.state in (AgentState.COMPLETING, AgentState.COMPLETED)
    policy = agent.cleanup
    if policy == CleanupPolicy.IMMEDIATE or (policy == CleanupPolicy.ON_SUCCESS and succeeded):
        await remove_workspace(sup, agent.id, handle)
    elif policy == CleanupPolicy.DELAYED:
        arm_delayed_cleanup(sup, agent.id, handle, agent.cleanup_delay)


def arm_delayed_cleanup(sup: Supervisor, agent_id: str, handle: RuntimeHandle, delay: float) -> None:
    # A timer, not work in flight: shutdown cancels it, and the next start re-arms what is left of the delay.
    sup.spawn_task(_delayed(sup, agent_id, handle, delay), timer=True)


async def _delayed(sup: Supervisor, agent_id: str, handle: RuntimeHandle, delay: float) -> None:
    await asyncio.sleep(delay)  # the policy's delay itself, not a stand-in for work
    try:
        agent = await sup.store.get_agent(agent_id)
    except NotFoundError:
        return
    if agent.state in ACTIVE or agent.state == AgentState.PENDING:
        return  # it was restarted meanwhile; the workspace is in use again
    await remove_workspace(sup, agent_id, handle)


async def remove_workspace(sup: Supervisor, agent_id: str, handle: RuntimeHandle) -> None:
    await sup.runtime.cleanup(handle)
    removed = make_event("agent:cleanup", {"worktree": str(handle.workspace)}, component="supervisor",
                         agent_id=agent_id)  # fmt: skip
    await sup.store.append_events([removed], agent_changes={agent_id: {"worktree": None}})
