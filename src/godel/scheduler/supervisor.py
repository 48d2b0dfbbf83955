"""The supervisor: admits pending agents, launches them and watches them run.

Design:
- Every state change goes through ``Store.transition_agent`` (one writer); this module only decides *which*
  trigger to fire and *when*. How a run ends is in ``ending.py``, cleanup policies in ``cleanup.py``, the
  start-up reconciliation in ``adoption.py``, per-agent watch state in ``watch.py``.
- One watch pass (``tick``) visits every running agent: new output lines become ``agent:log`` events (and the
  adapter's parsed signals their own events), committed in one batch together with each agent's new log
  offsets; an offset moves in memory only after its commit. Because the agent writes its output straight to
  files, lines written while the server is down are not lost: re-adoption continues from the committed
  offsets.
- Runs that exited or timed out are claimed by the pass and ended in their own tasks, so a slow ending (git
  diff, cleanup) never stalls the pass for the others; the pass also yields to the event loop every few dozen
  agents so the API stays responsive with a thousand of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from godel.agents import get_adapter
from godel.auth.service import AuthService
from godel.core.events import Event
from godel.core.models import Agent
from godel.core.ports import (
    RUN_KEY,
    AgentAdapter,
    AgentSignal,
    Clock,
    LaunchRequest,
    ProcessState,
    Runtime,
    RuntimeHandle,
    Store,
    WorkspaceSpec,
)
from godel.core.runs import RunContext
from godel.core.states import ACTIVE, AgentState
from godel.core.transitions import Trigger
from godel.errors import AgentSpawnError, GodelError, InvalidTransitionError, NotFoundError
from godel.gateway.service import Gateway
from godel.scheduler.cleanup import apply_cleanup
from godel.scheduler.ending import after_failure, end
from godel.scheduler.handles import handle_fields, handle_of
from godel.scheduler.runs import (
    close_open_sessions,
    launch_request,
    open_session,
    revoke_run_keys,
    through_gateway,
    with_api_credential,
)
from godel.scheduler.watch import Changes, Checkpoint, Watch
from godel.settings import Settings
from godel.store.secrets import SecretBox

log = structlog.get_logger("godel.supervisor")

_YIELD_EVERY = 16  # agents visited per slice of the watch pass (about 0.5 ms) before letting other work run
# An agent that has written nothing for _QUIET_AFTER passes is looked at only every _QUIET_STRIDE-th pass
# (spread over passes by agent): a thousand idle agents then cost a quarter of a pass, while one that writes
# is back to every pass at its next line. Exits and timeouts of quiet agents are noticed within the stride.
_QUIET_AFTER = 10
_QUIET_STRIDE = 4


def _secrets_of(request: LaunchRequest | None) -> tuple[str, ...]:
    key = request.endpoint.api_key if request and request.endpoint else None
    return (key,) if key and len(key) >= 8 else ()  # a short "key" (e.g. "unused") would redact ordinary text


class Supervisor:
    def __init__(
        self,
        *,
        store: Store,
        runtime: Runtime,
        settings: Settings,
        clock: Clock,
        node_id: str,
        gateway: Gateway | None = None,
        auth: AuthService | None = None,
        secrets: SecretBox | None = None,
    ) -> None:
        self.store = store
        self.gateway = gateway  # when set (and settings.use_gateway), agents reach their models through it
        self.auth = auth  # when set, each run gets its own least-privilege API credential (GODEL_API_KEY)
        self.secrets = secrets or SecretBox.for_settings(settings)  # opens the sealed spawn env at launch
        self.runtime = runtime
        self.settings = settings
        self.clock = clock
        self.node_id = node_id
        self.watched: dict[str, Watch] = {}
        self._work: set[asyncio.Task[Any]] = set()  # launches and endings in flight: waited for at shutdown
        self._timers: set[asyncio.Task[Any]] = set()  # delayed cleanups: cancelled at shutdown, re-armed on start
        self.wake = asyncio.Event()  # set when a slot frees up or work arrives; the admission loop waits on it
        self._passes = 0

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
            except (InvalidTransitionError, NotFoundError):
                continue  # killed or deleted between the query and now
            admitted += 1
            self.spawn_task(self._launch(agent))
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
        has_workspace = bool(agent.worktree and Path(agent.worktree).exists())
        continuing = bool(RunContext.of(agent).resume)
        if has_workspace and not continuing:
            # A retry or restart: keep the previous attempt's uncommitted work as a snapshot, start clean.
            await self.runtime.cleanup(handle)
        if not (has_workspace and continuing):  # a follow-up continues in the workspace as the agent left it
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
        except (InvalidTransitionError, NotFoundError):
            await self._abandon(agent.id, handle)
            return
        adapter = get_adapter(agent.kind)
        session = None
        try:
            request = await through_gateway(self, agent, launch_request(self, agent, handle, speaks=adapter.wire_apis))
            request = await with_api_credential(self, agent, request)
            for private in (request.config_dir, request.output_dir):  # the CLI's own, outside the workspace
                private.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Adapters may read files (a session to resume): off the event loop.
            launch = await asyncio.to_thread(adapter.launch, request)
            # The session is committed before the process starts and names the launch: a server that dies from
            # here on finds, after a restart, whether this very launch started (``adoption.py``).
            session = await open_session(self, agent, request)
            handle.extra[RUN_KEY] = session.id
            handle = await self.runtime.start(handle, launch)
        except GodelError as exc:
            await self._spawn_failed(agent, exc)
            return
        except Exception as exc:  # an adapter's bug or an OS error must fail the spawn, not leave it `spawning`
            log.exception("launch failed", agent=agent.id)
            await self._spawn_failed(agent, AgentSpawnError(f"could not launch the {agent.kind} CLI: {exc!r}"))
            return
        offsets = dict(handle.extra.get("log_offsets", {}))
        # Registered before the start is committed, so a pause or kill that sees the agent executing finds its run.
        w = self.watch(
            agent, handle, adapter, request, offsets=offsets, signals=[], starting=True, started_at=self.clock.now()
        )
        await self.started(w, agent, session.id, model=request.endpoint.name if request.endpoint else None)

    async def started(self, w: Watch, agent: Agent, session_id: str, *, model: str | None) -> None:
        """Record that the watched run ``w`` has started (at launch, or when a restart finds a launch that the
        server died before recording); an agent killed or deleted meanwhile has its process stopped instead."""
        handle = w.handle
        context = RunContext.of(agent).replace(session=session_id).to_json()
        try:
            await self.store.transition_agent(
                agent.id,
                Trigger.SESSION_STARTED,
                actor="supervisor",
                changes={**handle_fields(handle), "started_at": w.started_at, "log_offsets": w.offsets,
                         "exit_code": None, "context": context, "outcome": {}},  # a new run: no old evidence
                payload={"pid": handle.pid, "worktree": str(handle.workspace), "branch": handle.branch,
                         "model": model, "sessionId": session_id},
            )  # fmt: skip
        except (InvalidTransitionError, NotFoundError):
            if not self.claim(w):
                return  # a kill claimed the run first and ends it
            if self.watched.get(agent.id) is w:
                del self.watched[agent.id]
            w.done.set()
            await close_open_sessions(self, agent.id, "killed or deleted while it was being spawned")
            await self._abandon(agent.id, handle)
            return
        w.starting = False

    async def _spawn_failed(self, agent: Agent, exc: GodelError) -> None:
        log.warning("spawn failed", agent=agent.id, error=exc.message)
        await revoke_run_keys(self, agent.id)  # a key may have been made (and written to its config) already
        await close_open_sessions(self, agent.id, f"spawn failed: {exc.message}")
        try:
            agent, _ = await self.store.transition_agent(
                agent.id,
                Trigger.SPAWN_ERROR,
                actor="supervisor",
                reason=exc.message,
                changes={"last_error": exc.message},
                payload={"code": exc.code, "details": exc.details},
            )
        except (InvalidTransitionError, NotFoundError):
            return
        await after_failure(self, agent)

    async def _abandon(self, agent_id: str, handle: RuntimeHandle) -> None:
        """The agent was killed or deleted while it was being spawned: stop what was started."""
        await self.runtime.terminate(handle, grace=self.settings.kill_grace)  # a no-op if nothing runs
        await revoke_run_keys(self, agent_id)
        try:
            agent = await self.store.update_agent(agent_id, handle_fields(handle))
        except NotFoundError:
            await self.runtime.cleanup(handle)  # deleted: nothing will ever look at this workspace again
            return
        await apply_cleanup(self, agent, handle)

    def watch(
        self,
        agent: Agent,
        handle: RuntimeHandle,
        adapter: AgentAdapter,
        request: LaunchRequest | None,
        *,
        offsets: dict[str, int],
        signals: list[AgentSignal],
        usage: dict[str, Any] | None = None,
        starting: bool = False,
        started_at: datetime | None = None,
    ) -> Watch:
        w = self.watched[agent.id] = Watch(
            agent_id=agent.id,
            team_id=agent.team_id,
            handle=handle,
            adapter=adapter,
            parser=adapter.parser(),
            request=request,
            usage=dict(usage or {}),
            secrets=_secrets_of(request),
            offsets=offsets,
            started_at=started_at or agent.started_at or self.clock.now(),
            runtime_before=agent.runtime if agent.state == AgentState.PAUSED else 0.0,
            timeout=agent.timeout or self.settings.default_timeout,
            paused=agent.state == AgentState.PAUSED,
            waiting=agent.state == AgentState.WAITING,
            recorded_waiting=agent.state == AgentState.WAITING,
            signals=signals,
            phase=len(self.watched) % _QUIET_STRIDE,
            starting=starting,
        )
        return w

    @staticmethod
    def claim(w: Watch) -> bool:
        """Become the one who ends this run (synchronous, so two claimants cannot both win)."""
        if w.finishing:
            return False
        w.finishing = True
        return True

    # -------------------------------------------------------------------------------------------- watching

    async def watch_loop(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.settings.watch_interval)  # the poll period of the watch pass

    async def tick(self) -> None:
        """One pass over running agents: ingest output, notice exits and timeouts."""
        events: list[Event] = []
        changes: Changes = {}
        read: list[tuple[Watch, dict[str, int], Checkpoint]] = []
        ended: list[Watch] = []
        now = self.clock.now()
        self._passes += 1
        visited = 0
        for w in list(self.watched.values()):
            if w.finishing or w.starting or (w.quiet >= _QUIET_AFTER and (self._passes + w.phase) % _QUIET_STRIDE):
                continue
            visited += 1
            if visited % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let requests and deliveries run during a long pass
            try:
                lines, offsets = await self.runtime.read_output(w.handle, w.offsets)
                status = await self.runtime.status(w.handle)
            except Exception:
                log.exception("could not observe agent", agent=w.agent_id)
                continue
            w.quiet = 0 if lines else w.quiet + 1
            if lines:
                read.append((w, offsets, w.checkpoint()))
                w.ingest(lines, events, changes)
                changes.setdefault(w.agent_id, {})["log_offsets"] = offsets
            if status.state in (ProcessState.EXITED, ProcessState.GONE):
                ended.append(w)
            elif not w.paused and w.elapsed(now) > w.timeout:
                w.timed_out = True
                ended.append(w)
        if events or changes:
            try:
                await self.store.append_events(events, agent_changes=changes)
            except Exception:
                log.exception("could not commit agent output; it will be read again")
                for w, _, cp in read:
                    w.rollback(cp)
                return
        for w, offsets, _ in read:
            w.offsets = offsets
        for w in list(self.watched.values()):
            if w.waiting != w.recorded_waiting and not w.paused and not w.finishing and not w.starting:
                await self._sync_waiting(w)
        for w in ended:
            if self.claim(w):
                self.spawn_task(end(self, w))

    async def _sync_waiting(self, w: Watch) -> None:
        trigger = Trigger.AWAIT_INPUT if w.waiting else Trigger.INPUT_RECEIVED
        try:
            await self.store.transition_agent(w.agent_id, trigger, actor="supervisor")
        except InvalidTransitionError:
            pass  # paused or ended meanwhile
        w.recorded_waiting = w.waiting

    # --------------------------------------------------------------------------------------------- helpers

    def spawn_task(self, coro: Coroutine[Any, Any, Any], *, timer: bool = False) -> None:
        task = asyncio.create_task(coro)
        owner = self._timers if timer else self._work
        owner.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            owner.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("supervisor task failed", error=repr(t.exception()))

        task.add_done_callback(done)

    async def drain(self, timeout: float = 30.0) -> None:
        """Shutdown: cancel timers (the next start re-arms them) and wait for launches and endings in flight."""
        for task in list(self._timers):
            task.cancel()
        pending = list(self._work)
        if pending:
            await asyncio.wait(pending, timeout=timeout)
