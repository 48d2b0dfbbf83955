"""How a run ends, in one place: a process exits, times out, is killed or restarted, or vanished.

Exactly one party ends a run: whoever *claims* the watch first (``Supervisor.claim`` is synchronous, so the
claim itself cannot race). The watch pass claims runs that exited or timed out; ``kill`` and ``restart``
claim the ones they stop; a party that loses the claim waits for ``watch.done`` and then acts on the state
the winner left. The one who ends a run ingests *all* remaining output (to the end of the files, in bounded
batches, each committed with its offsets) before moving the agent, so no line is lost or read twice.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

import structlog

from godel.core.events import Event
from godel.core.models import Agent
from godel.core.ports import Evidence, ProcessState, ProcessStatus, RuntimeHandle
from godel.core.runs import RunContext
from godel.core.states import AgentState
from godel.core.transitions import Trigger
from godel.errors import GodelError, InvalidTransitionError
from godel.scheduler.cleanup import apply_cleanup
from godel.scheduler.handles import handle_of
from godel.scheduler.retrying import next_attempt_at
from godel.scheduler.runs import close_session, revoke_run_keys
from godel.scheduler.watch import Changes, Watch, dump_signals

if TYPE_CHECKING:
    from godel.scheduler.supervisor import Supervisor

log = structlog.get_logger("godel.ending")
_DIFF_FILE = re.compile(r"^diff --git ", re.MULTILINE)

# Applied together with a user's restart: the new attempt starts with a clean record.
RESTART_RESET: dict[str, Any] = {
    "retry_count": 0,
    "next_attempt_at": None,
    "last_error": None,
    "completed_at": None,
    "outcome": {},
    "pause_time": None,
}


async def drain_output(sup: Supervisor, w: Watch) -> None:
    """Ingest everything the run wrote, to the end of its files, then the parser's last signals."""
    while True:
        lines, offsets = await sup.runtime.read_output(w.handle, w.offsets, final=True)
        if offsets == w.offsets and not lines:
            break
        events: list[Event] = []
        changes: Changes = {w.agent_id: {"log_offsets": offsets}}
        cp = w.checkpoint()
        w.ingest(lines, events, changes)
        try:
            await sup.store.append_events(events, agent_changes=changes)
        except BaseException:
            w.rollback(cp)  # the lines are read (and parsed) again by whoever ends the run next
            raise
        w.offsets = offsets  # only once committed: a failed commit means the lines are read again
    events, changes = [], {}
    cp = w.checkpoint()
    w.absorb(w.guarded(w.parser.finish), events, changes)
    if w.request is not None:
        # Reading a trajectory or a history may take a while: off the event loop.
        collected = await asyncio.to_thread(w.guarded, w.adapter.collect, w.request)
        w.absorb(collected, events, changes)
    if events:
        try:
            await sup.store.append_events(events, agent_changes=changes)
        except BaseException:
            w.rollback(cp)
            raise


async def end(
    sup: Supervisor,
    w: Watch,
    *,
    stop: Trigger | None = None,
    actor: str = "supervisor",
    reason: str | None = None,
) -> Agent | None:
    """End a claimed run. ``stop`` is KILL or RESTART when a user stops it; otherwise the run ended by itself
    (or timed out) and its outcome is decided from evidence. Returns the agent as it was left."""
    try:
        agent = await _end(sup, w, stop, actor, reason)
    except BaseException:
        w.finishing = False  # not ended: the next watch pass (or the caller, again) tries once more
        raise
    if sup.watched.get(w.agent_id) is w:  # a new run of the agent (restart, continue) may be watched already
        del sup.watched[w.agent_id]
    w.done.set()
    sup.wake.set()
    return agent


async def _end(sup: Supervisor, w: Watch, stop: Trigger | None, actor: str, reason: str | None) -> Agent | None:
    if stop is not None or w.timed_out:
        await sup.runtime.terminate(w.handle, grace=sup.settings.kill_grace)
    status = await sup.runtime.status(w.handle)
    await drain_output(sup, w)
    await revoke_run_keys(sup, w.agent_id)  # the CLI is gone: its virtual key must not outlive it
    elapsed = round(w.elapsed(sup.clock.now()), 3)
    if stop is None:
        return await _decide(sup, w, status, elapsed)
    changes: dict[str, Any] = {"exit_code": status.exit_code, "runtime": elapsed}
    agent = await sup.store.get_agent(w.agent_id)
    ctx = RunContext.of(agent).with_native(w.native_session())
    changes["context"] = ctx.to_json()
    if stop == Trigger.RESTART:
        changes.update(RESTART_RESET, context=ctx.fresh().to_json())
    else:
        changes["completed_at"] = sup.clock.now()
    # Before the move: once the agent is pending again, its next run may start (and open its own session).
    await close_session(sup, agent, success=False, reason=f"{stop.value}: {reason}", result=None, usage=w.usage,
                        native=w.native_session())  # fmt: skip
    agent, _ = await sup.store.transition_agent(w.agent_id, stop, actor=actor, reason=reason, changes=changes)
    if stop == Trigger.KILL:
        await apply_cleanup(sup, agent, w.handle)
    return agent


