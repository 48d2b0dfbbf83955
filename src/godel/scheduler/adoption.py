"""Start-up reconciliation: what a (re)started server does with the agents the store says are active here.

- ``executing``/``waiting``/``paused`` with a process that still lives (same pid *and* start time) or that
  finished while the server was down (its exit status is on disk): re-adopted; output written meanwhile is
  ingested from the committed offsets, and the exit, if any, is judged as usual.
- ``spawning`` whose launch started (the runtime finds the process, or its exit status, recorded under the id of
  the run's session, which is committed before the process starts): the start is recorded now and the run is
  watched from the beginning of its output, so nothing it wrote is lost and nothing is read twice.
- ``initializing``, or ``spawning`` whose launch never started: nothing ran, so there is nothing to judge; the
  agent goes back to the queue (``requeue``, no retry spent) and its half-made workspace is set aside.
- ``completing``: the process had ended with success; the completion is finished.
- ``failed`` with a retry or a model fallback due (the server died between recording the failure and queueing the
  next attempt): the next attempt is queued now, so no waiter is left waiting for an agent nobody will run.
- A recorded run whose process is gone without an exit status: watched all the same, so the watch pass ingests
  what it wrote and then records it lost ("vanished without recording an exit status").
- Anything else (no process was ever recorded): failed, "the process vanished while the server was down".
Agents with the ``delayed`` cleanup policy get their remaining delay re-armed.
"""

from __future__ import annotations

import structlog

from godel.agents import get_adapter
from godel.core.events import make_event
from godel.core.models import Agent, CleanupPolicy
from godel.core.ports import RUN_KEY, AgentQuery, LaunchRequest, RuntimeHandle
from godel.core.runs import ended_for_good
from godel.core.states import ACTIVE, AgentState
from godel.core.transitions import Trigger
from godel.errors import GodelError, InvalidTransitionError
from godel.scheduler import aftercare
from godel.scheduler.deps import RunDeps
from godel.scheduler.handles import handle_of
from godel.scheduler.launching import RunRegistry, launch_request, new_run, start_or_abandon
from godel.scheduler.output import load_signals

log = structlog.get_logger("godel.adoption")


async def _all(deps: RunDeps, states: list[AgentState]) -> list[Agent]:
    found: list[Agent] = []
    cursor: str | None = None
    while True:
        page = await deps.store.list_agents(AgentQuery(states=states, node_id=deps.node_id, limit=500, cursor=cursor))
        found.extend(page.items)
        if not page.has_more:
            return found
        cursor = page.cursor


async def reconcile_on_start(deps: RunDeps, runs: RunRegistry) -> dict[str, int]:
    report = {
        "adopted": 0,
        "requeued": 0,
        "vanished": 0,
        "retried": 0,
        "errors": 0,
        "failed": 0,
        "completed": 0,
        "cleanupScheduled": 0,
    }
    for agent in await _all(deps, sorted(ACTIVE)):
        try:
            await _reconcile_one(deps, runs, agent, report)
        except Exception:  # one agent that cannot be reconciled must not keep the server from starting
            log.exception("could not reconcile agent at start", agent=agent.id)
            report["errors"] += 1
    for agent in await _all(deps, [AgentState.FAILED]):
        # Failed, with a retry or a model fallback due, but the server died before queueing it: queue it now.
        if not ended_for_good(agent):
            report["retried"] += 1
            await aftercare.after_failure(deps, agent, provider_failed=bool(agent.outcome.get("fallback")))
    for agent in await _all(deps, [AgentState.COMPLETED, AgentState.FAILED, AgentState.KILLED]):
        if agent.cleanup == CleanupPolicy.DELAYED and agent.worktree and agent.completed_at:
            waited = (deps.clock.now() - agent.completed_at).total_seconds()
            handle = handle_of(agent, deps.runtime.name, deps.settings.worktrees_dir)
            aftercare.arm_delayed_cleanup(deps, agent.id, handle, max(0.0, agent.cleanup_delay - waited))
            report["cleanupScheduled"] += 1
    return report


