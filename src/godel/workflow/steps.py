"""One step's life: its attempts, the agent of each, and what the step records when that agent ends.

A step's agent carries a label naming the workflow, step, attempt and relaunch (``spawning.agent_label``), all
of them known from the step's row before the agent is created. The step is marked ``running`` together with its
agent's id once the agent exists (one write per start, off the step's critical path: the agent is already queued
for its slot). A restarted engine waits for a running step's agent rather than spawning another; and before it
creates an agent for a step of a run it took over (``Run.resumed``), it looks that label up, so an agent created
just before a crash -- the step still pending or retrying on record -- is adopted, not spawned a second time.
(Rows of earlier versions, marked running before their agent was recorded, are found by the same label.)
A failed attempt is retried after the step's backoff (a new agent per attempt); when the retries are spent, the
step fails and its ``onError`` decides for the run (``godel.workflow.graph``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from godel.agents.roles import load_roles
from godel.core.models import Agent, Workflow, WorkflowStep
from godel.core.ports import AgentQuery
from godel.core.states import AgentState
from godel.errors import GitError, GodelError, WorkflowConditionError, WorkflowTemplateError
from godel.scheduler.plane import ControlPlane
from godel.workflow.combining import CombineConflict, dependency_branches, starting_point
from godel.workflow.context import build_context, step_view
from godel.workflow.definition import OnError, StepDefinition, WorkflowDefinition
from godel.workflow.draining import Drain, task_request
from godel.workflow.graph import StepStatus
from godel.workflow.lifecycle import StepTrigger
from godel.workflow.records import (
    CANCELLED,
    COMPLETED,
    FAILED,
    FINISHED,
    PAUSED,
    RUNNING,
    WorkflowRows,
    move_step,
    set_step,
    step_rows,
)
from godel.workflow.spawning import agent_label, spawn_request

log = structlog.get_logger("godel.workflow")

OUTPUT_LINES = 200  # a command step without GODEL_RESULT: its output is the tail of what it printed
STDERR_LINES, STDERR_BYTES = 20, 2048  # how much of a failed shell step's stderr its error carries
MAX_RELAUNCHES = 3  # a step whose agent was lost before it started is launched again, this many times at most


@dataclass
class Run:
    """The engine's in-memory view of one running workflow; the rows are the truth, this is rebuilt from them."""

    workflow_id: str
    definition: WorkflowDefinition
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    watchers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    # Steps whose start is in flight (its own task: the loop goes on meanwhile); the loop counts them as running.
    starting: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    resumed: bool = False  # taken over after a restart: an agent may exist for a step not yet running on record
    going: asyncio.Event = field(default_factory=asyncio.Event)  # set while the run is running (queue steps wait)


