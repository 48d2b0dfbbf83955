"""Start-up reconciliation: what a (re)started server does with the agents the store says are active here.

- ``executing``/``waiting``/``paused`` with a process that still lives (same pid *and* start time) or that
  finished while the server was down (its exit status is on disk): re-adopted; output written meanwhile is
  ingested from the committed offsets, and the exit, if any, is judged as usual.
- ``initializing``/``spawning``: the spawn was cut off half-way; a process launched just before the crash (found
  through the runtime's own record of it) is stopped, and the agent failed with that reason (and retried if
  it has retries left; the retry cleans the half-made workspace).
- ``completing``: the process had ended with success; the completion is finished.
- Anything else: failed, "the process vanished while the server was down".
Agents with the ``delayed`` cleanup policy get their remaining delay re-armed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from godel.agents import get_adapter
from godel.core.events import make_event
from godel.core.models import Agent, CleanupPolicy
from godel.core.ports import AgentQuery, LaunchRequest
from godel.core.states import ACTIVE, AgentState
from godel.core.transitions import Trigger
from godel.errors import InvalidTransitionError
from godel.scheduler.cleanup import arm_delayed_cleanup
from godel.scheduler.ending import after_failure, complete
from godel.scheduler.handles import handle_of
from godel.scheduler.runs import close_open_sessions, launch_request
from godel.scheduler.watch import load_signals

if TYPE_CHECKING:
    from godel.scheduler.supervisor import Supervisor


async def _all(sup: Supervisor, states: list[AgentState]) -> list[Agent]:
    found: list[Agent] = []
    cursor: str | None = None
    while True:
        page = await sup.store.list_agents(AgentQuery(states=states, node_id=sup.node_id, limit=500, cursor=cursor))
        found.extend(page.items)
        if not page.has_more:
            return found
        cursor = page.cursor


async def reconcile_on_start(sup: Supervisor) -> dict[str, int]:
    report = {"adopted": 0, "failed": 0, "completed": 0, "cleanupScheduled": 0}
    for agent in await _all(sup, sorted(ACTIVE)):
        await _reconcile_one(sup, agent, report)
    for agent in await _all(sup, [AgentState.COMPLETED, AgentState.FAILED, AgentState.KILLED]):
        if agent.cleanup == CleanupPolicy.DELAYED and agent.worktree and agent.completed_at:
            waited = (sup.clock.now() - agent.completed_at).total_seconds()
            handle = handle_of(agent, sup.runtime.name, sup.settings.worktrees_dir)
            arm_delayed_cleanup(sup, agent.id, handle, max(0.0, agent.cleanup_delay - waited))
            report["cleanupScheduled"] += 1
    return report


async def _reconcile_one(sup: Supervisor, agent: Agent, report: dict[str, int]) -> None:
    handle = handle_of(agent, sup.runtime.name, sup.settings.worktrees_dir)
    if agent.state in (AgentState.INITIALIZING, AgentState.SPAWNING):
        if agent.state == AgentState.SPAWNING and await sup.runtime.adopt(handle) and handle.pid is not None:
            await sup.runtime.terminate(handle, grace=sup.settings.kill_grace)  # an orphan nobody recorded
        await _lost(sup, agent, "the server stopped while this agent was being spawned", report)
    elif agent.state == AgentState.COMPLETING:
        report["completed"] += 1
        await complete(sup, agent, handle)
    elif agent.pid is not None and await sup.runtime.adopt(handle):
        signals = load_signals(agent.outcome.get("signals"))
        # Without the endpoint: collecting the run's files needs the rest only, and the provider's key or entry
        # may be gone from this server's environment or configuration.
        request: LaunchRequest | None = launch_request(sup, agent, handle, endpoint=False)
        usage = agent.outcome.get("usage") if isinstance(agent.outcome.get("usage"), dict) else {}
        sup.watch(
            agent, handle, get_adapter(agent.kind), request, offsets=dict(agent.log_offsets), signals=signals,
            usage=usage,
        )  # fmt: skip
        report["adopted"] += 1
        adopted = make_event(
            "agent:adopted",
            {"pid": agent.pid, "state": agent.state.value},
            component="supervisor",
            agent_id=agent.id,
            team_id=agent.team_id,
        )
        await sup.store.append_events([adopted])
    else:
        await _lost(sup, agent, "the process vanished while the server was down", report)


async def _lost(sup: Supervisor, agent: Agent, reason: str, report: dict[str, int]) -> None:
    report["failed"] += 1
    await close_open_sessions(sup, agent.id, reason)
    try:
        agent, _ = await sup.store.transition_agent(
            agent.id, Trigger.LOST, actor="supervisor", reason=reason, changes={"last_error": reason}
        )
    except InvalidTransitionError:
        return
    await after_failure(sup, agent)