async def _reconcile_one(deps: RunDeps, runs: RunRegistry, agent: Agent, report: dict[str, int]) -> None:
    handle = handle_of(agent, deps.runtime.name, deps.settings.worktrees_dir)
    if agent.state == AgentState.SPAWNING and await _finish_launch(deps, runs, agent, handle):
        report["adopted"] += 1
    elif agent.state in (AgentState.INITIALIZING, AgentState.SPAWNING):
        await _requeue(deps, agent, handle, report)
    elif agent.state == AgentState.COMPLETING:
        report["completed"] += 1
        await aftercare.complete(deps, agent, handle)
    elif agent.pid is not None:
        # Watched whether or not the process is found: one that vanished without an exit status is then ended
        # by the watch pass like any other run, its output ingested to the last line before it is judged lost.
        found = await deps.runtime.adopt(handle)
        signals = load_signals(agent.outcome.get("signals"))
        # Without the endpoint: collecting the run's files needs the rest only, and the provider's key or entry
        # may be gone from this server's environment or configuration.
        request: LaunchRequest | None = launch_request(deps, agent, handle, endpoint=False)
        usage = agent.outcome.get("usage") if isinstance(agent.outcome.get("usage"), dict) else {}
        runs.register(
            new_run(deps, agent, handle, get_adapter(agent.kind), request, offsets=dict(agent.log_offsets),
                    signals=signals, usage=usage)
        )  # fmt: skip
        if found:
            report["adopted"] += 1
            await _adopted_event(deps, agent, agent.pid, agent.state)
        else:
            report["vanished"] += 1
    else:
        await _lost(deps, agent, "the process vanished while the server was down", report)


async def _adopted_event(deps: RunDeps, agent: Agent, pid: int, state: AgentState) -> None:
    adopted = make_event(
        "agent:adopted", {"pid": pid, "state": state.value}, component="supervisor", agent_id=agent.id,
        team_id=agent.team_id,
    )  # fmt: skip
    await deps.store.append_events([adopted])


async def _lost(deps: RunDeps, agent: Agent, reason: str, report: dict[str, int]) -> None:
    report["failed"] += 1
    await deps.sessions.close_open(agent.id, reason)
    try:
        agent, _ = await deps.store.transition_agent(
            agent.id, Trigger.LOST, actor="supervisor", reason=reason, changes={"last_error": reason}
        )
    except InvalidTransitionError:
        return
    await aftercare.after_failure(deps, agent)


async def _finish_launch(deps: RunDeps, runs: RunRegistry, agent: Agent, handle: RuntimeHandle) -> bool:
    """The server died after committing this launch's session and before recording its start: if the launch
    started, record the start now and watch the run from its first line. False: the launch never started."""
    sessions = [s for s in await deps.store.list_sessions(agent.id) if s.completed_at is None]
    if not sessions:
        return False
    session = sessions[-1]  # oldest first: the last one open is this launch's
    handle.pid = handle.pid_started = None  # the row may still hold the previous run's
    handle.extra[RUN_KEY] = session.id
    await deps.runtime.adopt(handle)  # fills in the pid when it finds this launch, running or ended
    if handle.pid is None:
        return False
    request: LaunchRequest | None = launch_request(deps, agent, handle, endpoint=False)
    run = new_run(
        deps, agent, handle, get_adapter(agent.kind), request, offsets={}, starting=True, fresh=True,
        session_id=session.id,
    )  # fmt: skip
    runs.register(run)
    await start_or_abandon(runs, run, agent, session.id, model=None)
    await _adopted_event(deps, agent, handle.pid, AgentState.EXECUTING)
    return True


async def _requeue(deps: RunDeps, agent: Agent, handle: RuntimeHandle, report: dict[str, int]) -> None:
    reason = "the server stopped before this agent's launch started; queued again"
    await deps.sessions.close_open(agent.id, reason)
    await deps.keys.revoke(agent.id)
    if agent.state == AgentState.INITIALIZING and (handle.workspace.exists() or handle.workspace.is_symlink()):
        try:
            await deps.runtime.cleanup(handle)  # half made and not recorded: the next launch makes it afresh
        except GodelError as exc:  # the next launch fails on it with a clear reason, and is retried
            log.warning("half-made workspace not removed", agent=agent.id, error=exc.message)
    try:
        await deps.store.transition_agent(agent.id, Trigger.REQUEUE, actor="supervisor", reason=reason)
    except InvalidTransitionError:
        return
    report["requeued"] += 1
    deps.wake()
