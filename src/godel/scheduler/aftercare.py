"""What follows the end of a run, on the agent's row: completion, a retry with backoff or a fallback to the route's
next model, and the cleanup policies.

Cleanup policies decide when an agent's worktree is removed (its branch never is): ``immediate`` when the agent
ends, ``on-success`` only when it completed, ``delayed`` after ``cleanup_delay`` seconds, ``manual`` never. The
runtime snapshots a dirty worktree before removing it, so uncommitted work survives as a ref.
"""

from __future__ import annotations

from pathlib import Path

from godel.core.events import make_event
from godel.core.models import Agent, CleanupPolicy
from godel.core.ports import RuntimeHandle
from godel.core.runs import RunContext
from godel.core.states import ACTIVE, AgentState
from godel.core.transitions import Trigger
from godel.errors import GodelError, InvalidTransitionError, NotFoundError
from godel.scheduler.deps import RunDeps
from godel.scheduler.handles import handle_of
from godel.scheduler.retrying import next_attempt_at


async def complete(deps: RunDeps, agent: Agent, handle: RuntimeHandle) -> Agent:
    now = deps.clock.now()
    try:
        await apply_cleanup(deps, agent, handle, succeeded=True)
    except GodelError as exc:
        agent, _ = await deps.store.transition_agent(
            agent.id, Trigger.CLEANUP_ERROR, actor="supervisor", reason=exc.message,
            changes={"last_error": exc.message, "completed_at": now},
        )  # fmt: skip
        return agent
    agent, _ = await deps.store.transition_agent(
        agent.id, Trigger.CLEANUP_DONE, actor="supervisor", changes={"completed_at": now}
    )
    return agent


async def after_failure(deps: RunDeps, agent: Agent, *, provider_failed: bool = False) -> Agent:
    """Fall back to the next model of the route when the provider failed; else retry with exponential backoff
    while attempts remain; otherwise apply the cleanup policy."""
    deps.wake()
    ctx = RunContext.of(agent)
    fallback = ctx.next_fallback
    if provider_failed and fallback is not None:
        try:
            agent, _ = await deps.store.transition_agent(
                agent.id,
                Trigger.RETRY,
                actor="scheduler",
                reason=f"provider of {ctx.model} failed ({agent.last_error}); falling back to {fallback}",
                changes={"context": ctx.replace(route_index=ctx.route_index + 1).to_json(), "next_attempt_at": None},
                payload={"fallback": fallback, "from": ctx.model},
            )
        except InvalidTransitionError:
            pass  # a user killed or restarted it meanwhile: their move stands
        return agent
    if agent.retry_count < agent.max_retries:
        attempt = agent.retry_count + 1
        at = next_attempt_at(
            deps.clock.now(), attempt, base=deps.settings.retry_backoff, cap=deps.settings.retry_backoff_max
        )
        try:
            agent, _ = await deps.store.transition_agent(
                agent.id,
                Trigger.RETRY,
                actor="scheduler",
                reason=f"attempt {attempt + 1} of {agent.max_retries + 1} after: {agent.last_error}",
                changes={"retry_count": attempt, "next_attempt_at": at},
                payload={"attempt": attempt + 1, "notBefore": at.isoformat()},
            )
        except InvalidTransitionError:
            pass  # a user killed or restarted it meanwhile: their move stands, no retry on top of it
        return agent
    agent = await deps.store.get_agent(agent.id)
    if agent.state != AgentState.FAILED:
        return agent  # restarted or continued meanwhile: the new run owns the workspace now
    agent = await deps.store.update_agent(agent.id, {"completed_at": deps.clock.now()})
    await apply_cleanup(deps, agent, handle_of(agent, deps.runtime.name, deps.settings.worktrees_dir))
    return agent


async def apply_cleanup(deps: RunDeps, agent: Agent, handle: RuntimeHandle, *, succeeded: bool = False) -> None:
    if not agent.worktree or not Path(agent.worktree).exists():
        return
    succeeded = succeeded or agent.state in (AgentState.COMPLETING, AgentState.COMPLETED)
    policy = agent.cleanup
    if policy == CleanupPolicy.IMMEDIATE or (policy == CleanupPolicy.ON_SUCCESS and succeeded):
        await remove_workspace(deps, agent.id, handle)
    elif policy == CleanupPolicy.DELAYED:
        arm_delayed_cleanup(deps, agent.id, handle, agent.cleanup_delay)


def arm_delayed_cleanup(deps: RunDeps, agent_id: str, handle: RuntimeHandle, delay: float) -> None:
    # A timer, not work in flight: shutdown cancels it, and the next start re-arms what is left of the delay.
    deps.arm_timer(f"cleanup {agent_id}", delay, lambda: _delayed(deps, agent_id, handle))


async def _delayed(deps: RunDeps, agent_id: str, handle: RuntimeHandle) -> None:
    try:
        agent = await deps.store.get_agent(agent_id)
    except NotFoundError:
        return
    if agent.state in ACTIVE or agent.state == AgentState.PENDING:
        return  # it was restarted meanwhile; the workspace is in use again
    await remove_workspace(deps, agent_id, handle)


async def remove_workspace(deps: RunDeps, agent_id: str, handle: RuntimeHandle) -> None:
    await deps.runtime.cleanup(handle)
    removed = make_event("agent:cleanup", {"worktree": str(handle.workspace)}, component="supervisor",
                         agent_id=agent_id)  # fmt: skip
    await deps.store.append_events([removed], agent_changes={agent_id: {"worktree": None}})
