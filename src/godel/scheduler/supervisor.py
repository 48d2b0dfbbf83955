"""The supervisor: admits pending agents, launches them, keeps their live runs and watches them.

Design:
- Every state change goes through ``Store.transition_agent`` (one writer). A run's own steps live on the run
  (``run.py``: start, output, ending; ``verdict.py``: the outcome from evidence; ``aftercare.py``: retries,
  fallbacks and cleanup), its launch in ``launching.py``, the start-up reconciliation in ``adoption.py``. The
  supervisor keeps the runs, the admission loop and the watch pass, and ``end_run``, the one way a run ends.
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
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from godel.auth.service import AuthService
from godel.core.events import Event
from godel.core.models import Agent
from godel.core.ports import Clock, ProcessState, Runtime, Store
from godel.core.states import ACTIVE
from godel.core.transitions import Trigger
from godel.errors import InvalidTransitionError, NotFoundError
from godel.gateway.service import Gateway
from godel.scheduler import holding
from godel.scheduler.deps import RunDeps
from godel.scheduler.keys import RunKeys
from godel.scheduler.launching import Launch, launch
from godel.scheduler.output import Changes, Checkpoint
from godel.scheduler.run import AgentRun
from godel.scheduler.sessions import Sessions
from godel.settings import Settings
from godel.store.secrets import SecretBox

log = structlog.get_logger("godel.supervisor")

_YIELD_EVERY = 16  # agents visited per slice of the watch pass (about 0.5 ms) before letting other work run
# An agent that has written nothing for _QUIET_AFTER passes is looked at only every _QUIET_STRIDE-th pass
# (spread over passes by agent): a thousand idle agents then cost a quarter of a pass, while one that writes
# is back to every pass at its next line. Exits and timeouts of quiet agents are noticed within the stride.
_QUIET_AFTER = 10
_QUIET_STRIDE = 4


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
        self.runtime = runtime
        self.settings = settings
        self.clock = clock
        self.node_id = node_id
        self.runs: dict[str, AgentRun] = {}
        self.launches: dict[str, Launch] = {}  # launches in flight, by agent: a kill, delete or restart stops them
        self._work: set[asyncio.Task[Any]] = set()  # launches and endings in flight: waited for at shutdown
        self._timers: set[asyncio.Task[Any]] = set()  # delayed cleanups: cancelled at shutdown, re-armed on start
        self._admitting = asyncio.Lock()  # admit_once and create: no slot is given twice
        self._auto_admit = False  # while the admission loop runs (not when admission is driven by hand)
        self.wake = asyncio.Event()  # set when a slot frees up or work arrives; the admission loop waits on it
        self._passes = 0
        self.deps = RunDeps(
            store=store,
            runtime=runtime,
            settings=settings,
            clock=clock,
            keys=RunKeys(settings, gateway, auth),
            sessions=Sessions(store, clock),
            secrets=secrets or SecretBox.for_settings(settings),
            node_id=node_id,
            arm_timer=self._arm_timer,
            wake=self.wake.set,
        )

    # ------------------------------------------------------------------------------------------ admission

    async def admit_once(self) -> int:
        """Admit pending agents by priority into free slots; returns how many were admitted."""
        async with self._admitting:
            # Whether anything waits, first: usually nothing does (a spawn on a free node is admitted as it is
            # created), and then this pass, which also runs as a fallback every reconcile_interval, is one read.
            if not await self.store.admissible_agents(self.clock.now(), 1):
                return 0
            busy = await self.store.count_agents(sorted(ACTIVE), self.node_id)
            free = self.settings.max_concurrent_agents - busy
            if free <= 0:
                return 0
            admitted = 0
            for candidate in await self.store.admissible_agents(self.clock.now(), free):
                try:
                    agent, _ = await self.store.transition_agent(
                        candidate.id, Trigger.ADMIT, actor="scheduler", reason=self._admit_reason,
                        changes=self._admit_changes(),
                    )  # fmt: skip
                except (InvalidTransitionError, NotFoundError):
                    continue  # killed or deleted between the query and now
                admitted += 1
                self._launch(agent)
            return admitted

    async def create(self, agent: Agent, *, actor: str, admit: bool = True) -> Agent:
        """Queue a new agent (``pending``); ``admit=False``: the caller wakes the admission loop once it is ready for
        it. With ``admit``, it is admitted in the same transaction when a slot is free
        and no queued agent goes first, and launched at once: a spawn on an idle node pays neither the admission
        pass's reads nor its own transaction. Only while the admission loop runs (a server driven by hand admits by
        hand); otherwise the loop is woken. Returns the agent as created."""
        if not (admit and self._auto_admit):
            created, _ = await self.store.create_agent(agent, actor=actor)
            if admit:
                self.wake.set()
            return created
        async with self._admitting:  # one admission decision at a time: the count of busy slots stays true
            created, admitted = await self.store.create_and_admit(
                agent, actor=actor, node_id=self.node_id, slots=self.settings.max_concurrent_agents,
                reason=self._admit_reason, changes=self._admit_changes(),
            )  # fmt: skip
        if admitted is None:
            self.wake.set()
            return created
        self._launch(admitted)
        # One turn of the loop: the launch gets as far as starting git before the caller (the POST) goes on.
        await asyncio.sleep(0)
        return created

    def _launch(self, agent: Agent) -> None:
        control = Launch(agent.id)
        self.launches[agent.id] = control
        control.task = self.spawn_task(launch(self.deps, agent, self, control), name=f"launch {agent.id}")

        def done(_: asyncio.Task[Any]) -> None:
            if self.launches.get(agent.id) is control:
                del self.launches[agent.id]

        control.task.add_done_callback(done)

    async def stop_launch(self, agent_id: str) -> None:
        """Stop the agent's launch in flight, if any (its checkout is cancelled; past it, the launch finds the row
        moved at its next step), and wait until it has ended and taken back what it made. Called once the row has
        been moved (killed, deleted), or before it is moved back to the queue (restart): so no launch outlives the
        move, to meet the agent's next launch."""
        control = self.launches.get(agent_id)
        if control is None or control.task is None or control.task is asyncio.current_task():
            return  # none, or the launch itself asks (through what its own steps set off): it ends by itself
        control.stop()
        await asyncio.wait({control.task})

    @property
    def _admit_reason(self) -> str:
        return f"slot free on node {self.settings.node_name}"

    def _admit_changes(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "runtime": 0.0}

    async def admission_loop(self) -> None:
        self._auto_admit = True  # admission runs by itself now: a spawn may be admitted as it is created
        try:
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
        finally:
            self._auto_admit = False

    # ----------------------------------------------------------------------------------------------- runs

    def register(self, run: AgentRun) -> None:
        run.phase = len(self.runs) % _QUIET_STRIDE
        self.runs[run.agent_id] = run

    async def started(self, run: AgentRun) -> None:
        """Its start is committed: a hold put on the agent meanwhile is applied now (looked at after the commit)."""
        await holding.apply_hold(self.deps, self.runs, await self.store.get_agent(run.agent_id))

    async def pause(self, agent_id: str, *, actor: str, reason: str | None) -> Agent:
        return await holding.pause(self.deps, self.runs, agent_id, actor=actor, reason=reason)

    async def resume(self, agent_id: str, *, actor: str, reason: str | None) -> Agent:
        return await holding.resume(self.deps, self.runs, agent_id, actor=actor, reason=reason)

    async def hold(self, agent_id: str, *, by: str, reason: str) -> None:
        await holding.hold(self.deps, self.runs, agent_id, by=by, reason=reason)

    async def release(self, agent_id: str, *, by: str, reason: str) -> None:
        await holding.release(self.deps, self.runs, agent_id, by=by, reason=reason)

    def forget(self, run: AgentRun) -> None:
        if self.runs.get(run.agent_id) is run:  # a new run of the agent (restart, continue) may be here already
            del self.runs[run.agent_id]

    async def end_run(
        self,
        run: AgentRun,
        *,
        stop: Trigger | None = None,
        actor: str = "supervisor",
        reason: str | None = None,
        claimed: bool = False,
    ) -> Agent | None:
        """The one way a run ends, whatever the reason (exit, timeout: ``stop`` None; kill or restart: ``stop``).
        Returns the agent as the ending left it, or None when another party had claimed the run (this call then
        returns once that party is done)."""
        if not claimed and not run.claim():
            await run.done.wait()
            return None
        try:
            agent = await run.end(stop, actor, reason)
        except BaseException:
            run.finishing = False  # not ended: the next watch pass (or the caller, again) tries once more
            raise
        self.forget(run)
        run.done.set()
        self.wake.set()
        return agent

    # -------------------------------------------------------------------------------------------- watching

    async def watch_loop(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.settings.watch_interval)  # the poll period of the watch pass

    async def tick(self) -> None:
        """One pass over running agents: ingest output, notice exits and timeouts."""
        events: list[Event] = []
        changes: Changes = {}
        read: list[tuple[AgentRun, dict[str, int], Checkpoint]] = []
        ended: list[AgentRun] = []
        now = self.clock.now()
        self._passes += 1
        visited = 0
        for w in list(self.runs.values()):
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
        for w in list(self.runs.values()):
            if w.waiting != w.recorded_waiting and not w.paused and not w.finishing and not w.starting:
                await self._sync_waiting(w)
        for w in ended:
            if w.claim():
                self.spawn_task(self.end_run(w, claimed=True), name=f"end {w.agent_id}")

    async def _sync_waiting(self, w: AgentRun) -> None:
        trigger = Trigger.AWAIT_INPUT if w.waiting else Trigger.INPUT_RECEIVED
        try:
            await self.store.transition_agent(w.agent_id, trigger, actor="supervisor")
        except InvalidTransitionError:
            pass  # paused or ended meanwhile
        w.recorded_waiting = w.waiting

    # --------------------------------------------------------------------------------------------- helpers

    def _arm_timer(self, name: str, delay: float, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        async def timer() -> None:
            await self.deps.clock.sleep(delay)  # on the injected clock (tests move it)
            # Work in flight from here on: shutdown waits for it rather than cancel it halfway through a write.
            self.spawn_task(work(), name=name)

        self.spawn_task(timer(), name=name, timer=True)

    def spawn_task(self, coro: Coroutine[Any, Any, Any], *, name: str, timer: bool = False) -> asyncio.Task[Any]:
        """Work of the supervisor's own (a launch, an ending) or a timer, named, kept and waited for or cancelled at
        shutdown; a failure is logged, never lost."""
        task = asyncio.create_task(coro, name=name)
        owner = self._timers if timer else self._work
        owner.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            owner.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("supervisor task failed", task=t.get_name(), error=repr(t.exception()))

        task.add_done_callback(done)
        return task

    async def drain(self, timeout: float = 30.0) -> None:
        """Shutdown: cancel timers (the next start re-arms them) and wait for launches and endings in flight."""
        for task in list(self._timers):
            task.cancel()
        pending = list(self._work)
        if pending:
            await asyncio.wait(pending, timeout=timeout)
