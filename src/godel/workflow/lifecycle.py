"""The workflow run's state machine as one table (a ``core.machine.Machine``).

    pending ──start──▶ running ◀──resume── paused
                          └──────pause──────▶┘
    running/paused ──complete──▶ completed     running/paused ──fail──▶ failed
    pending/running/paused ──cancel──▶ cancelled

A step has its own table (``STEPS``, statuses in ``graph.StepStatus``):

    pending ──skip──▶ skipped            pending/retrying/running ──start──▶ running (running: a relaunch)
    running ──complete──▶ completed      pending/retrying/running ──retry──▶ retrying (waiting out its backoff;
                                         from pending or retrying: its agent could not be created)
    pending/running/retrying ──fail──▶ failed        pending/running/retrying ──cancel──▶ cancelled

The engine plans each move on the run it read (a 409 naming the status when it is illegal) and the store writes it
guarded by the same table (``sources``), in one transaction with the move's event, so a move that raced another
is refused too. A run is deleted only while it is pending or finished (``DELETABLE``).
"""

from __future__ import annotations

from enum import StrEnum

from godel.core.machine import Machine
from godel.errors import ConflictError
from godel.workflow.graph import StepStatus


class WorkflowStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class WorkflowTrigger(StrEnum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    COMPLETE = "complete"
    FAIL = "fail"
    CANCEL = "cancel"


S, T = WorkflowStatus, WorkflowTrigger
TABLE: dict[tuple[WorkflowStatus, WorkflowTrigger], WorkflowStatus] = {
    (S.PENDING, T.START): S.RUNNING,
    (S.RUNNING, T.PAUSE): S.PAUSED,
    (S.PAUSED, T.RESUME): S.RUNNING,
    **{(s, T.COMPLETE): S.COMPLETED for s in (S.RUNNING, S.PAUSED)},
    **{(s, T.FAIL): S.FAILED for s in (S.RUNNING, S.PAUSED)},
    **{(s, T.CANCEL): S.CANCELLED for s in (S.PENDING, S.RUNNING, S.PAUSED)},
}
FINISHED = (S.COMPLETED, S.FAILED, S.CANCELLED)
DELETABLE = (S.PENDING, *FINISHED)


def _refuse(workflow_id: str, current: str, trigger: str) -> ConflictError:
    return ConflictError(
        f"cannot {trigger} workflow {workflow_id}: it is {current}",
        details={"workflowId": workflow_id, "currentStatus": current, "trigger": trigger},
    )


WORKFLOWS: Machine[WorkflowStatus, WorkflowTrigger] = Machine(
    "workflow", TABLE, refuse=_refuse, event=lambda _f, _t, trigger: f"workflow:{trigger}"
)


class StepTrigger(StrEnum):
    SKIP = "skip"
    START = "start"
    COMPLETE = "complete"
    RETRY = "retry"
    FAIL = "fail"
    CANCEL = "cancel"


_S = StepStatus
_OPEN_STEP = (_S.PENDING, _S.RUNNING, _S.RETRYING)
STEP_TABLE: dict[tuple[StepStatus, StepTrigger], StepStatus] = {
    (_S.PENDING, StepTrigger.SKIP): _S.SKIPPED,
    **{(s, StepTrigger.START): _S.RUNNING for s in _OPEN_STEP},
    (_S.RUNNING, StepTrigger.COMPLETE): _S.COMPLETED,
    **{(s, StepTrigger.RETRY): _S.RETRYING for s in _OPEN_STEP},
    **{(s, StepTrigger.FAIL): _S.FAILED for s in _OPEN_STEP},
    **{(s, StepTrigger.CANCEL): _S.CANCELLED for s in _OPEN_STEP},
}
_STEP_EVENTS = {StepTrigger.FAIL: "workflow:step:error"}


def _refuse_step(step: str, current: str, trigger: str) -> ConflictError:
    return ConflictError(
        f"cannot {trigger} step {step}: it is {current}", details={"step": step, "currentStatus": current}
    )


STEPS: Machine[StepStatus, StepTrigger] = Machine(
    "workflow", STEP_TABLE, refuse=_refuse_step,
    event=lambda _from, _to, trigger: _STEP_EVENTS.get(trigger, f"workflow:step:{trigger}"),
)  # fmt: skip
