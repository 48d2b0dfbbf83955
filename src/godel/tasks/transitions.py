"""The task state machine as one table.

    pending ──assign/claim──▶ assigned ──complete──▶ completed
       ▲                        │  │
       └──fail (attempts left)──┘  └──fail (no attempts left)──▶ dead ──retry──▶ pending
    pending/assigned ──cancel──▶ failed ──retry──▶ pending          (and fail with retry=false ──▶ failed)

``start`` keeps an assigned task assigned and records when its attempt began. ``release`` puts back a task
taken for an agent that was then never made (``tasks.spawning``): no attempt ran, so none is counted.
A task assigned to a team (no agent yet) may be assigned on to one of its agents. ``delete`` is allowed in
every status but ``assigned`` (someone is working on it; delete with force, or fail/cancel it first).
"""

from __future__ import annotations

from enum import StrEnum

from godel.core.machine import Machine
from godel.core.models import Task
from godel.core.states import TaskStatus as S
from godel.errors import TaskTransitionError


class TaskTrigger(StrEnum):
    ASSIGN = "assign"
    CLAIM = "claim"
    START = "start"
    COMPLETE = "complete"
    FAIL = "fail"
    RETRY = "retry"
    CANCEL = "cancel"
    DELETE = "delete"
    RELEASE = "release"


TABLE: dict[tuple[S, TaskTrigger], frozenset[S]] = {
    (S.PENDING, TaskTrigger.ASSIGN): frozenset({S.ASSIGNED}),
    (S.ASSIGNED, TaskTrigger.ASSIGN): frozenset({S.ASSIGNED}),  # only team → one of its agents (see check)
    (S.PENDING, TaskTrigger.CLAIM): frozenset({S.ASSIGNED}),
    (S.ASSIGNED, TaskTrigger.START): frozenset({S.ASSIGNED}),
    (S.ASSIGNED, TaskTrigger.COMPLETE): frozenset({S.COMPLETED}),
    (S.ASSIGNED, TaskTrigger.FAIL): frozenset({S.PENDING, S.DEAD, S.FAILED}),
    (S.ASSIGNED, TaskTrigger.RELEASE): frozenset({S.PENDING}),
    (S.DEAD, TaskTrigger.RETRY): frozenset({S.PENDING}),
    (S.FAILED, TaskTrigger.RETRY): frozenset({S.PENDING}),
    (S.PENDING, TaskTrigger.CANCEL): frozenset({S.FAILED}),
    (S.ASSIGNED, TaskTrigger.CANCEL): frozenset({S.FAILED}),
    **{(s, TaskTrigger.DELETE): frozenset() for s in S if s != S.ASSIGNED},
}


def _event(from_state: S, to_state: S, trigger: TaskTrigger) -> str:
    if trigger == TaskTrigger.FAIL:
        return "task:dead" if to_state == S.DEAD else "task:failed"
    return _EVENTS[trigger]


_EVENTS = {
    TaskTrigger.ASSIGN: "task:assigned",
    TaskTrigger.CLAIM: "task:assigned",
    TaskTrigger.START: "task:started",
    TaskTrigger.COMPLETE: "task:completed",
    TaskTrigger.RETRY: "task:requeued",
    TaskTrigger.CANCEL: "task:cancelled",
    TaskTrigger.DELETE: "task:deleted",
    TaskTrigger.RELEASE: "task:released",
}

TASKS: Machine[S, TaskTrigger] = Machine("task", TABLE, refuse=TaskTransitionError, event=_event)


def can(status: S, trigger: TaskTrigger) -> bool:
    return TASKS.can(status, trigger)


def check(task: Task, trigger: TaskTrigger, to: S | None = None) -> None:
    """Raise ``TaskTransitionError`` (409, names the current status) unless the move is in the table."""
    if to is None:
        TASKS.check(task.id, task.status, trigger)
    else:
        TASKS.plan(task.id, task.status, trigger, to)
