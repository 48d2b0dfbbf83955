"""Running workflows: each step becomes an agent, every move is persisted, and a restart carries on.

A run is a row in ``workflows`` and one row per step in ``workflow_steps``. One asyncio task per running workflow
(``_Run``) looks at the step rows, asks the definition which steps may start (``WorkflowDefinition.progress``:
dependencies finished, ``maxConcurrency`` respected), evaluates each one's ``when``, renders its templates and
spawns its agent through the control plane; a watcher per running step waits for the agent to end and records
the outcome. A failed attempt is retried after the step's backoff (a new agent per attempt); when the retries
are spent, ``onError`` decides: ``fail`` fails the workflow (nothing new starts; running steps finish),
``continue`` lets dependents run.

Exactly-once steps across a crash: a step is marked ``running`` with the attempt number *before* its agent is
spawned, and the agent carries a label naming the workflow, step and attempt. A restarted engine finds a running
step's agent by its id or, if the crash came between the two writes, by that label -- and waits for it rather than
spawning another. Completed steps are never run again. The agents themselves survive a restart of the server
(the control plane adopts them).

Events (spec §2.2): ``workflow:start``, ``workflow:step:start``, ``workflow:step:complete``, ``workflow:step:error``,
``workflow:complete``, ``workflow:cancel``, and ``workflow:step:skip``, ``workflow:step:retry``,
``workflow:step:cancel``, ``workflow:fail``, ``workflow:pause``, ``workflow:resume``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

import structlog

from godel.agents.roles import load_roles, takes_tools
from godel.core.events import Event, EventFilter, make_event
from godel.core.ids import new_id
from godel.core.models import Agent, Workflow, WorkflowStep
from godel.core.ports import AgentQuery, Page
from godel.core.states import AgentState
from godel.errors import (
    FieldError,
    GodelError,
    ValidationError,
    WorkflowConditionError,
    WorkflowTemplateError,
)
from godel.scheduler.plane import ControlPlane
from godel.scheduler.requests import SpawnRequest
from godel.scheduler.waiting import has_ended
from godel.workflow.context import build_context, step_view
from godel.workflow.definition import OnError, StepDefinition, WorkflowDefinition
from godel.workflow.graph import TERMINAL, StepStatus
from godel.workflow.parsing import parse_workflow

log = structlog.get_logger("godel.workflow")

PENDING, RUNNING, PAUSED = "pending", "running", "paused"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
FINISHED = (COMPLETED, FAILED, CANCELLED)
OUTPUT_LINES = 200  # a command step without GODEL_RESULT: its output is the tail of what it printed


MAX_RELAUNCHES = 3  # a step whose agent was lost before it started is launched again, this many times at most


def agent_label(workflow_id: str, step_id: str, attempt: int, relaunch: int = 0) -> str:
    return f"wf:{workflow_id}:{step_id}:{attempt}" + (f".{relaunch}" if relaunch else "")


@dataclass
class _Run:
    """The engine's in-memory view of one running workflow; the rows are the truth, this is rebuilt from them."""

    workflow_id: str
    definition: WorkflowDefinition
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    watchers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    holds: set[asyncio.Task[None]] = field(default_factory=set)  # agents to pause once they start (see _hold)
    task: asyncio.Task[None] | None = None


