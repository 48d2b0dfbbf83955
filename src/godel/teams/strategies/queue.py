"""``queue``: workers that take tasks from the durable task queue, highest priority first, until it is empty.

``size`` workers run side by side. Each claims the next task for the team (the highest-priority pending task
reserved for the team or for nobody: ``TaskQueue.claim(team_id=…)``, safe under concurrent claimers), spawns an
agent whose task is the task's title and description (step ``queue/<task id>/<attempt>``), hands the task on to
it (``tasks.spawning.hand_on``), waits for the agent to end for good, and claims again. The task follows its
agent (``tasks.following``); the worker applies the agent's end to it before claiming again, so a failed task
with attempts left is back in the queue before the worker looks (and may be taken again), and one that ran out
is in the dead-letter list. The team completes when a claim finds nothing and every agent it spawned has ended;
a task that failed does not fail the team (the queue keeps its history and its dead letters).

Restart: the strategy first takes up the tasks the team holds (claimed or assigned to it, not yet given to an
agent outside the team): the agent of the attempt is found by its step key, or spawned if it never was, and the
task is handed on to it if it was not. Then the workers claim as before.

Result: ``{"tasks": [{taskId, title, attempt, agentId, state, status}, …] in the order claimed, "completed": n,
"requeued": n, "dead": n}``; ``run.claims`` records the claims as they happen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from godel.core.models import Agent, Task
from godel.core.states import TaskStatus
from godel.errors import GodelError, NotFoundError, TaskTransitionError
from godel.store.tasks import TaskQuery
from godel.tasks import history as h
from godel.tasks.spawning import TASK_KEY, hand_on, release, task_text
from godel.teams.runner import StepFailed, TeamRun
from godel.teams.strategies.common import together

PREFIX = "queue/"
Record = Callable[[Task, Agent | None], Awaitable[None]]
_PAGE = 200


async def run(team: TeamRun) -> dict[str, Any]:
    # Keyed by (task, attempt); a dict keeps the order of first insertion, which is the order of the claims.
    claims = {(c["taskId"], c["attempt"]): c for c in team.noted("claims", [])}
    lock = asyncio.Lock()  # one writer of ``run.claims`` at a time: each note carries the whole list

    async def record(task: Task, agent: Agent | None = None) -> None:
        async with lock:
            attempt = _attempt(task)
            claims[(task.id, attempt)] = {"taskId": task.id, "title": task.title, "attempt": attempt,
                                          "agentId": agent.id if agent else None}  # fmt: skip
            await team.note(claims=list(claims.values()))
            await team.expect(len(claims))

    await together([_work(team, task, record) for task in await _held(team)])

    async def worker() -> None:
        queue = team.plane.task_queue
        while True:
            await team.unpaused.wait()  # a paused team takes no new task
            task = await queue.claim(team_id=team.team_id, actor=team.actor)
            if task is None:
                return
            await _work(team, task, record)

    await together([worker() for _ in range(max(1, team.spec.size))])
    return await _result(team, list(claims.values()))


async def _work(team: TeamRun, task: Task, record: Record) -> None:
    """One attempt of one task: its agent spawned (or found), the task handed on, the agent's end applied."""
    queue = team.plane.task_queue
    attempt = _attempt(task)
    await record(task, None)
    async with team.cap.place():
        try:
            agent = await team.launch(f"{PREFIX}{task.id}/{attempt}", team.spec.role_of("worker"), task_text(task),
                                      meta={TASK_KEY: task.id, "attempt": attempt})  # fmt: skip
        except GodelError as exc:  # the spawn was refused: the task goes back, the team fails with the reason
            with contextlib.suppress(GodelError):
                await release(queue, task.id, attempt, f"the team's agent could not be spawned: {exc.message}",
                              actor=team.actor)  # fmt: skip
            raise StepFailed(f"task {task.id}: the agent could not be spawned: {exc.message}") from exc
        await record(task, agent)
        if task.agent_id is None:
            try:
                await hand_on(queue, task.id, agent.id, attempt, actor=team.actor)
            except (TaskTransitionError, NotFoundError):  # cancelled or deleted meanwhile: nothing left to do
                with contextlib.suppress(GodelError):
                    await team.plane.kill(agent.id, actor=team.actor, reason=f"task {task.id} was moved")
        ended = await team.wait(agent)
    with contextlib.suppress(NotFoundError):  # the end applied now, not only when the follower hears of it
        await queue.settled(await queue.get(task.id))
    await record(task, ended)


async def _held(team: TeamRun) -> list[Task]:
    """The tasks the team holds and has not given to an agent outside it (after a restart: work to take up)."""
    held: list[Task] = []
    cursor: str | None = None
    while True:
        query = TaskQuery(status=(TaskStatus.ASSIGNED,), team_id=team.team_id, limit=_PAGE, cursor=cursor)
        page = await team.plane.task_queue.list(query)
        for task in page.items:
            ours = task.agent_id is None or f"{PREFIX}{task.id}/{_attempt(task)}" in team.known
            if ours:
                held.append(task)
        if not page.has_more or not page.cursor:
            return held
        cursor = page.cursor


async def _result(team: TeamRun, claims: list[dict[str, Any]]) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for claim in claims:
        agent = team.known.get(f"{PREFIX}{claim['taskId']}/{claim['attempt']}")
        try:
            task = await team.plane.task_queue.get(claim["taskId"])
            status = h.attempt_outcome(task, claim["attempt"])
        except GodelError:
            status = "deleted"
        out.append({**claim, "state": agent.state.value if agent else None, "status": status})
    totals = {k: sum(1 for c in out if c["status"] == k) for k in ("completed", "requeued", "dead")}
    return {"tasks": out, **totals}


def _attempt(task: Task) -> int:
    number = (h.open_attempt(task) or {}).get("attempt")
    if not isinstance(number, int):
        raise StepFailed(f"task {task.id} is held by the team but has no running attempt")
    return number
