"""Pausing and resuming a live run, and holds: a group (a team, a workflow) that wants an agent paused while the group
is, kept as desired state on the agent (``HOLD_KEY`` in its metadata) and applied in one place, here: at once when
the agent runs, or by the supervisor the moment its run starts (``apply_hold``).

A hold and a start can race (the hold is written while the run's start commits): each side looks again after its own
write, so at least one of them sees both and pauses; a second pause is refused (409) and ignored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from godel.core.models import Agent
from godel.core.runs import ended_for_good
from godel.core.states import AgentState
from godel.core.transitions import Trigger, plan
from godel.errors import ConflictError, GodelError
from godel.scheduler.deps import RunDeps
from godel.scheduler.run import AgentRun

HOLD_KEY = "godel:hold"  # {"by": "team:<id>" | "workflow", "reason": "..."}: reserved, callers cannot set it
_RUNNING = (AgentState.EXECUTING, AgentState.WAITING)


def live_run(runs: Mapping[str, AgentRun], agent: Agent) -> AgentRun:
    run = runs.get(agent.id)
    if run is None or run.finishing:
        raise ConflictError(
            f"agent {agent.id} has no running process to act on", details={"currentState": agent.state.value}
        )
    return run


async def pause(deps: RunDeps, runs: Mapping[str, AgentRun], agent_id: str, *, actor: str, reason: str | None) -> Agent:
    agent = await deps.store.get_agent(agent_id)
    plan(agent_id, agent.state, Trigger.PAUSE)
    run = live_run(runs, agent)
    await deps.runtime.pause(run.handle)
    now = deps.clock.now()
    elapsed = run.elapsed(now)
    try:
        agent, _ = await deps.store.transition_agent(
            agent_id, Trigger.PAUSE, actor=actor, reason=reason,
            changes={"pause_time": now, "paused_by": actor, "runtime": round(elapsed, 3)},
        )  # fmt: skip
    except Exception:
        # Keep the process and the record in agreement: resume it unless it is recorded paused after all
        # (another pause, e.g. a budget's, won the race and its SIGSTOP must stand).
        if (await deps.store.get_agent(agent_id)).state != AgentState.PAUSED:
            await deps.runtime.resume(run.handle)
        raise
    run.runtime_before, run.paused = elapsed, True
    return agent


async def resume(
    deps: RunDeps, runs: Mapping[str, AgentRun], agent_id: str, *, actor: str, reason: str | None
) -> Agent:
    agent = await deps.store.get_agent(agent_id)
    plan(agent_id, agent.state, Trigger.RESUME)
    run = live_run(runs, agent)
    await deps.runtime.resume(run.handle)
    now = deps.clock.now()
    agent, _ = await deps.store.transition_agent(
        agent_id, Trigger.RESUME, actor=actor, reason=reason, changes={"started_at": now}
    )
    run.started_at, run.paused = now, False
    run.waiting = run.recorded_waiting = False
    return agent


def hold_of(agent: Agent) -> dict[str, Any] | None:
    hold = agent.metadata.get(HOLD_KEY)
    return hold if isinstance(hold, dict) and isinstance(hold.get("by"), str) else None


async def hold(deps: RunDeps, runs: Mapping[str, AgentRun], agent_id: str, *, by: str, reason: str) -> None:
    agent = await deps.store.get_agent(agent_id)
    if ended_for_good(agent):
        return
    await deps.store.update_agent(agent_id, {"metadata": {**agent.metadata, HOLD_KEY: {"by": by, "reason": reason}}})
    await apply_hold(deps, runs, await deps.store.get_agent(agent_id))  # looked at again: a start may have committed


async def release(deps: RunDeps, runs: Mapping[str, AgentRun], agent_id: str, *, by: str, reason: str) -> None:
    agent = await deps.store.get_agent(agent_id)
    held = hold_of(agent)
    if held is not None and held["by"] == by:
        rest = {k: v for k, v in agent.metadata.items() if k != HOLD_KEY}
        agent = await deps.store.update_agent(agent_id, {"metadata": rest})
    if agent.state == AgentState.PAUSED and agent.paused_by == by:
        with contextlib.suppress(GodelError):  # it was killed or ended meanwhile
            await resume(deps, runs, agent_id, actor=by, reason=reason)


async def apply_hold(deps: RunDeps, runs: Mapping[str, AgentRun], agent: Agent) -> None:
    """Pause ``agent`` if a hold is on it and it runs (the one place a hold is applied)."""
    held = hold_of(agent)
    if held is None or agent.state not in _RUNNING:
        return
    with contextlib.suppress(GodelError):  # it ended, or was paused by someone else, meanwhile
        await pause(deps, runs, agent.id, actor=held["by"], reason=str(held.get("reason") or "held"))
