"""Working a queued task: an agent made for it, the task held from the first moment.

``spawn_for(queue, task_id, make, discard)`` goes in three steps, each one store transaction:

1. *take*: the task goes pending → assigned, held by nobody yet, its new attempt marked ``spawning``. A task
   that is not pending (claimed, assigned, ended) or is reserved for an agent or a team is refused (409) and
   nothing is made: of two callers racing for one task, exactly one takes it.
2. *make* the agent (the caller's spawn, which knows nothing of the queue). When the spawn is refused (a bad
   request, an unreadable repository) the task is *released*: back to pending, the attempt closed as
   ``released`` and not counted as a failure.
3. *hand on*: the task is given to the agent, guarded by the attempt taken in 1. From then on the follower
   (``tasks.following``) completes or fails the task with the agent's outcome, as for any assigned task. If the
   task was moved meanwhile (cancelled, or released by a sweep), the agent is discarded and the call is a 409.

A team working the queue claims by priority instead of taking one task by id, then hands on the same way
(``hand_on``). A crash between 1 and 3 leaves a task held by nobody with a ``spawning`` attempt: the follower's
sweep at start releases every such task that no spawn of this process is working on (``Spawner.spawning``), so
the task is taken again rather than lost. If its agent had been made before the crash, that agent runs on
unattached (its ``metadata.taskId`` names the task): the task may be worked twice, never lost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol

from godel.core.models import Agent, Task
from godel.core.ports import Clock
from godel.core.states import TaskStatus
from godel.errors import GodelError, TaskTransitionError
from godel.store.tasks import TaskChange
from godel.tasks import history as h
from godel.tasks.ports import TaskStorePort
from godel.tasks.transitions import TaskTrigger, check

TASK_KEY = "taskId"  # the key in an agent's metadata that names the task it was made for


class Spawner(Protocol):
    """What working a task needs of the queue (``TaskQueue`` has it)."""

    store: TaskStorePort
    clock: Clock
    spawning: set[str]  # ids of the tasks this process is making an agent for right now

    async def settled(self, task: Task) -> Task: ...


Make = Callable[[Task], Awaitable[Agent]]
Discard = Callable[[Agent, str], Awaitable[None]]


def task_text(task: Task) -> str:
    """What an agent made for a task is asked to do: the title, and the description when there is one."""
    return f"{task.title}\n\n{task.description}" if task.description.strip() else task.title


async def spawn_for(
    queue: Spawner, task_id: str, make: Make, discard: Discard, *, actor: str = "api"
) -> tuple[Task, Agent]:
    """Take the task, make its agent, hand the task on to it; returns both (the task as handed on)."""
    queue.spawning.add(task_id)
    try:
        taken = await take(queue, task_id, actor=actor)
        attempt = _attempt_of(taken)
        try:
            agent = await make(taken)
        except BaseException:
            with contextlib.suppress(GodelError):  # already moved (a sweep, a cancel): the spawn's own error matters
                await release(queue, task_id, attempt, "the agent could not be spawned", actor=actor)
            raise
        try:
            task = await hand_on(queue, task_id, agent.id, attempt, actor=actor)
        except TaskTransitionError:
            await discard(agent, f"task {task_id} was moved while its agent was being spawned")
            raise
    finally:
        queue.spawning.discard(task_id)
    return task, agent


async def take(queue: Spawner, task_id: str, *, actor: str) -> Task:
    """Pending → assigned to nobody yet, with a new ``spawning`` attempt; 409 unless the task is free to take."""
    now = queue.clock.now()

    def decide(task: Task) -> TaskChange:
        if task.status != TaskStatus.PENDING:
            holder = f" by agent {task.agent_id}" if task.agent_id else ""
            raise TaskTransitionError(
                task.id, task.status.value, TaskTrigger.CLAIM.value,
                f"task {task.id} is {task.status.value}{holder}; only a pending task can get an agent",
            )  # fmt: skip
        check(task, TaskTrigger.CLAIM)
        if task.agent_id or task.team_id:
            whom = f"agent {task.agent_id}" if task.agent_id else f"team {task.team_id}"
            raise TaskTransitionError(
                task.id, task.status.value, TaskTrigger.CLAIM.value,
                f"task {task.id} is reserved for {whom}; only it may claim the task",
            )  # fmt: skip
        metadata = h.begin_attempt(task, agent_id=None, team_id=None, at=now, claimed=True, spawning=True)
        changes = {"status": TaskStatus.ASSIGNED, "metadata": metadata}
        payload = {"agentId": None, "teamId": None, "attempt": task.attempts + 1, "claimed": True, "spawning": True}
        return TaskChange(changes, "task:assigned", payload)

    task, _ = await queue.store.change_task(task_id, decide, actor=actor)
    return task


async def hand_on(queue: Spawner, task_id: str, agent_id: str, attempt: int, *, actor: str) -> Task:
    """Give a task held by nobody or by a team to the agent made for it, while the same attempt runs."""

    def decide(task: Task) -> TaskChange:
        check(task, TaskTrigger.ASSIGN)
        if task.status != TaskStatus.ASSIGNED or task.agent_id is not None or _attempt_of(task) != attempt:
            raise TaskTransitionError(
                task.id, task.status.value, TaskTrigger.ASSIGN.value,
                f"attempt {attempt} of task {task.id} is no longer waiting for its agent",
            )  # fmt: skip
        changes = {"agent_id": agent_id, "metadata": h.update_attempt(task, agentId=agent_id)}
        return TaskChange(changes, "task:assigned", {"agentId": agent_id, "teamId": task.team_id, "handedOn": True})

    task, _ = await queue.store.change_task(task_id, decide, actor=actor)
    return await queue.settled(task)  # the agent may have ended already: settle as its end event would have


async def release(queue: Spawner, task_id: str, attempt: int | None, why: str, *, actor: str) -> Task:
    """Put a task whose agent was never made back in the queue (no failed attempt counted)."""
    now = queue.clock.now()

    def decide(task: Task) -> TaskChange:
        check(task, TaskTrigger.RELEASE)
        if task.agent_id is not None or (attempt is not None and _attempt_of(task) != attempt):
            raise TaskTransitionError(
                task.id, task.status.value, TaskTrigger.RELEASE.value,
                f"task {task.id} has an agent or a newer attempt; it is not released",
            )  # fmt: skip
        agent, team = h.reservation_of(task)
        metadata = h.end_attempt(task, outcome="released", at=now)  # not a failure: ``lastError`` stays
        metadata[h.HISTORY][-1]["error"] = why
        changes = {"status": TaskStatus.PENDING, "agent_id": agent, "team_id": team, "metadata": metadata}
        return TaskChange(changes, "task:released", {"attempt": _attempt_of(task), "reason": why})

    task, _ = await queue.store.change_task(task_id, decide, actor=actor)
    return task


def interrupted_spawn(task: Task, in_flight: set[str]) -> bool:
    """A task taken for an agent by a spawn that is no longer running (the server stopped in between)."""
    attempt = h.open_attempt(task) or {}
    return (
        task.status == TaskStatus.ASSIGNED
        and task.agent_id is None
        and task.team_id is None
        and attempt.get("spawning") is True
        and task.id not in in_flight
    )


def _attempt_of(task: Task) -> int:
    number = (h.open_attempt(task) or {}).get("attempt")
    return number if isinstance(number, int) else -1