class StepRunner:
    """Starts, watches and records the steps of the runs the engine drives."""

    def __init__(self, plane: ControlPlane, rows: WorkflowRows) -> None:
        self.plane = plane
        self.rows = rows

    async def _set(self, wf: Workflow, step_id: str, changes: dict[str, Any], event_type: str | None,
                   payload: dict[str, Any], **kw: Any) -> bool:  # fmt: skip
        return await set_step(self.rows, wf, step_id, changes, event_type, payload, **kw)

    # ------------------------------------------------------------------------------------------ starting

    async def begin(
        self, run: Run, wf: Workflow, step: StepDefinition, steps: dict[str, WorkflowStep], context: dict[str, Any]
    ) -> bool:
        """Start a ready step: skip it (its ``when`` is false), fail it (its ``when`` or a template cannot be
        evaluated), or spawn its first attempt. True when its agent was spawned and is watched (the plan did not
        change). ``context``: the run's data as ``self.context`` made it from ``steps`` (once for all the steps the
        loop starts)."""
        try:
            if step.condition is not None and not step.condition.evaluate(context, step_id=step.id):
                await move_step(self.rows, wf, step.id, StepTrigger.SKIP, {"completed_at": self.plane.clock.now()},
                                {"when": step.when})  # fmt: skip
                return False
            step.render(context)  # fail now, not at spawn, when a template cannot be filled
        except (WorkflowConditionError, WorkflowTemplateError) as exc:
            await self.step_failed(run, wf, step, steps[step.id], exc.message, retryable=False)
            return False
        if step.queue is not None:
            return await self._start_queue(run, wf, step, steps, context)
        return await self.spawn_attempt(run, wf, step, steps, attempt=1, context=context)

    async def _start_queue(
        self, run: Run, wf: Workflow, step: StepDefinition, steps: dict[str, WorkflowStep], context: dict[str, Any]
    ) -> bool:
        """A queue step: running (no agent of its own; its tasks' agents are in ``result.queue``), then drained."""
        started_at = self.plane.clock.now()
        try:
            base_ref = await self._starting_point(run, wf, step, steps)
        except (CombineConflict, GitError) as exc:
            why = exc.message if isinstance(exc, CombineConflict) else f"cannot combine its dependencies' work: {exc}"
            await self.step_failed(run, wf, step, steps[step.id], why, retryable=False)
            return False
        result = {"attempt": 1, "relaunch": 0, "baseRef": base_ref, "queue": {"tasks": []}}
        started = await move_step(
            self.rows, wf, step.id, StepTrigger.START,
            {"started_at": started_at, "result": result, "retry_count": 0, "agent_id": None},
            {"attempt": 1, "relaunch": 0, "name": step.name, "queue": step.queue.to_dict() if step.queue else None},
            workflow_changes={"current_step_id": step.id},
        )  # fmt: skip
        if started:
            self._drain(run, wf, step, dataclasses.replace(steps[step.id], result=result), context)
        return started

    def _drain(self, run: Run, wf: Workflow, step: StepDefinition, row: WorkflowStep, context: dict[str, Any]) -> None:
        """Work the queue for a running queue step (also one found running after a restart), then record its end."""
        result = dict(row.result or {})
        base = spawn_request(step, step.render(context), wf, base_ref=str(result.get("baseRef") or "HEAD"),
                             roles=load_roles(self.plane.settings.roles), attempt=1, relaunch=0)  # fmt: skip
        drain = Drain(self.plane, self.rows, wf, step, task_request(base, step, wf), run.going, result)

        async def work() -> None:
            try:
                ending = await drain.run()
                if ending.error is None:
                    await move_step(
                        self.rows, wf, step.id, StepTrigger.COMPLETE,
                        {"result": ending.result, "completed_at": self.plane.clock.now(), "error": None},
                        {"output": ending.output[:2000]},
                        step_result={"status": COMPLETED, "output": ending.output},
                    )  # fmt: skip
                    return
                await self._set(wf, step.id, {"result": ending.result}, None, {})
                ended = dataclasses.replace(row, result=ending.result)
                await self.step_failed(run, wf, step, ended, ending.error, retryable=False)
            finally:
                if run.watchers.get(step.id) is task:
                    del run.watchers[step.id]
                run.wake.set()

        task = asyncio.get_running_loop().create_task(work(), name=f"workflow-queue-{step.id}")
        run.watchers[step.id] = task

    async def spawn_attempt(
        self,
        run: Run,
        wf: Workflow,
        step: StepDefinition,
        steps: dict[str, WorkflowStep],
        *,
        attempt: int,
        relaunch: int = 0,
        context: dict[str, Any] | None = None,
    ) -> bool:
        """Create the attempt's agent, then mark the step running with it; True when it runs and is watched."""
        row = steps[step.id]
        started_at = self.plane.clock.now()
        rendered = step.render(context if context is not None else self.context(run.definition, wf, steps))
        result = dict(row.result or {})
        result["attempt"], result["relaunch"] = attempt, relaunch
        result.pop("nextAttemptAt", None)
        try:
            base_ref = await self._starting_point(run, wf, step, steps)
        except (CombineConflict, GitError) as exc:  # retrying would meet the same branches
            why = exc.message if isinstance(exc, CombineConflict) else f"cannot combine its dependencies' work: {exc}"
            await self.step_failed(run, wf, step, row, why, retryable=False)
            return False
        label = agent_label(wf.id, step.id, attempt, relaunch)
        agent = await self._created_before_restart(label) if run.resumed else None
        if agent is None:
            request = spawn_request(step, rendered, wf, base_ref=base_ref,
                                    roles=load_roles(self.plane.settings.roles), attempt=attempt,
                                    relaunch=relaunch)  # fmt: skip
            try:
                agent = await self.plane.spawn(request, actor=f"workflow:{wf.id}")
            except GodelError as exc:
                row = dataclasses.replace(row, result=result)  # this attempt's number decides whether to retry
                await self.step_failed(run, wf, step, row, f"could not spawn its agent: {exc.message}",
                                       retryable=True)  # fmt: skip
                return False
        result["attempts"] = [*result.get("attempts", []), agent.id]
        # One write: running, with its agent. A crash before it leaves the step pending (or retrying) on record with
        # an agent that carries ``label``: the restarted engine adopts that agent instead of spawning another.
        started = await move_step(
            self.rows, wf, step.id, StepTrigger.START,
            {"started_at": started_at, "result": result, "retry_count": attempt - 1, "agent_id": agent.id},
            {"attempt": attempt, "relaunch": relaunch, "name": step.name, "agentId": agent.id},
            workflow_changes={"current_step_id": step.id},
        )  # fmt: skip
        now = await self.rows.workflow_head(wf.id)
        if not started or now.status in FINISHED:  # cancelled while its agent was being created
            with contextlib.suppress(GodelError):
                await self.plane.kill(agent.id, actor="workflow", reason=f"workflow {now.status}")
            return False
        # Paused while the agent was being created: pause found no agent of this step to hold. Now there is one.
        if now.status == PAUSED:  # desired state on the agent: applied when it runs, or the moment it starts
            with contextlib.suppress(GodelError):
                await self.plane.hold(agent.id, by="workflow", reason="workflow paused")
        self._watch(run, wf, step.id, agent.id)
        return True

    async def _created_before_restart(self, label: str) -> Agent | None:
        page = await self.plane.list_agents(AgentQuery(label=label, limit=1))
        return page.items[0] if page.items else None

    async def _starting_point(self, run: Run, wf: Workflow, step: StepDefinition,
                              steps: dict[str, WorkflowStep]) -> str:  # fmt: skip
        """The step's own ``baseRef``, else its dependencies' work combined (``combining``), else the run's base."""
        base = str((wf.context or {}).get("baseRef") or "HEAD")
        if step.base_ref:
            return step.base_ref
        branches = dependency_branches(run.definition, step, steps)
        repo = Path(step.repo or (wf.context or {}).get("repo") or ".")
        return await starting_point(repo, base, branches, for_step=step.id)

    async def retry_due(self, run: Run, wf: Workflow, steps: dict[str, WorkflowStep]) -> float | None:
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
                await self.spawn_attempt(run, wf, run.definition.step(sid), steps, attempt=attempt)
                return 0.0
            soonest = wait if soonest is None else min(soonest, wait)
        return soonest

    # ------------------------------------------------------------------------------------------ watching

    def watch_running(self, run: Run, wf: Workflow, steps: dict[str, WorkflowStep]) -> None:
        """Every running step has a watcher (after a restart, new ones are made for the steps found running)."""
        for sid, row in steps.items():
            if row.status != RUNNING or sid in run.watchers or sid in run.starting:
                continue
            step = run.definition.step(sid)
            if step.queue is not None:  # a queue step carries on: its running attempts are waited for first
                self._drain(run, wf, step, row, self.context(run.definition, wf, steps))
            elif row.agent_id is not None:
                self._watch(run, wf, sid, row.agent_id)
            else:  # the crash came between marking it running and recording its agent
                attempt, relaunch = (
                    int((row.result or {}).get("attempt", 1)),
                    int((row.result or {}).get("relaunch", 0)),
                )
                adopt = self._adopt(run, wf, sid, attempt, relaunch)
                run.watchers[sid] = asyncio.get_running_loop().create_task(adopt, name=f"workflow-adopt-{sid}")

    async def _adopt(self, run: Run, wf: Workflow, step_id: str, attempt: int, relaunch: int) -> None:
        label = agent_label(wf.id, step_id, attempt, relaunch)
        page = await self.plane.list_agents(AgentQuery(label=label, limit=1))
        run.watchers.pop(step_id, None)
        step = run.definition.step(step_id)
        steps = await step_rows(self.rows, wf.id)
        if page.items:
            agent = page.items[0]
            result = dict(steps[step_id].result or {})
            result["attempts"] = [*result.get("attempts", []), agent.id]
            await self._set(wf, step_id, {"agent_id": agent.id, "result": result}, None, {})
            self._watch(run, wf, step_id, agent.id)
        else:
            await self.spawn_attempt(run, wf, step, steps, attempt=attempt, relaunch=relaunch)

    def _watch(self, run: Run, wf: Workflow, step_id: str, agent_id: str) -> None:
        async def watch() -> None:
            try:
                agent = await self.plane.wait_for_end(agent_id)
                await self._ended(run, wf, step_id, agent)
            finally:
                if run.watchers.get(step_id) is task:  # a relaunch from _ended has its own watcher by now
                    del run.watchers[step_id]
                run.wake.set()

        task = asyncio.get_running_loop().create_task(watch(), name=f"workflow-watch-{step_id}")
        run.watchers[step_id] = task

    # ------------------------------------------------------------------------------------------ ending

    async def _ended(self, run: Run, wf: Workflow, step_id: str, agent: Agent) -> None:
        # This step's row only: the rest of the run is read when a failure needs it (a relaunch's context).
        row = await self.rows.workflow_step(wf.id, step_id)
        if row.status != RUNNING or row.agent_id != agent.id:
            return  # cancelled meanwhile, or an older attempt
        step = run.definition.step(step_id)
        output = await self._output(agent)
        # Where the branch ended: dependents whose dependencies all ended at one commit start there without git.
        head = agent.commits[-1] if agent.commits else agent.base_commit
        result = {**(row.result or {}), "output": output, "branch": agent.branch, "commits": len(agent.commits),
                  "head": head}  # fmt: skip
        if agent.state == AgentState.COMPLETED:
            await move_step(
                self.rows, wf, step_id, StepTrigger.COMPLETE,
                {"result": result, "completed_at": self.plane.clock.now(), "error": None},
                {"agentId": agent.id, "output": output[:2000]},
                step_result={"status": COMPLETED, "output": output, "agentId": agent.id, "branch": agent.branch},
            )  # fmt: skip
            return
        current = await self.rows.workflow_head(wf.id)
        reason = agent.last_error or f"the agent ended {agent.state.value}"
        if agent.state == AgentState.KILLED and current.status == CANCELLED:
            return
        relaunch = int((row.result or {}).get("relaunch", 0))
        if relaunch < MAX_RELAUNCHES and await self._lost_before_start(agent):
            # The server went down while the agent was being set up: the step never ran, so running it now is
            # not running it twice, and it costs none of the step's retries.
            attempt = int((row.result or {}).get("attempt", 1))
            steps = await step_rows(self.rows, wf.id)
            await self.spawn_attempt(run, current, step, steps, attempt=attempt, relaunch=relaunch + 1)
            return
        stderr = await self._stderr_tail(agent)
        if stderr:  # the cause is usually there, not in the exit status
            reason = f"{reason}; the end of its stderr:\n{stderr}"
        await self._set(current, step_id, {"result": result}, None, {})
        row.result = result
        await self.step_failed(run, current, step, row, reason, retryable=True)

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

    async def step_failed(
        self, run: Run, wf: Workflow, step: StepDefinition, row: WorkflowStep, reason: str, *, retryable: bool
    ) -> None:
        attempt = int((row.result or {}).get("attempt", 1))
        if retryable and attempt <= step.retries and wf.status not in FINISHED:
            delay = step.backoff.delay(attempt)
            at = self.plane.clock.now() + timedelta(seconds=delay)
            result = {**(row.result or {}), "nextAttemptAt": at.isoformat(), "lastError": reason}
            changes = {"result": result, "error": reason}
            payload = {"attempt": attempt, "error": reason, "delay": delay}
            await move_step(self.rows, wf, step.id, StepTrigger.RETRY, changes, payload)
            return
        await move_step(
            self.rows, wf, step.id, StepTrigger.FAIL, {"error": reason, "completed_at": self.plane.clock.now()},
            {"error": reason, "attempts": attempt, "onError": step.on_error.value},
            step_result={"status": FAILED, "error": reason},
        )  # fmt: skip
        if step.on_error is not OnError.CONTINUE:
            log.info("workflow step failed", workflow=wf.id, step=step.id, error=reason)

    async def _output(self, agent: Agent) -> str:
        result = (agent.outcome or {}).get("result")
        if isinstance(result, str) and result:
            return result
        if agent.kind != "command":
            return ""
        if not (agent.log_offsets or {}).get("stdout") and agent.retry_count == 0:
            return ""  # its one run printed nothing on stdout: no lines to look up
        lines = await self.plane.logs(agent.id, tail=OUTPUT_LINES, stream="stdout")
        return "\n".join(str(e.payload.get("line", "")) for e in lines).strip()

    async def _stderr_tail(self, agent: Agent) -> str:
        """The last lines a shell step wrote to stderr, bounded (``STDERR_LINES``, ``STDERR_BYTES``): they go into
        the step's ``error``, which templates, events and tables carry. Other agents' stderr is CLI chatter."""
        if agent.kind != "command":
            return ""
        lines = await self.plane.logs(agent.id, tail=STDERR_LINES, stream="stderr")
        text = "\n".join(str(e.payload.get("line", "")) for e in lines).strip("\n")
        raw = text.encode()
        if len(raw) <= STDERR_BYTES:
            return text
        return "…" + raw[-STDERR_BYTES:].decode("utf-8", errors="ignore")  # the end is where the cause is

    def context(self, definition: WorkflowDefinition, wf: Workflow, steps: dict[str, WorkflowStep]) -> dict[str, Any]:
        views = {}
        for sid, row in steps.items():
            result = row.result or {}
            views[sid] = step_view(row.status, result.get("output"), error=row.error)
        variables = (wf.context or {}).get("variables") or {}
        return build_context(definition, workflow_id=wf.id, steps=views, variables=variables)