class WorkflowRows(Protocol):
    """The store methods the engine uses (``SqlStore`` has them: ``store.workflows``)."""

    async def create_workflow(
        self, workflow: Workflow, steps: Sequence[WorkflowStep], events: Sequence[Event] = ()
    ) -> Workflow: ...
    async def get_workflow(self, workflow_id: str) -> Workflow: ...
    async def list_workflows(
        self, *, statuses: Sequence[str] = (), limit: int = 50, cursor: str | None = None
    ) -> Page[Workflow]: ...
    async def workflow_steps(self, workflow_id: str) -> list[WorkflowStep]: ...
    async def update_workflow(
        self, workflow_id: str, changes: dict[str, Any], events: Sequence[Event] = (), *, expect: Sequence[str] = ()
    ) -> Workflow: ...
    async def update_step(
        self, workflow_id: str, step_id: str, changes: dict[str, Any], events: Sequence[Event] = (), *,
        workflow_changes: dict[str, Any] | None = None, expect: str | None = None,
    ) -> bool: ...  # fmt: skip
    async def delete_workflow(
        self, workflow_id: str, events: Sequence[Event] = (), *, expect: Sequence[str] = ()
    ) -> None: ...
    async def cancel_workflow(
        self, workflow_id: str, changes: dict[str, Any], events: Sequence[Event],
        step_event: Callable[[WorkflowStep], Event], *, expect: Sequence[str], finished: Sequence[str],
    ) -> tuple[Workflow, list[WorkflowStep]]: ...  # fmt: skip


