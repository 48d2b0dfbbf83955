"""One live run of an agent: its process handle, its CLI adapter, what it was launched with, its output, and the
one way it ends.

An ``AgentRun`` is registered with the supervisor *before* its start is committed (``record_start``), so whoever
sees the agent ``executing`` finds its run. Exactly one party ends a run: whoever *claims* it first (``claim`` is
synchronous, so the claim itself cannot race): the watch pass claims runs that exited or timed out; a kill or
restart claims the one it stops; a party that loses the claim waits for ``done`` and acts on what the winner left.
The one who ends a run ingests *all* remaining output (to the end of the files, in bounded batches, each committed
with its offsets) before moving the agent, so no line is lost or read twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from godel.core.events import Event
from godel.core.limits import MEMORY_LIMIT_REASON
from godel.core.models import Agent
from godel.core.ports import AgentAdapter, Evidence, LaunchRequest, ProcessState, ProcessStatus, RuntimeHandle
from godel.core.runs import RunContext
from godel.core.transitions import Trigger
from godel.errors import InvalidTransitionError, NotFoundError
from godel.scheduler import aftercare
from godel.scheduler.deps import RunDeps
from godel.scheduler.evidence import commit_leftovers, workspace_evidence
from godel.scheduler.handles import handle_fields
from godel.scheduler.output import Changes, RunOutput, dump_signals

log = structlog.get_logger("godel.run")

# Applied together with a user's restart: the new attempt starts with a clean record.
RESTART_RESET: dict[str, Any] = {
    "retry_count": 0,
    "next_attempt_at": None,
    "last_error": None,
    "completed_at": None,
    "outcome": {},
    "pause_time": None,
}


@dataclass(kw_only=True)
class AgentRun(RunOutput):
    deps: RunDeps
    handle: RuntimeHandle
    adapter: AgentAdapter
    request: LaunchRequest | None  # what the run was launched with (None when it cannot be rebuilt)
    offsets: dict[str, int]  # how far its output files are ingested (committed)
    started_at: datetime  # start of the current active segment (reset by resume)
    runtime_before: float  # active seconds of this attempt before the current segment
    timeout: float
    paused: bool = False
    timed_out: bool = False
    finishing: bool = False  # someone (exit, timeout, kill, restart) is ending it; the watch pass keeps off
    starting: bool = False  # launched, its start not yet committed: the watch pass keeps off
    session_id: str | None = None  # this run's Session (closed by id: the row may not name it yet)
    recorded_waiting: bool = False  # what the store says (state waiting); synced when it differs from ``waiting``
    done: asyncio.Event = field(default_factory=asyncio.Event)  # set once the run has been ended and recorded
    quiet: int = 0  # watch passes in a row that found no new output
    phase: int = 0  # which of the quiet passes looks at it (spreads quiet agents evenly)

    def elapsed(self, now: datetime) -> float:
        if self.paused:
            return self.runtime_before
        return self.runtime_before + max(0.0, (now - self.started_at).total_seconds())

    def claim(self) -> bool:
        """Become the one who ends this run (synchronous, so two claimants cannot both win)."""
        if self.finishing:
            return False
        self.finishing = True
        return True

    async def record_start(self, agent: Agent, session_id: str, *, model: str | None) -> bool:
        """Commit that this run has started (at launch, or when a restart finds a launch that the server died
        before recording). False: the agent was killed or deleted meanwhile and the run is not live."""
        handle = self.handle
        context = RunContext.of(agent).replace(session=session_id).to_json()
        try:
            await self.deps.store.transition_agent(
                agent.id,
                Trigger.SESSION_STARTED,
                actor="supervisor",
                changes={**handle_fields(handle), "started_at": self.started_at, "log_offsets": self.offsets,
                         "exit_code": None, "context": context, "outcome": {}},  # a new run: no old evidence
                payload={"pid": handle.pid, "worktree": str(handle.workspace), "branch": handle.branch,
                         "model": model, "sessionId": session_id},
            )  # fmt: skip
        except (InvalidTransitionError, NotFoundError):
            return False
        self.starting = False
        return True

    async def abandon(self) -> None:
        """The agent was killed or deleted while it was being spawned: stop what was started."""
        deps = self.deps
        await deps.sessions.close_open(self.agent_id, "killed or deleted while it was being spawned")
        await deps.runtime.terminate(self.handle, grace=deps.settings.kill_grace)  # a no-op if nothing runs
        await deps.keys.revoke(self.agent_id)
        try:
            agent = await deps.store.update_agent(self.agent_id, handle_fields(self.handle))
        except NotFoundError:
            await deps.runtime.cleanup(self.handle)  # deleted: nothing will ever look at this workspace again
            return
        await aftercare.apply_cleanup(deps, agent, self.handle)

    # ------------------------------------------------------------------------------------------------ output

    async def drain(self) -> None:
        """Ingest everything the run wrote, to the end of its files, then the parser's last signals."""
        store, runtime = self.deps.store, self.deps.runtime
        while True:
            lines, offsets = await runtime.read_output(self.handle, self.offsets, final=True)
            if offsets == self.offsets and not lines:
                break
            events: list[Event] = []
            changes: Changes = {self.agent_id: {"log_offsets": offsets}}
            cp = self.checkpoint()
            self.ingest(lines, events, changes)
            try:
                await store.append_events(events, agent_changes=changes)
            except BaseException:
                self.rollback(cp)  # the lines are read (and parsed) again by whoever ends the run next
                raise
            self.offsets = offsets  # only once committed: a failed commit means the lines are read again
        events, changes = [], {}
        cp = self.checkpoint()
        self.absorb(self.guarded(self.parser.finish), events, changes)
        if self.request is not None:
            # Reading a trajectory or a history may take a while: off the event loop.
            collected = await asyncio.to_thread(self.guarded, self.adapter.collect, self.request)
            self.absorb(collected, events, changes)
        if events:
            try:
                await store.append_events(events, agent_changes=changes)
            except BaseException:
                self.rollback(cp)
                raise

    # ---------------------------------------------------------------------------------------------- ending

    async def end(self, stop: Trigger | None, actor: str, reason: str | None) -> Agent | None:
        """End this claimed run. ``stop`` is KILL or RESTART when a user stops it; otherwise the run ended by
        itself (or timed out) and its outcome is decided from evidence. Returns the agent as it was left."""
        deps = self.deps
        if stop is not None or self.timed_out:
            await deps.runtime.terminate(self.handle, grace=deps.settings.kill_grace)
        status = await deps.runtime.status(self.handle)
        await self.drain()
        await deps.keys.revoke(self.agent_id)  # the CLI is gone: its virtual key must not outlive it
        elapsed = round(self.elapsed(deps.clock.now()), 3)
        if stop is None:
            return await self._decide(status, elapsed)
        agent = await deps.store.get_agent(self.agent_id)
        ctx = RunContext.of(agent).with_native(self.native_session())
        changes: dict[str, Any] = {"exit_code": status.exit_code, "runtime": elapsed, "context": ctx.to_json()}
        if stop == Trigger.RESTART:
            changes.update(RESTART_RESET, context=ctx.fresh().to_json())
        else:
            changes["completed_at"] = deps.clock.now()
            if status.usage is not None:  # what the killed run used, as for a run that ended by itself
                changes["outcome"] = {**agent.outcome, "resources": status.usage.to_json()}
        # Before the move: once the agent is pending again, its next run may start (and open its own session).
        await deps.sessions.close(
            agent, success=False, reason=f"{stop.value}: {reason}", result=None, usage=self.usage,
            native=self.native_session(), session_id=self.session_id,
        )  # fmt: skip
        agent, _ = await deps.store.transition_agent(self.agent_id, stop, actor=actor, reason=reason, changes=changes)
        if stop == Trigger.KILL:
            await aftercare.apply_cleanup(deps, agent, self.handle)
        return agent

    async def _decide(self, status: ProcessStatus, elapsed: float) -> Agent | None:
        """Judge a run that ended by itself (or timed out) from its evidence, record the outcome and act on it."""
        deps, run = self.deps, self
        changed, commits = await workspace_evidence(deps, run.handle)
        evidence = Evidence(
            exit_code=status.exit_code,
            signals=list(run.signals),
            changed_files=changed,
            commits=len(commits),
            timed_out=run.timed_out,
        )
        outcome = run.adapter.outcome(evidence)
        if outcome.success and changed and deps.settings.commit_on_complete:
            commits = await commit_leftovers(deps, run.handle) or commits
        record = {
            "success": outcome.success,
            "reason": outcome.reason,
            "result": outcome.result,
            "signals": dump_signals(run.signals),
            "usage": run.usage,
            "changedFiles": changed,
            "commits": len(commits),
            "exitCode": status.exit_code,
            "providerError": outcome.provider_error,
        }
        if status.usage is not None:  # the runtime's accounting (cgroups): CPU seconds, peak memory, OOM kills
            record["resources"] = status.usage.to_json()
        agent = await deps.store.get_agent(run.agent_id)
        ctx = RunContext.of(agent).with_native(run.native_session())
        common: dict[str, Any] = {"exit_code": status.exit_code, "outcome": record, "commits": commits,
                                  "runtime": elapsed, "context": ctx.to_json()}  # fmt: skip
        if run.timed_out:
            trigger, why = Trigger.TIMEOUT, f"timed out after {run.timeout:g}s"
        elif status.state == ProcessState.GONE:
            trigger, why = Trigger.LOST, "the process vanished without recording an exit status"
        elif outcome.success:
            trigger, why = Trigger.TASK_COMPLETE, outcome.reason
        else:
            trigger, why = Trigger.ERROR, outcome.reason
        if trigger == Trigger.ERROR and status.usage is not None and status.usage.memory_limit_hit:
            why = record["reason"] = MEMORY_LIMIT_REASON  # the kernel killed it (or a child) for its memory limit
        if trigger != Trigger.TASK_COMPLETE:
            common["last_error"] = why
        provider_failed = bool(outcome.provider_error) and trigger in (Trigger.ERROR, Trigger.TIMEOUT)
        # On record with the failure, so a waiter that reads it before the fallback is queued knows one is coming.
        record["fallback"] = ctx.next_fallback if provider_failed else None
        # Before the move: a failed agent may be retried (or continued) at once, and its next run opens a session.
        await deps.sessions.close(
            agent, success=trigger == Trigger.TASK_COMPLETE, reason=why, result=outcome.result, usage=run.usage,
            native=run.native_session(), session_id=run.session_id,
        )  # fmt: skip
        try:
            agent, _ = await deps.store.transition_agent(
                run.agent_id, trigger, actor="supervisor", reason=why, changes=common
            )
        except InvalidTransitionError as exc:
            # Only a user's stop can get here first, and it claims the watch; anything else is a bug to see.
            log.error("outcome could not be recorded", agent=run.agent_id, trigger=trigger.value, state=exc.current)
            return None
        if trigger == Trigger.TASK_COMPLETE:
            return await aftercare.complete(deps, agent, run.handle)
        return await aftercare.after_failure(deps, agent, provider_failed=provider_failed)
