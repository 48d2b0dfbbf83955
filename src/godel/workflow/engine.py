"""Running workflows: each step becomes an agent, every move is persisted, and a restart carries on.

A run is a row in ``workflows`` and one row per step in ``workflow_steps``. One asyncio task per running workflow
(``Run``) looks at the step rows, asks the definition which steps may start (``WorkflowDefinition.progress``:
dependencies finished, ``maxConcurrency`` respected) and hands each to the ``StepRunner`` (``steps.py``), which
evaluates its ``when``, spawns its agent and records the outcome. When a step fails for good, ``onError``
decides: ``fail`` fails the workflow (nothing new starts; running steps finish), ``continue`` lets dependents run.

Steps run exactly once across a crash (see ``steps.py``); completed steps are never run again, and the agents
themselves survive a restart of the server (the control plane adopts them).

Events (spec §2.2): ``workflow:start``, ``workflow:step:start``, ``workflow:step:complete``, ``workflow:step:error``,
``workflow:complete``, ``workflow:cancel``, and ``workflow:step:skip``, ``workflow:step:retry``,
``workflow:step:cancel``, ``workflow:fail``, ``workflow:pause``, ``workflow:resume``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import structlog

from godel.core.ids import new_id
from godel.core.models import Workflow, WorkflowStep
from godel.core.ports import Page
from godel.errors import GodelError
from godel.scheduler.plane import ControlPlane
from godel.workflow.definition import StepDefinition, WorkflowDefinition
from godel.workflow.graph import TERMINAL, StepStatus
from godel.workflow.lifecycle import DELETABLE, WORKFLOWS, StepTrigger, WorkflowStatus, WorkflowTrigger
from godel.workflow.parsing import parse_workflow
from godel.workflow.records import (
    COMPLETED,
    FAILED,
    FINISHED,
    PAUSED,
    PENDING,
    RUNNING,
    WorkflowRows,
    move_step,
    step_agents,
    step_rows,
    workflow_event,
)
from godel.workflow.roles import configured_roles
from godel.workflow.steps import Run, StepRunner

log = structlog.get_logger("godel.workflow")


class WorkflowEngine:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.store: WorkflowRows = plane.store  # the SQL store's workflow methods, checked by mypy against the port
        self.steps = StepRunner(plane, self.store)
        self._runs: dict[str, Run] = {}
        self._stopping = False

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Pick up every workflow that was running (or paused) when the server stopped."""
        page = await self.store.list_workflows(statuses=(RUNNING, PAUSED), limit=10_000)
        for wf in page.items:
            self._launch(wf.id, parse_workflow(wf.definition, filename=f"workflow {wf.id}"), resumed=True)
        if page.items:
            log.info("workflows resumed", count=len(page.items))

    async def stop(self) -> None:
        """Stop driving the runs; their rows and agents stay as they are, for the next start to carry on."""
        self._stopping = True
        runs = list(self._runs.values())
        for run in runs:
            for watcher in [*run.watchers.values(), *run.starting.values()]:
                watcher.cancel()
            if run.task is not None:
                run.task.cancel()
        for run in runs:
            for task in [*run.watchers.values(), *run.starting.values(), run.task]:
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
        # Checked again with the roles this server knows, by the checker `godel workflow validate` runs: what one
        # refuses, the other does too.
        parse_workflow(definition.to_dict(), filename=definition.name, roles=configured_roles(self.plane.settings))
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
        created = workflow_event(wf, "workflow:created", {"name": wf.name, "steps": len(steps), "repo": repo})
        await self.store.create_workflow(wf, steps, [created])
        if start:
            return await self.start_workflow(workflow_id)
        return wf

    async def start_workflow(self, workflow_id: str) -> Workflow:
        wf = await self.store.get_workflow(workflow_id)
        move = WORKFLOWS.plan(wf.id, WorkflowStatus(wf.status), WorkflowTrigger.START)
        started = workflow_event(wf, move.event, {"name": wf.name})
        wf = await self.store.update_workflow(
            workflow_id, {"status": move.to_state.value, "started_at": self.plane.clock.now()}, [started],
            expect=WORKFLOWS.sources(move.trigger),
        )  # fmt: skip
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
        move = WORKFLOWS.plan(wf.id, WorkflowStatus(wf.status), WorkflowTrigger.CANCEL)
        # The run and its unfinished steps end in one transaction; their agents are stopped after.
        wf, stopped = await self.store.cancel_workflow(
            workflow_id, {"status": move.to_state.value, "completed_at": self.plane.clock.now()},
            [workflow_event(wf, move.event, {"reason": reason})],
            lambda step: workflow_event(wf, "workflow:step:cancel", {"stepId": step.step_id, "reason": reason}),
            expect=WORKFLOWS.sources(move.trigger), finished=tuple(str(s) for s in TERMINAL),
        )  # fmt: skip
        run = self._runs.get(workflow_id)
        if run is not None:
            run.wake.set()  # the run notices the status, stops its watchers and winds down
        for step in stopped:
            for agent_id in step_agents(step) if step.status == RUNNING else []:
                with contextlib.suppress(GodelError):  # it may have ended meanwhile
                    await self.plane.kill(agent_id, actor="workflow", reason=f"workflow {reason}")
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
        event = workflow_event(wf, "workflow:update", {"fields": sorted(changes)})
        return await self.store.update_workflow(workflow_id, changes, [event], expect=expect)

    async def delete(self, workflow_id: str, *, force: bool = False) -> None:
        """Delete a run that is not going (``force``: cancel a going one first). Its events stay in the log."""
        wf = await self.store.get_workflow(workflow_id)
        if force and wf.status not in FINISHED:
            wf = await self.cancel(workflow_id, reason="deleted")
        event = workflow_event(wf, "workflow:delete", {"name": wf.name})
        await self.store.delete_workflow(workflow_id, [event], expect=DELETABLE)

    async def pause(self, workflow_id: str) -> Workflow:
        wf = await self._move(workflow_id, WorkflowTrigger.PAUSE)
        run = self._runs.get(workflow_id)
        if run is not None:
            run.going.clear()  # queue steps take no new task
        for step in await self.store.workflow_steps(workflow_id):
            for agent_id in step_agents(step) if step.status == RUNNING else []:
                with contextlib.suppress(GodelError):  # deleted meanwhile
                    await self.plane.hold(agent_id, by="workflow", reason="workflow paused")
        return wf

    async def resume(self, workflow_id: str) -> Workflow:
        wf = await self._move(workflow_id, WorkflowTrigger.RESUME)
        for step in await self.store.workflow_steps(workflow_id):
            for agent_id in step_agents(step) if step.status == RUNNING else []:
                with contextlib.suppress(GodelError):  # deleted meanwhile
                    await self.plane.release(agent_id, by="workflow", reason="workflow resumed")
        run = self._runs.get(workflow_id)
        if run is not None:
            run.wake.set()
        else:
            self._launch(workflow_id, parse_workflow(wf.definition), resumed=True)  # not driven here yet
        return wf

    # ----------------------------------------------------------------------------------------- the run

    def _launch(self, workflow_id: str, definition: WorkflowDefinition, *, resumed: bool = False) -> None:
        if workflow_id in self._runs or self._stopping:
            return
        run = Run(workflow_id, definition, resumed=resumed)
        self._runs[workflow_id] = run
        run.task = asyncio.get_running_loop().create_task(self._drive(run), name=f"workflow-{workflow_id}")

    async def _drive(self, run: Run) -> None:
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

    async def _loop(self, run: Run) -> None:
        definition = run.definition
        while True:
            run.wake.clear()
            wf = await self.store.workflow_head(run.workflow_id)  # without the definition (run.definition holds it)
            if wf.status == RUNNING:
                run.going.set()
            else:
                run.going.clear()
            if wf.status in FINISHED:
                # A start still in flight either gives up (it sees the run finished) or registers its watcher:
                # let it settle first, so no watcher is made after the others were stopped.
                await asyncio.gather(*run.starting.values(), return_exceptions=True)
                watchers = list(run.watchers.values())
                for watcher in watchers:
                    watcher.cancel()
                await asyncio.gather(*watchers, return_exceptions=True)
                return
            # A start that ended before this read is in the rows read; one that did not may not be yet: it stays
            # ``starting`` (running, as far as the plan goes) until a read that surely sees what it wrote.
            seen = [sid for sid, task in run.starting.items() if task.done()]
            steps = await step_rows(self.store, run.workflow_id)
            for sid in seen:
                del run.starting[sid]
            self.steps.watch_running(run, wf, steps)
            statuses = {sid: s.status for sid, s in steps.items()}
            for sid in run.starting:
                if statuses[sid] == StepStatus.PENDING.value:
                    statuses[sid] = StepStatus.RUNNING.value
            progress = definition.progress(statuses)
            for sid in progress.blocked:
                reason = "a step it depends on was cancelled"
                await move_step(self.store, wf, sid, StepTrigger.CANCEL, {}, {"reason": reason})
            if progress.fatal:  # nothing new starts: a step waiting out its backoff will not get its next try
                waiting = [sid for sid, row in steps.items() if row.status == StepStatus.RETRYING.value]
                for sid in waiting:
                    reason = f"step {', '.join(progress.fatal)} failed"
                    await move_step(self.store, wf, sid, StepTrigger.CANCEL,
                                    {"completed_at": self.plane.clock.now()}, {"reason": reason})  # fmt: skip
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
            if wf.status == RUNNING and not progress.fatal and progress.ready:
                # Each start in its own task: a spawn is mostly waiting (git, the store), a wide level should not
                # queue, and a step made ready meanwhile must not wait for a whole level's spawns to end. Each
                # start wakes the loop when it is done (a skipped step may make others ready).
                context = self.steps.context(definition, wf, steps)  # once for all of them
                for sid in progress.ready:
                    self._begin(run, wf, definition.step(sid), steps, context)
            if progress.blocked:
                continue  # look again at once: the cancelled steps' dependents are blocked too
            due = await self.steps.retry_due(run, wf, steps)
            if due == 0.0:
                continue
            wait = min(x for x in (due, left, 60.0) if x is not None)  # wake for a retry, or the run's deadline
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.wake.wait(), timeout=max(wait, 0.01))

    def _begin(
        self, run: Run, wf: Workflow, step: StepDefinition, steps: dict[str, WorkflowStep], context: dict[str, Any]
    ) -> None:
        async def begin() -> None:
            try:
                watched = await self.steps.begin(run, wf, step, steps, context)
            except Exception as exc:  # the others go on; the loop looks at this one again
                log.error("a workflow step could not start", workflow=wf.id, step=step.id, error=repr(exc))
                watched = False
            if not watched:  # skipped, failed, or not started: the plan may have changed
                run.wake.set()

        # Registered before the task runs, and left to the loop to remove (see ``_loop``): never started twice.
        run.starting[step.id] = asyncio.get_running_loop().create_task(begin(), name=f"workflow-start-{step.id}")

    def _time_left(self, wf: Workflow, definition: WorkflowDefinition) -> float | None:
        """Seconds until the run's ``timeout`` (None: it has none)."""
        if definition.timeout is None or wf.started_at is None:
            return None
        return definition.timeout - (self.plane.clock.now() - wf.started_at).total_seconds()

    async def _move(self, workflow_id: str, trigger: WorkflowTrigger) -> Workflow:
        """A move of the run that changes only its status: planned on the row read, written guarded by the table."""
        wf = await self.store.get_workflow(workflow_id)
        move = WORKFLOWS.plan(wf.id, WorkflowStatus(wf.status), trigger)
        return await self.store.update_workflow(
            workflow_id, {"status": move.to_state.value}, [workflow_event(wf, move.event, {})],
            expect=WORKFLOWS.sources(trigger),
        )  # fmt: skip

    async def _finish(self, run: Run, status: str, reason: str | None) -> None:
        wf = await self.store.get_workflow(run.workflow_id)
        if wf.status in FINISHED:
            return
        for step in await self.store.workflow_steps(run.workflow_id):
            if step.status not in TERMINAL and step.status != RUNNING:
                await move_step(self.store, wf, step.step_id, StepTrigger.CANCEL, {},
                                {"reason": reason or "the workflow ended"})  # fmt: skip
        trigger = WorkflowTrigger.COMPLETE if status == COMPLETED else WorkflowTrigger.FAIL
        move = WORKFLOWS.plan(wf.id, WorkflowStatus(wf.status), trigger)
        event = workflow_event(wf, move.event, {"status": status, "reason": reason})
        await self.store.update_workflow(
            run.workflow_id, {"status": move.to_state.value, "completed_at": self.plane.clock.now(),
                              "current_step_id": None},
            [event], expect=WORKFLOWS.sources(trigger),
        )  # fmt: skip