class WorkflowEngine:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.store = cast(WorkflowRows, plane.store)
        self._runs: dict[str, _Run] = {}
        self._stopping = False

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Pick up every workflow that was running (or paused) when the server stopped."""
        page = await self.store.list_workflows(statuses=(RUNNING, PAUSED), limit=10_000)
        for wf in page.items:
            self._launch(wf.id, parse_workflow(wf.definition, filename=f"workflow {wf.id}"))
        if page.items:
            log.info("workflows resumed", count=len(page.items))

    async def stop(self) -> None:
        """Stop driving the runs; their rows and agents stay as they are, for the next start to carry on."""
        self._stopping = True
        runs = list(self._runs.values())
        for run in runs:
            for watcher in [*run.watchers.values(), *run.holds]:
                watcher.cancel()
            if run.task is not None:
                run.task.cancel()
        for run in runs:
            for task in [*run.watchers.values(), *run.holds, run.task]:
                if task is not None:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        self._runs.clear()

    # ------------------------------------------------------------------------------------------ requests

    async def submit(
        self,
        definition: WorkflowDefinition,
        *,
        repo: str,
        base_ref: str = "HEAD",
        variables: dict[str, Any] | None = None,
        team_id: str | None = None,
        created_by: str = "api",
        start: bool = True,
    ) -> Workflow:
        resolved = definition.resolve_variables(variables)  # an undeclared variable is refused here
        self._check_roles(definition)
        workflow_id = new_id()
        now = self.plane.clock.now()
        wf = Workflow(
            id=workflow_id, name=definition.name, description=definition.description,
            definition=definition.to_dict(), status=PENDING, team_id=team_id, created_by=created_by, created_at=now,
            context={"repo": repo, "baseRef": base_ref, "variables": variables or {}, "resolved": resolved},
            results={}, metadata={},
        )  # fmt: skip
        steps = [
            WorkflowStep(
                id=new_id(),
                workflow_id=workflow_id,
                step_id=s.id,
                name=s.name,
                task=s.task,
                dependencies=list(s.depends_on),
                result={"attempts": []},
            )
            for s in definition.steps
        ]
        created = self._event(wf, "workflow:created", {"name": wf.name, "steps": len(steps), "repo": repo})
        await self.store.create_workflow(wf, steps, [created])
        if start:
            return await self.start_workflow(workflow_id)
        return wf

    def _check_roles(self, definition: WorkflowDefinition) -> None:
        """Roles come from the server's configuration, so only the server can check them (the definition layer
        checked everything else: agents, commands, references)."""
        roles = load_roles(self.plane.settings.roles)
        known = ", ".join(sorted(roles))
        problems = [
            FieldError(f"steps[{index}].role", f"unknown role {step.role!r}; one of: {known}")
            for index, step in enumerate(definition.steps)
            if step.role is not None and step.role not in roles
        ]
        if problems:
            raise ValidationError("the workflow cannot run: " + "; ".join(p.message for p in problems), problems)

    async def start_workflow(self, workflow_id: str) -> Workflow:
        wf = await self.store.get_workflow(workflow_id)
        started = self._event(wf, "workflow:start", {"name": wf.name})
        wf = await self.store.update_workflow(
            workflow_id, {"status": RUNNING, "started_at": self.plane.clock.now()}, [started], expect=(PENDING,)
        )
        self._launch(workflow_id, parse_workflow(wf.definition))
        return wf

    async def list_workflows(
        self, *, statuses: Sequence[str] = (), limit: int = 50, cursor: str | None = None
    ) -> Page[Workflow]:
        return await self.store.list_workflows(statuses=statuses, limit=limit, cursor=cursor)

    async def get(self, workflow_id: str) -> tuple[Workflow, list[WorkflowStep]]:
        wf = await self.store.get_workflow(workflow_id)
        return wf, await self.store.workflow_steps(workflow_id)

    async def cancel(self, workflow_id: str, *, reason: str = "cancelled on request") -> Workflow:
        wf = await self.store.get_workflow(workflow_id)
        # The run and its unfinished steps end in one transaction; their agents are stopped after.
        wf, stopped = await self.store.cancel_workflow(
            workflow_id, {"status": CANCELLED, "completed_at": self.plane.clock.now()},
            [self._event(wf, "workflow:cancel", {"reason": reason})],
            lambda step: self._event(wf, "workflow:step:cancel", {"stepId": step.step_id, "reason": reason}),
            expect=(PENDING, RUNNING, PAUSED), finished=tuple(str(s) for s in TERMINAL),
        )  # fmt: skip
        run = self._runs.get(workflow_id)
        if run is not None:
            run.wake.set()  # the run notices the status, stops its watchers and winds down
        for step in stopped:
            if step.status == RUNNING and step.agent_id is not None:
                with contextlib.suppress(GodelError):  # it may have ended meanwhile
                    await self.plane.kill(step.agent_id, actor="workflow", reason=f"workflow {reason}")
        return wf

    async def update(
        self,
        workflow_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        variables: dict[str, Any] | None = None,
    ) -> Workflow:
        """Rename or describe a run at any time; change its variables only before it starts (a running step may
        already have read them)."""
        wf = await self.store.get_workflow(workflow_id)
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = name
        if description is not None:
            changes["description"] = description
        expect: tuple[str, ...] = ()
        if variables is not None:
            resolved = parse_workflow(wf.definition).resolve_variables(variables)  # undeclared names: 400
            changes["context"] = {**(wf.context or {}), "variables": variables, "resolved": resolved}
            expect = (PENDING,)
        event = self._event(wf, "workflow:update", {"fields": sorted(changes)})
        return await self.store.update_workflow(workflow_id, changes, [event], expect=expect)

    async def delete(self, workflow_id: str, *, force: bool = False) -> None:
        """Delete a run that is not going (``force``: cancel a going one first). Its events stay in the log."""
        wf = await self.store.get_workflow(workflow_id)
        if force and wf.status not in FINISHED:
            wf = await self.cancel(workflow_id, reason="deleted")
        event = self._event(wf, "workflow:delete", {"name": wf.name})
        await self.store.delete_workflow(workflow_id, [event], expect=(PENDING, *FINISHED))

    async def pause(self, workflow_id: str) -> Workflow:
        wf = await self.store.get_workflow(workflow_id)
        wf = await self.store.update_workflow(
            workflow_id, {"status": PAUSED}, [self._event(wf, "workflow:pause", {})], expect=(RUNNING,)
        )
        run = self._runs.get(workflow_id)
        for step in await self.store.workflow_steps(workflow_id):
            if step.status == RUNNING and step.agent_id is not None and run is not None:
                self._hold(run, step.agent_id)
        return wf

    async def resume(self, workflow_id: str) -> Workflow:
        wf = await self.store.get_workflow(workflow_id)
        wf = await self.store.update_workflow(
            workflow_id, {"status": RUNNING}, [self._event(wf, "workflow:resume", {})], expect=(PAUSED,)
        )
        for step in await self.store.workflow_steps(workflow_id):
            if step.status == RUNNING and step.agent_id is not None:
                agent = await self.plane.get(step.agent_id)
                if agent.state == AgentState.PAUSED:
                    with contextlib.suppress(GodelError):
                        await self.plane.resume(step.agent_id, actor="workflow", reason="workflow resumed")
        run = self._runs.get(workflow_id)
        if run is not None:
            run.wake.set()
        else:
            self._launch(workflow_id, parse_workflow(wf.definition))
        return wf

    # ----------------------------------------------------------------------------------------- the run

    def _launch(self, workflow_id: str, definition: WorkflowDefinition) -> None:
        if workflow_id in self._runs or self._stopping:
            return
        run = _Run(workflow_id, definition)
        self._runs[workflow_id] = run
        run.task = asyncio.get_running_loop().create_task(self._drive(run))

    async def _drive(self, run: _Run) -> None:
        try:
            await self._loop(run)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not leave the run silently stuck as "running"
            log.exception("workflow run failed", workflow=run.workflow_id)
            with contextlib.suppress(Exception):
                await self._finish(run, FAILED, f"the engine failed: {type(exc).__name__}: {exc}")
        finally:
            if self._runs.get(run.workflow_id) is run:
                del self._runs[run.workflow_id]

    async def _loop(self, run: _Run) -> None:
        definition = run.definition
        while True:
            run.wake.clear()
            wf = await self.store.get_workflow(run.workflow_id)
            if wf.status in FINISHED:
                for watcher in run.watchers.values():
                    watcher.cancel()
                return
            steps = {s.step_id: s for s in await self.store.workflow_steps(run.workflow_id)}
            self._watch_running(run, wf, steps)
            statuses = {sid: s.status for sid, s in steps.items()}
            progress = definition.progress(statuses)
            for sid in progress.blocked:
                reason = "a step it depends on was cancelled"
                await self._set_step(wf, sid, {"status": CANCELLED}, "workflow:step:cancel", {"reason": reason})
            if progress.fatal:  # nothing new starts: a step waiting out its backoff will not get its next try
                waiting = [sid for sid, row in steps.items() if row.status == StepStatus.RETRYING.value]
                for sid in waiting:
                    reason = f"step {', '.join(progress.fatal)} failed"
                    await self._set_step(wf, sid, {"status": CANCELLED, "completed_at": self.plane.clock.now()},
                                         "workflow:step:cancel", {"reason": reason})  # fmt: skip
                if waiting:
                    continue
            if progress.finished or (progress.fatal and not progress.active):
                status = FAILED if progress.fatal else COMPLETED
                why = f"step {', '.join(progress.fatal)} failed" if progress.fatal else None
                await self._finish(run, status, why)
                return
            left = self._time_left(wf, definition)
            if left is not None and left <= 0:
                await self.cancel(run.workflow_id, reason=f"timed out after {definition.timeout:g}s")
                return
            if wf.status == RUNNING and not progress.fatal:
                # Side by side: a spawn is mostly waiting (git, the store), and a wide level should not queue.
                begun = await asyncio.gather(*(self._begin(run, wf, definition.step(sid), steps)
                                               for sid in progress.ready), return_exceptions=True)  # fmt: skip
                for sid, outcome in zip(progress.ready, begun, strict=True):
                    if isinstance(outcome, BaseException):  # the others went on; the loop looks at this one again
                        log.error("a workflow step could not start", workflow=wf.id, step=sid, error=repr(outcome))
                if any(outcome is True for outcome in begun) or progress.blocked:
                    continue  # look again at once: a skipped step may make others ready
            due = await self._retry_due(run, wf, steps)
            if due == 0.0:
                continue
            wait = min(x for x in (due, left, 60.0) if x is not None)  # wake for a retry, or the run's deadline
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.wake.wait(), timeout=max(wait, 0.01))

    def _time_left(self, wf: Workflow, definition: WorkflowDefinition) -> float | None:
        """Seconds until the run's ``timeout`` (None: it has none)."""
        if definition.timeout is None or wf.started_at is None:
            return None
        return definition.timeout - (self.plane.clock.now() - wf.started_at).total_seconds()

    async def _finish(self, run: _Run, status: str, reason: str | None) -> None:
        wf = await self.store.get_workflow(run.workflow_id)
        if wf.status in FINISHED:
            return
        for step in await self.store.workflow_steps(run.workflow_id):
            if step.status not in TERMINAL and step.status != RUNNING:
                await self._set_step(wf, step.step_id, {"status": CANCELLED}, "workflow:step:cancel",
                                     {"reason": reason or "the workflow ended"})  # fmt: skip
        kind = "workflow:complete" if status == COMPLETED else "workflow:fail"
        event = self._event(wf, kind, {"status": status, "reason": reason})
        await self.store.update_workflow(
            run.workflow_id, {"status": status, "completed_at": self.plane.clock.now(), "current_step_id": None},
            [event], expect=(RUNNING, PAUSED),
        )  # fmt: skip

    # ----------------------------------------------------------------------------------------- one step

    async def _begin(self, run: _Run, wf: Workflow, step: StepDefinition, steps: dict[str, WorkflowStep]) -> bool:
        """Start a ready step: skip it (its ``when`` is false), fail it (its ``when`` or a template cannot be
        evaluated), or spawn its first attempt. True when its status changed."""
        context = self._context(run.definition, wf, steps)
        try:
            if step.condition is not None and not step.condition.evaluate(context, step_id=step.id):
                await self._set_step(wf, step.id, {"status": StepStatus.SKIPPED.value,
                                                   "completed_at": self.plane.clock.now()},
                                     "workflow:step:skip", {"when": step.when})  # fmt: skip
                return True
            step.render(context)  # fail now, not at spawn, when a template cannot be filled
        except (WorkflowConditionError, WorkflowTemplateError) as exc:
            await self._step_failed(run, wf, step, steps[step.id], exc.message, retryable=False)
            return True
        await self._spawn_attempt(run, wf, step, steps, attempt=1)
        return True

    async def _spawn_attempt(
        self,
        run: _Run,
        wf: Workflow,
        step: StepDefinition,
        steps: dict[str, WorkflowStep],
        *,
        attempt: int,
        relaunch: int = 0,
    ) -> None:
        row = steps[step.id]
        context = self._context(run.definition, wf, steps)
        rendered = step.render(context)
        result = dict(row.result or {})
        result["attempt"], result["relaunch"] = attempt, relaunch
        result.pop("nextAttemptAt", None)
        # Running first, with the attempt number: after a crash between this write and the spawn, the agent (if
        # any) is found by its label instead of being spawned twice.
        await self._set_step(
            wf, step.id, {"status": RUNNING, "started_at": self.plane.clock.now(), "result": result,
                          "retry_count": attempt - 1, "agent_id": None},
            "workflow:step:start", {"attempt": attempt, "relaunch": relaunch, "name": step.name},
            workflow_changes={"current_step_id": step.id},
        )  # fmt: skip
        ctx = wf.context or {}
        kind, model, config, preamble = self._profile(step)
        request = SpawnRequest(
            task=rendered.task, repo=step.repo or ctx.get("repo") or "", base_ref=self._base_ref(step, wf, steps),
            label=agent_label(wf.id, step.id, attempt, relaunch), team_id=wf.team_id, agent=kind,
            command=rendered.command, model=model, timeout=step.timeout, env=rendered.env, config=config,
            prompt_context=preamble,
            metadata={"workflowId": wf.id, "stepId": step.id, "attempt": attempt, "role": step.role},
            owner=wf.created_by if (wf.created_by or "").startswith(("user:", "agent:")) else None,
        )  # fmt: skip
        try:
            agent = await self.plane.spawn(request, actor=f"workflow:{wf.id}")
        except GodelError as exc:
            fresh = await self.store.workflow_steps(wf.id)
            await self._step_failed(run, wf, step, next(s for s in fresh if s.step_id == step.id),
                                    f"could not spawn its agent: {exc.message}", retryable=True)  # fmt: skip
            return
        result["attempts"] = [*result.get("attempts", []), agent.id]
        await self._set_step(wf, step.id, {"agent_id": agent.id, "result": result}, None, {})
        # The run may have been cancelled or paused while the agent was being spawned: cancel saw no agent to
        # kill, pause none to pause. Now there is one (and it is recorded, so a later cancel finds it too).
        now = await self.store.get_workflow(wf.id)
        if now.status in FINISHED:
            with contextlib.suppress(GodelError):
                await self.plane.kill(agent.id, actor="workflow", reason=f"workflow {now.status}")
            return
        if now.status == PAUSED:
            self._hold(run, agent.id)
        self._watch(run, wf, step.id, agent.id)

    def _profile(self, step: StepDefinition) -> tuple[str, str, dict[str, Any], str | None]:
        """The step's agent kind, model, adapter options and prompt preamble: its own, else its role's
        (``role:``, see ``godel.agents.roles``: the preamble goes before the task, the tool allowlist to the CLIs
        that take one)."""
        kind, model = step.agent or "command", step.model or ""
        if step.role is None:
            return kind, model, {}, None
        role = load_roles(self.plane.settings.roles)[step.role]
        kind = step.agent or role.agent or kind
        model = step.model or role.model or ""
        tools = role.tools_for(kind)
        config = {"tools": tools} if tools is not None and takes_tools(kind) else {}
        return kind, model, config, role.preamble or None

    def _base_ref(self, step: StepDefinition, wf: Workflow, steps: dict[str, WorkflowStep]) -> str:
        """The step's own ``baseRef``; else, for a step with exactly one dependency whose agent committed work,
        that agent's branch (so ``test`` runs on what ``implement`` wrote); else the workflow's base."""
        if step.base_ref:
            return step.base_ref
        if len(step.depends_on) == 1:
            branch = (steps[step.depends_on[0]].result or {}).get("branch")
            if branch and (steps[step.depends_on[0]].result or {}).get("commits"):
                return str(branch)
        return str((wf.context or {}).get("baseRef") or "HEAD")

    def _watch_running(self, run: _Run, wf: Workflow, steps: dict[str, WorkflowStep]) -> None:
        """Every running step has a watcher (after a restart, new ones are made for the steps found running)."""
        for sid, row in steps.items():
            if row.status != RUNNING or sid in run.watchers:
                continue
            if row.agent_id is not None:
                self._watch(run, wf, sid, row.agent_id)
            else:  # the crash came between marking it running and recording its agent
                attempt, relaunch = (
                    int((row.result or {}).get("attempt", 1)),
                    int((row.result or {}).get("relaunch", 0)),
                )
                adopt = self._adopt(run, wf, sid, attempt, relaunch)
                run.watchers[sid] = asyncio.get_running_loop().create_task(adopt)

    async def _adopt(self, run: _Run, wf: Workflow, step_id: str, attempt: int, relaunch: int) -> None:
        label = agent_label(wf.id, step_id, attempt, relaunch)
        page = await self.plane.list_agents(AgentQuery(label=label, limit=1))
        run.watchers.pop(step_id, None)
        step = run.definition.step(step_id)
        if page.items:
            agent = page.items[0]
            steps = {s.step_id: s for s in await self.store.workflow_steps(wf.id)}
            result = dict(steps[step_id].result or {})
            result["attempts"] = [*result.get("attempts", []), agent.id]
            await self._set_step(wf, step_id, {"agent_id": agent.id, "result": result}, None, {})
            self._watch(run, wf, step_id, agent.id)
        else:
            steps = {s.step_id: s for s in await self.store.workflow_steps(wf.id)}
            await self._spawn_attempt(run, wf, step, steps, attempt=attempt, relaunch=relaunch)

    def _hold(self, run: _Run, agent_id: str) -> None:
        """Pause ``agent_id`` for a paused run: at once if it executes, else as soon as it starts (a queued or
        half-spawned agent cannot be paused yet), unless the run is no longer paused by then."""

        async def hold() -> None:
            sub = self.plane.bus.subscribe(EventFilter(patterns=("agent:*",), agent_id=agent_id), buffer_size=100)
            try:
                while True:
                    agent = await self.plane.get(agent_id)
                    if has_ended(agent) or (await self.store.get_workflow(run.workflow_id)).status != PAUSED:
                        return
                    if agent.state in (AgentState.EXECUTING, AgentState.WAITING):
                        with contextlib.suppress(GodelError):  # it may end right now: nothing left to pause
                            await self.plane.pause(agent_id, actor="workflow", reason="workflow paused")
                        return
                    if agent.state == AgentState.PAUSED:
                        return
                    await sub.get(timeout=1.0)  # its next move (or a second, to look again)
            finally:
                sub.close()

        task = asyncio.get_running_loop().create_task(hold())
        run.holds.add(task)
        task.add_done_callback(run.holds.discard)

    def _watch(self, run: _Run, wf: Workflow, step_id: str, agent_id: str) -> None:
        async def watch() -> None:
            try:
                agent = await self.plane.wait_for_end(agent_id)
                await self._ended(run, wf, step_id, agent)
            finally:
                run.watchers.pop(step_id, None)
                run.wake.set()

        run.watchers[step_id] = asyncio.get_running_loop().create_task(watch())

    async def _ended(self, run: _Run, wf: Workflow, step_id: str, agent: Agent) -> None:
        current = await self.store.get_workflow(wf.id)
        steps = {s.step_id: s for s in await self.store.workflow_steps(wf.id)}
        row = steps[step_id]
        if row.status != RUNNING or row.agent_id != agent.id:
            return  # cancelled meanwhile, or an older attempt
        step = run.definition.step(step_id)
        output = await self._output(agent)
        result = {**(row.result or {}), "output": output, "branch": agent.branch, "commits": len(agent.commits)}
        if agent.state == AgentState.COMPLETED:
            results = {**(current.results or {}), step_id: {"status": COMPLETED, "output": output,
                                                             "agentId": agent.id, "branch": agent.branch}}  # fmt: skip
            await self._set_step(
                current, step_id, {"status": COMPLETED, "result": result, "completed_at": self.plane.clock.now(),
                                   "error": None},
                "workflow:step:complete", {"agentId": agent.id, "output": output[:2000]},
                workflow_changes={"results": results},
            )  # fmt: skip
            return
        reason = agent.last_error or f"the agent ended {agent.state.value}"
        if agent.state == AgentState.KILLED and current.status == CANCELLED:
            return
        relaunch = int((row.result or {}).get("relaunch", 0))
        if relaunch < MAX_RELAUNCHES and await self._lost_before_start(agent):
            # The server went down while the agent was being set up: the step never ran, so running it now is
            # not running it twice, and it costs none of the step's retries.
            attempt = int((row.result or {}).get("attempt", 1))
            await self._spawn_attempt(run, current, step, steps, attempt=attempt, relaunch=relaunch + 1)
            return
        await self._set_step(current, step_id, {"result": result}, None, {})
        row.result = result
        await self._step_failed(run, current, step, row, reason, retryable=True)

    async def _lost_before_start(self, agent: Agent) -> bool:
        if agent.state != AgentState.FAILED or agent.started_at is not None:
            return False
        history = await self.plane.transitions(agent.id)
        last = history[-1] if history else None
        return bool(
            last
            and last.trigger == "lost"
            and last.from_state in (AgentState.INITIALIZING, AgentState.SPAWNING, AgentState.PENDING)
        )

    async def _step_failed(
        self, run: _Run, wf: Workflow, step: StepDefinition, row: WorkflowStep, reason: str, *, retryable: bool
    ) -> None:
        attempt = int((row.result or {}).get("attempt", 1))
        if retryable and attempt <= step.retries and wf.status not in FINISHED:
            delay = step.backoff.delay(attempt)
            at = self.plane.clock.now() + timedelta(seconds=delay)
            result = {**(row.result or {}), "nextAttemptAt": at.isoformat(), "lastError": reason}
            changes = {"status": StepStatus.RETRYING.value, "result": result, "error": reason}
            payload = {"attempt": attempt, "error": reason, "delay": delay}
            await self._set_step(wf, step.id, changes, "workflow:step:retry", payload)
            return
        results = {**(wf.results or {}), step.id: {"status": FAILED, "error": reason}}
        await self._set_step(
            wf, step.id, {"status": FAILED, "error": reason, "completed_at": self.plane.clock.now()},
            "workflow:step:error", {"error": reason, "attempts": attempt, "onError": step.on_error.value},
            workflow_changes={"results": results},
        )  # fmt: skip
        if step.on_error is not OnError.CONTINUE:
            log.info("workflow step failed", workflow=wf.id, step=step.id, error=reason)

    async def _retry_due(self, run: _Run, wf: Workflow, steps: dict[str, WorkflowStep]) -> float | None:
        """Start the retries whose backoff is over; seconds until the next one is due (0: something changed)."""
        now = self.plane.clock.now()
        soonest: float | None = None
        for sid, row in steps.items():
            if row.status != StepStatus.RETRYING.value:
                continue
            at = datetime.fromisoformat(str((row.result or {}).get("nextAttemptAt") or now.isoformat()))
            wait = (at - now).total_seconds()
            if wait <= 0:
                if wf.status != RUNNING:
                    continue  # paused: the retry waits for the resume
                attempt = int((row.result or {}).get("attempt", 1)) + 1
                await self._spawn_attempt(run, wf, run.definition.step(sid), steps, attempt=attempt)
                return 0.0
            soonest = wait if soonest is None else min(soonest, wait)
        return soonest

    async def _output(self, agent: Agent) -> str:
        result = (agent.outcome or {}).get("result")
        if isinstance(result, str) and result:
            return result
        if agent.kind != "command":
            return ""
        lines = await self.plane.logs(agent.id, tail=OUTPUT_LINES, stream="stdout")
        return "\n".join(str(e.payload.get("line", "")) for e in lines).strip()

    def _context(self, definition: WorkflowDefinition, wf: Workflow, steps: dict[str, WorkflowStep]) -> dict[str, Any]:
        views = {}
        for sid, row in steps.items():
            result = row.result or {}
            views[sid] = step_view(row.status, result.get("output"), error=row.error)
        variables = (wf.context or {}).get("variables") or {}
        return build_context(definition, workflow_id=wf.id, steps=views, variables=variables)

    # ---------------------------------------------------------------------------------------- writing

    async def _set_step(
        self,
        wf: Workflow,
        step_id: str,
        changes: dict[str, Any],
        event_type: str | None,
        payload: dict[str, Any],
        *,
        workflow_changes: dict[str, Any] | None = None,
        expect: str | None = None,
    ) -> bool:
        events = [self._event(wf, event_type, {"stepId": step_id, **payload})] if event_type else []
        return await self.store.update_step(
            wf.id, step_id, changes, events, workflow_changes=workflow_changes, expect=expect
        )

    def _event(self, wf: Workflow, type_: str, payload: dict[str, Any]) -> Event:
        return make_event(type_, {"workflowId": wf.id, **payload}, component="workflow", workflow_id=wf.id,
                          team_id=wf.team_id)  # fmt: skip
