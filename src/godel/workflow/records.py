"""What the engine writes: the store methods it needs, the status words it writes, and its events.

Every move of a run or a step is one store call that commits the row change with its event, so a watcher of
the event log never sees a move the rows do not hold (and the reverse).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog

from godel.core.events import Event, make_event
from godel.core.models import Workflow, WorkflowStep
from godel.core.ports import Page
from godel.core.urgency import urgent
from godel.workflow.lifecycle import FINISHED as FINISHED
from godel.workflow.lifecycle import STEPS, StepTrigger, WorkflowStatus

# The run's statuses (its machine is in ``lifecycle``), by the short names the engine has always used.
log = structlog.get_logger("godel.workflow")

PENDING, RUNNING, PAUSED = WorkflowStatus.PENDING, WorkflowStatus.RUNNING, WorkflowStatus.PAUSED
COMPLETED, FAILED, CANCELLED = WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED

# The moves that end a step on its own account (a cancel comes from the run's end, which writes it anyway).
ENDS = frozenset({StepTrigger.COMPLETE, StepTrigger.FAIL, StepTrigger.SKIP})


class WorkflowRows(Protocol):
    """The store methods the engine uses (``SqlStore`` has them: ``store.workflows``)."""

    async def create_workflow(
        self, workflow: Workflow, steps: Sequence[WorkflowStep], events: Sequence[Event] = ()
    ) -> Workflow: ...
    async def get_workflow(self, workflow_id: str) -> Workflow: ...
    async def workflow_head(self, workflow_id: str) -> Workflow: ...
    async def list_workflows(
        self, *, statuses: Sequence[str] = (), limit: int = 50, cursor: str | None = None
    ) -> Page[Workflow]: ...
    async def workflow_steps(self, workflow_id: str) -> list[WorkflowStep]: ...
    async def workflow_step(self, workflow_id: str, step_id: str) -> WorkflowStep: ...
    async def update_workflow(
        self, workflow_id: str, changes: dict[str, Any], events: Sequence[Event] = (), *, expect: Sequence[str] = ()
    ) -> Workflow: ...
    async def update_step(
        self, workflow_id: str, step_id: str, changes: dict[str, Any], events: Sequence[Event] = (), *,
        workflow_changes: dict[str, Any] | None = None, step_result: dict[str, Any] | None = None,
        expect: str | Sequence[str] | None = None,
    ) -> bool: ...  # fmt: skip
    async def delete_workflow(
        self, workflow_id: str, events: Sequence[Event] = (), *, expect: Sequence[str] = ()
    ) -> None: ...
    async def cancel_workflow(
        self, workflow_id: str, changes: dict[str, Any], events: Sequence[Event],
        step_event: Callable[[WorkflowStep], Event], *, expect: Sequence[str], finished: Sequence[str],
    ) -> tuple[Workflow, list[WorkflowStep]]: ...  # fmt: skip


def workflow_event(wf: Workflow, type_: str, payload: dict[str, Any]) -> Event:
    return make_event(type_, {"workflowId": wf.id, **payload}, component="workflow", workflow_id=wf.id,
                      team_id=wf.team_id)  # fmt: skip


async def set_step(
    rows: WorkflowRows,
    wf: Workflow,
    step_id: str,
    changes: dict[str, Any],
    event_type: str | None,
    payload: dict[str, Any],
    *,
    workflow_changes: dict[str, Any] | None = None,
    step_result: dict[str, Any] | None = None,
    expect: str | Sequence[str] | None = None,
) -> bool:
    """Change one step's row (and, in the same transaction, the run's: ``workflow_changes``, and ``step_result``,
    the step's entry in the run's ``results``) with the event that tells of it."""
    events = [workflow_event(wf, event_type, {"stepId": step_id, **payload})] if event_type else []
    return await rows.update_step(wf.id, step_id, changes, events, workflow_changes=workflow_changes,
                                  step_result=step_result, expect=expect)  # fmt: skip


def step_agents(step: WorkflowStep) -> list[str]:
    """The agents a running step has at work: its own, and for a queue step those of its tasks' running attempts."""
    tasks = ((step.result or {}).get("queue") or {}).get("tasks") or []
    running = [str(e["agentId"]) for e in tasks if e.get("status") == "running" and e.get("agentId")]
    return [step.agent_id, *running] if step.agent_id else running


async def step_rows(rows: WorkflowRows, workflow_id: str) -> dict[str, WorkflowStep]:
    """A run's step rows by step id."""
    return {s.step_id: s for s in await rows.workflow_steps(workflow_id)}


async def move_step(
    rows: WorkflowRows,
    wf: Workflow,
    step_id: str,
    trigger: StepTrigger,
    changes: dict[str, Any],
    payload: dict[str, Any],
    *,
    workflow_changes: dict[str, Any] | None = None,
    step_result: dict[str, Any] | None = None,
) -> bool:
    """A step's move through its table (``lifecycle.STEPS``): the new status and the move's event, written only
    while the step is in a status the move is legal from. False (and a warning) when it is not: the step moved
    meanwhile (a cancel won), and this move no longer applies."""
    sources = STEPS.sources(trigger)
    target = STEPS.targets(sources[0], trigger)
    (status,) = target
    event = STEPS.plan(step_id, sources[0], trigger).event
    # A step's end goes before queued ordinary writes: the steps that depend on it start once it is written.
    with urgent() if trigger in ENDS else contextlib.nullcontext():
        done = await set_step(rows, wf, step_id, {**changes, "status": status.value}, event, payload,
                              workflow_changes=workflow_changes, step_result=step_result,
                              expect=[s.value for s in sources])  # fmt: skip
    if not done:
        log.warning("step move refused: the step moved meanwhile", workflow=wf.id, step=step_id, move=trigger.value)
    return done