async def _decide(sup: Supervisor, w: Watch, status: ProcessStatus, elapsed: float) -> Agent | None:
    changed, commits = await _workspace_evidence(sup, w.handle)
    evidence = Evidence(
        exit_code=status.exit_code,
        signals=list(w.signals),
        changed_files=changed,
        commits=len(commits),
        timed_out=w.timed_out,
    )
    outcome = w.adapter.outcome(evidence)
    if outcome.success and changed and sup.settings.commit_on_complete:
        commits = await _commit_leftovers(sup, w.handle) or commits
    record = {
        "success": outcome.success,
        "reason": outcome.reason,
        "result": outcome.result,
        "signals": dump_signals(w.signals),
        "usage": w.usage,
        "changedFiles": changed,
        "commits": len(commits),
        "exitCode": status.exit_code,
        "providerError": outcome.provider_error,
    }
    agent = await sup.store.get_agent(w.agent_id)
    ctx = RunContext.of(agent).with_native(w.native_session())
    common: dict[str, Any] = {"exit_code": status.exit_code, "outcome": record, "commits": commits, "runtime": elapsed,
                              "context": ctx.to_json()}  # fmt: skip
    if w.timed_out:
        trigger, why = Trigger.TIMEOUT, f"timed out after {w.timeout:g}s"
    elif status.state == ProcessState.GONE:
        trigger, why = Trigger.LOST, "the process vanished without recording an exit status"
    elif outcome.success:
        trigger, why = Trigger.TASK_COMPLETE, outcome.reason
    else:
        trigger, why = Trigger.ERROR, outcome.reason
    if trigger != Trigger.TASK_COMPLETE:
        common["last_error"] = why
    provider_failed = bool(outcome.provider_error) and trigger in (Trigger.ERROR, Trigger.TIMEOUT)
    # On record with the failure, so a waiter that reads it before the fallback is queued knows one is coming.
    record["fallback"] = ctx.next_fallback if provider_failed else None
    # Before the move: a failed agent may be retried (or continued) at once, and its next run opens a session.
    await close_session(sup, agent, success=trigger == Trigger.TASK_COMPLETE, reason=why, result=outcome.result,
                        usage=w.usage, native=w.native_session())  # fmt: skip
    try:
        agent, _ = await sup.store.transition_agent(w.agent_id, trigger, actor="supervisor", reason=why, changes=common)
    except InvalidTransitionError as exc:
        # Only a user's stop can get here first, and it claims the watch; anything else is a bug to see.
        log.error("outcome could not be recorded", agent=w.agent_id, trigger=trigger.value, state=exc.current)
        return None
    if trigger == Trigger.TASK_COMPLETE:
        return await complete(sup, agent, w.handle)
    return await after_failure(sup, agent, provider_failed=provider_failed)


async def _commit_leftovers(sup: Supervisor, handle: RuntimeHandle) -> list[str]:
    """Commit what a successful agent left uncommitted, so its whole change is on its branch. Returns the
    branch's commits since the base afterwards ([] if nothing could be committed)."""
    identity: list[str] = []
    probe = await sup.runtime.exec(handle, ["git", "config", "user.email"], timeout=30)
    if probe.exit_code != 0 or not probe.stdout.strip():
        identity = ["-c", "user.name=Godel", "-c", "user.email=godel@localhost"]  # the repo has no identity
    message = f"godel: work of agent {handle.agent_id}\n\nCommitted by Godel when the agent completed."
    steps = (["git", "add", "-A"], ["git", *identity, "commit", "-q", "--no-verify", "-m", message])
    for argv in steps:
        done = await sup.runtime.exec(handle, argv, timeout=120)
        if done.exit_code != 0:
            log.warning("could not commit the agent's work", agent=handle.agent_id, error=done.stderr.strip())
            return []
    return await sup.runtime.commits(handle)


async def _workspace_evidence(sup: Supervisor, handle: RuntimeHandle) -> tuple[int, list[str]]:
    try:
        diff = await sup.runtime.diff(handle)
        commits = await sup.runtime.commits(handle)
    except GodelError as exc:
        log.warning("could not read workspace evidence", agent=handle.agent_id, error=exc.message)
        return 0, []
    return len(_DIFF_FILE.findall(diff)), commits


async def complete(sup: Supervisor, agent: Agent, handle: RuntimeHandle) -> Agent:
    now = sup.clock.now()
    try:
        await apply_cleanup(sup, agent, handle, succeeded=True)
    except GodelError as exc:
        agent, _ = await sup.store.transition_agent(
            agent.id, Trigger.CLEANUP_ERROR, actor="supervisor", reason=exc.message,
            changes={"last_error": exc.message, "completed_at": now},
        )  # fmt: skip
        return agent
    agent, _ = await sup.store.transition_agent(
        agent.id, Trigger.CLEANUP_DONE, actor="supervisor", changes={"completed_at": now}
    )
    return agent


async def after_failure(sup: Supervisor, agent: Agent, *, provider_failed: bool = False) -> Agent:
    """Fall back to the next model of the route when the provider failed; else retry with exponential backoff
    while attempts remain; otherwise apply the cleanup policy."""
    sup.wake.set()
    ctx = RunContext.of(agent)
    fallback = ctx.next_fallback
    if provider_failed and fallback is not None:
        try:
            agent, _ = await sup.store.transition_agent(
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
            sup.clock.now(), attempt, base=sup.settings.retry_backoff, cap=sup.settings.retry_backoff_max
        )
        try:
            agent, _ = await sup.store.transition_agent(
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
    agent = await sup.store.get_agent(agent.id)
    if agent.state != AgentState.FAILED:
        return agent  # restarted or continued meanwhile: the new run owns the workspace now
    agent = await sup.store.update_agent(agent.id, {"completed_at": sup.clock.now()})
    await apply_cleanup(sup, agent, handle_of(agent, sup.runtime.name, sup.settings.worktrees_dir))
    return agent
