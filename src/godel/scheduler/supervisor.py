"""The supervisor: admits pending agents, launches them, watches running ones, decides outcomes, retries and
cleans up. (Re-adoption after a restart is in ``adoption.py``; per-agent watch state in ``watch.py``.)

Design:
- Every state change goes through ``Store.transition_agent`` (one writer); this module only decides *which*
  trigger to fire and *when*.
- One watch pass (``tick``) visits every running agent: new output lines become ``agent:log`` events (and the
  adapter's parsed signals become ``agent:message``/``agent:tool_call``/… events), committed in one batch
  together with each agent's new log offsets. Because the agent writes its output straight to files, lines
  written while the server is down are not lost: re-adoption continues from the committed offsets.
- The process's end is observed, not assumed: the outcome comes from the adapter, fed with evidence (exit
  status, the agent's own final/error signals, the workspace's diff and commits).
- A race with a user command (kill during spawn, pause while exiting) resolves in the store: whichever
  transition commits first wins, and the loser sees ``InvalidTransitionError`` and backs off.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import structlog

from godel.agents import get_adapter
from godel.core.events import Event, make_event
from godel.core.models import Agent, CleanupPolicy
from godel.core.ports import (
    AgentAdapter,
    AgentSignal,
    Clock,
    Evidence,
    LaunchRequest,
    ProcessState,
    ProcessStatus,
    Runtime,
    RuntimeHandle,
    Store,
    WorkspaceSpec,
)
from godel.core.states import ACTIVE, AgentState
from godel.core.transitions import Trigger
from godel.errors import GodelError, InvalidTransitionError
from godel.scheduler.handles import handle_fields, handle_of
from godel.scheduler.retrying import next_attempt_at
from godel.scheduler.watch import Watch, dump_signals
from godel.settings import Settings

log = structlog.get_logger("godel.supervisor")

_DIFF_FILE = re.compile(r"^diff --git ", re.MULTILINE)


class Supervisor:
    def __init__(self, *, store: Store, runtime: Runtime, settings: Settings, clock: Clock, node_id: str) -> None:
        self.store = store
        self.runtime = runtime
        self.settings = settings
        self.clock = clock
        self.node_id = node_id
        self.watched: dict[str, Watch] = {}
        self._launching: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.wake = asyncio.Event()  # set when a slot frees up or work arrives; the admission loop waits on it

    # ------------------------------------------------------------------------------------------ admission

    async def admit_once(self) -> int:
        """Admit pending agents by priority into free slots; returns how many were admitted."""
        busy = await self.store.count_agents(sorted(ACTIVE), self.node_id)
        free = self.settings.max_concurrent_agents - busy
        if free <= 0:
            return 0
        admitted = 0
        for candidate in await self.store.admissible_agents(self.clock.now(), free):
            try:
                agent, _ = await self.store.transition_agent(
                    candidate.id,
                    Trigger.ADMIT,
                    actor="scheduler",
                    reason=f"slot free on node {self.settings.node_name}",
                    changes={"node_id": self.node_id, "runtime": 0.0},
                )
            except InvalidTransitionError:
                continue  # killed or deleted between the query and now
            admitted += 1
            self.spawn_task(self._launch(agent), self._launching, agent.id)
        return admitted

    async def admission_loop(self) -> None:
        while True:
            self.wake.clear()
            await self.admit_once()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that races with
            # the event being set, and shutdown would then hang on this loop.
            try:
                async with asyncio.timeout(self.settings.reconcile_interval):
                    await self.wake.wait()
            except TimeoutError:
                pass

    # ------------------------------------------------------------------------------------------- launching

    async def _launch(self, agent: Agent) -> None:
        handle = handle_of(agent, self.runtime.name, self.settings.worktrees_dir)
        if agent.worktree and Path(agent.worktree).exists():
            # A retry or restart: keep the previous attempt's uncommitted work as a snapshot, start clean.
            await self.runtime.cleanup(handle)
        first_attempt = agent.retry_count == 0 and not agent.pid
        spec = WorkspaceSpec(
            agent_id=agent.id,
            repo=Path(agent.repo or "."),
            base_ref=agent.base_commit or agent.base_ref,
            branch=agent.branch,
            from_snapshot=agent.snapshot_from if first_attempt else None,
            setup=agent.setup,
        )
        try:
            handle = await self.runtime.prepare(spec)
        except GodelError as exc:
            await self._spawn_failed(agent, exc)
            return
        try:
            agent, _ = await self.store.transition_agent(
                agent.id, Trigger.WORKTREE_CREATED, actor="supervisor", changes=handle_fields(handle)
            )
        except InvalidTransitionError:
            await self._abandon(agent.id, handle, None)
            return
        adapter = get_adapter(agent.kind)
        config_dir = self.settings.home / "run" / agent.id / "config"
        try:
            launch = adapter.launch(
                LaunchRequest(
                    agent_id=agent.id,
                    task=agent.task,
                    model=agent.model,
                    workspace=handle.workspace,
                    config_dir=config_dir,
                    options=agent.config,
                )
            )
            handle = await self.runtime.start(handle, launch)
        except GodelError as exc:
            await self._spawn_failed(agent, exc)
            return
        now = self.clock.now()
        offsets = dict(handle.extra.get("log_offsets", {}))
        try:
            agent, _ = await self.store.transition_agent(
                agent.id,
                Trigger.SESSION_STARTED,
                actor="supervisor",
                changes={
                    **handle_fields(handle),
                    "started_at": now,
                    "log_offsets": offsets,
                    "exit_code": None,
                },
                payload={"pid": handle.pid, "worktree": str(handle.workspace), "branch": handle.branch},
            )
        except InvalidTransitionError:
            await self._abandon(agent.id, handle, handle)
            return
        self.watch(agent, handle, adapter, offsets=offsets, signals=[])

    async def _spawn_failed(self, agent: Agent, exc: GodelError) -> None:
        log.warning("spawn failed", agent=agent.id, error=exc.message)
        try:
            agent, _ = await self.store.transition_agent(
                agent.id,
                Trigger.SPAWN_ERROR,
                actor="supervisor",
                reason=exc.message,
                changes={"last_error": exc.message},
                payload={"code": exc.code, "details": exc.details},
            )
        except InvalidTransitionError:
            return
        await self.after_failure(agent)

    async def _abandon(self, agent_id: str, handle: RuntimeHandle, started: RuntimeHandle | None) -> None:
        """The agent was killed (or deleted) while it was being spawned: stop what we started."""
        if started is not None:
            await self.runtime.terminate(started, grace=self.settings.kill_grace)
        try:
            agent = await self.store.get_agent(agent_id)
        except GodelError:
            return
        await self.store.update_agent(agent_id, handle_fields(started or handle))
        await self.apply_cleanup(agent, handle)

    def watch(
        self,
        agent: Agent,
        handle: RuntimeHandle,
        adapter: AgentAdapter,
        *,
        offsets: dict[str, int],
        signals: list[AgentSignal],
    ) -> None:
        self.watched[agent.id] = Watch(
            agent_id=agent.id,
            team_id=agent.team_id,
            handle=handle,
            adapter=adapter,
            parser=adapter.parser(),
            offsets=offsets,
            started_at=agent.started_at or self.clock.now(),
            runtime_before=agent.runtime if agent.state == AgentState.PAUSED else 0.0,
            timeout=agent.timeout or self.settings.default_timeout,
            paused=agent.state == AgentState.PAUSED,
            waiting=agent.state == AgentState.WAITING,
            recorded_waiting=agent.state == AgentState.WAITING,
            signals=signals,
        )

    # -------------------------------------------------------------------------------------------- watching

    async def watch_loop(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.settings.watch_interval)  # the poll period of the watch pass

    async def tick(self) -> None:
        """One pass over running agents: ingest output, notice exits and timeouts."""
        events: list[Event] = []
        changes: dict[str, dict[str, Any]] = {}
        ended: list[tuple[Watch, ProcessStatus]] = []
        now = self.clock.now()
        for w in list(self.watched.values()):
            if w.finishing:
                continue
            lines, offsets = await self.runtime.read_output(w.handle, w.offsets)
            if lines:
                w.ingest(lines, events, changes)
                w.offsets = offsets
                changes.setdefault(w.agent_id, {})["log_offsets"] = offsets
            status = await self.runtime.status(w.handle)
            if status.state in (ProcessState.EXITED, ProcessState.GONE):
                ended.append((w, status))
            elif not w.paused and w.elapsed(now) > w.timeout:
                w.timed_out = True
                w.finishing = True
                self.spawn_task(self._time_out(w))
        if events or changes:
            await self.store.append_events(events, agent_changes=changes)
        for w in list(self.watched.values()):
            if w.waiting != w.recorded_waiting and not w.paused and not w.finishing:
                await self._sync_waiting(w)
        for w, status in ended:
            w.finishing = True
            await self._finish(w, status)

    async def _sync_waiting(self, w: Watch) -> None:
        trigger = Trigger.AWAIT_INPUT if w.waiting else Trigger.INPUT_RECEIVED
        try:
            await self.store.transition_agent(w.agent_id, trigger, actor="supervisor")
        except InvalidTransitionError:
            pass  # paused or ended meanwhile
        w.recorded_waiting = w.waiting

    async def _time_out(self, w: Watch) -> None:
        await self.runtime.terminate(w.handle, grace=self.settings.kill_grace)
        status = await self.runtime.status(w.handle)
        await self._finish(w, status)

    async def _finish(self, w: Watch, status: ProcessStatus) -> None:
        """The process ended: ingest the rest of its output, decide the outcome, move the agent."""
        try:
            events: list[Event] = []
            changes: dict[str, dict[str, Any]] = {}
            lines, offsets = await self.runtime.read_output(w.handle, w.offsets, final=True)
            w.ingest(lines, events, changes)
            w.absorb(w.parser.finish(), events, changes)
            w.offsets = offsets
            changes.setdefault(w.agent_id, {})["log_offsets"] = offsets
            await self.store.append_events(events, agent_changes=changes)
            await self._decide(w, status)
        finally:
            self.watched.pop(w.agent_id, None)
            self.wake.set()

    async def _decide(self, w: Watch, status: ProcessStatus) -> None:
        changed, commits = await self._workspace_evidence(w.handle)
        evidence = Evidence(
            exit_code=status.exit_code,
            signals=list(w.signals),
            changed_files=changed,
            commits=len(commits),
            timed_out=w.timed_out,
        )
        outcome = w.adapter.outcome(evidence)
        now = self.clock.now()
        record = {
            "success": outcome.success,
            "reason": outcome.reason,
            "result": outcome.result,
            "signals": dump_signals(w.signals),
            "changedFiles": changed,
            "commits": len(commits),
            "exitCode": status.exit_code,
        }
        common: dict[str, Any] = {
            "exit_code": status.exit_code,
            "outcome": record,
            "commits": commits,
            "runtime": round(w.elapsed(now), 3),
        }
        try:
            if w.timed_out:
                reason = f"timed out after {w.timeout:g}s"
                agent, _ = await self.store.transition_agent(
                    w.agent_id, Trigger.TIMEOUT, actor="supervisor", reason=reason,
                    changes={**common, "last_error": reason},
                )  # fmt: skip
            elif status.state == ProcessState.GONE:
                reason = "the process vanished without recording an exit status"
                agent, _ = await self.store.transition_agent(
                    w.agent_id, Trigger.LOST, actor="supervisor", reason=reason,
                    changes={**common, "last_error": reason},
                )  # fmt: skip
            elif outcome.success:
                agent, _ = await self.store.transition_agent(
                    w.agent_id,
                    Trigger.TASK_COMPLETE,
                    actor="supervisor",
                    reason=outcome.reason,
                    changes=common,
                )
                await self.complete(agent, w.handle)
                return
            else:
                agent, _ = await self.store.transition_agent(
                    w.agent_id, Trigger.ERROR, actor="supervisor", reason=outcome.reason,
                    changes={**common, "last_error": outcome.reason},
                )  # fmt: skip
        except InvalidTransitionError:
            return  # a user command (kill, restart) got there first
        await self.after_failure(agent)

    async def _workspace_evidence(self, handle: RuntimeHandle) -> tuple[int, list[str]]:
        try:
            diff = await self.runtime.diff(handle)
            commits = await self.runtime.commits(handle)
        except GodelError as exc:
            log.warning("could not read workspace evidence", agent=handle.agent_id, error=exc.message)
            return 0, []
        return len(_DIFF_FILE.findall(diff)), commits

    async def complete(self, agent: Agent, handle: RuntimeHandle) -> None:
        try:
            await self.apply_cleanup(agent, handle, completing=True)
        except GodelError as exc:
            await self.store.transition_agent(
                agent.id, Trigger.CLEANUP_ERROR, actor="supervisor", reason=exc.message,
                changes={"last_error": exc.message, "completed_at": self.clock.now()},
            )  # fmt: skip
            return
        try:
            await self.store.transition_agent(
                agent.id, Trigger.CLEANUP_DONE, actor="supervisor", changes={"completed_at": self.clock.now()}
            )
        except InvalidTransitionError:
            pass

    async def after_failure(self, agent: Agent) -> None:
        """Retry with exponential backoff while attempts remain; otherwise apply the cleanup policy."""
        self.wake.set()
        if agent.retry_count < agent.max_retries:
            attempt = agent.retry_count + 1
            at = next_attempt_at(
                self.clock.now(),
                attempt,
                base=self.settings.retry_backoff,
                cap=self.settings.retry_backoff_max,
            )
            try:
                await self.store.transition_agent(
                    agent.id,
                    Trigger.RETRY,
                    actor="scheduler",
                    reason=f"attempt {attempt + 1} of {agent.max_retries + 1} after: {agent.last_error}",
                    changes={"retry_count": attempt, "next_attempt_at": at},
                    payload={"attempt": attempt + 1, "notBefore": at.isoformat()},
                )
            except InvalidTransitionError:
                pass
            return
        await self.store.update_agent(agent.id, {"completed_at": self.clock.now()})
        await self.apply_cleanup(agent, handle_of(agent, self.runtime.name, self.settings.worktrees_dir))

    # --------------------------------------------------------------------------------------------- cleanup

    async def apply_cleanup(self, agent: Agent, handle: RuntimeHandle, *, completing: bool = False) -> None:
        """Remove the workspace when the agent's cleanup policy says so (the branch always stays)."""
        if not agent.worktree or not Path(agent.worktree).exists():
            return
        succeeded = completing or agent.state in (AgentState.COMPLETING, AgentState.COMPLETED)
        policy = agent.cleanup
        if policy == CleanupPolicy.IMMEDIATE or (policy == CleanupPolicy.ON_SUCCESS and succeeded):
            await self.remove_workspace(agent.id, handle)
        elif policy == CleanupPolicy.DELAYED:
            self.spawn_task(self.delayed_cleanup(agent.id, handle, agent.cleanup_delay))

    async def delayed_cleanup(self, agent_id: str, handle: RuntimeHandle, delay: float) -> None:
        await asyncio.sleep(delay)  # the policy's delay itself, not a stand-in for work
        try:
            agent = await self.store.get_agent(agent_id)
        except GodelError:
            return
        if agent.state in ACTIVE or agent.state == AgentState.PENDING:
            return  # it was restarted meanwhile; the workspace is in use again
        await self.remove_workspace(agent_id, handle)

    async def remove_workspace(self, agent_id: str, handle: RuntimeHandle) -> None:
        await self.runtime.cleanup(handle)
        await self.store.append_events(
            [make_event("agent:cleanup", {"worktree": str(handle.workspace)}, component="supervisor",
                        agent_id=agent_id)],
            agent_changes={agent_id: {"worktree": None}},
        )  # fmt: skip

    # --------------------------------------------------------------------------------------------- helpers

    def spawn_task(
        self, coro: Any, registry: dict[str, asyncio.Task[None]] | None = None, key: str | None = None
    ) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._background.add(task)
        if registry is not None and key is not None:
            registry[key] = task

        def done(t: asyncio.Task[None]) -> None:
            self._background.discard(t)
            if registry is not None and key is not None and registry.get(key) is t:
                registry.pop(key, None)
            if not t.cancelled() and t.exception() is not None:
                log.error("supervisor task failed", error=repr(t.exception()))

        task.add_done_callback(done)

    async def drain(self) -> None:
        """Wait for launches and finishes in flight (shutdown)."""
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
