"""Running a queue step: ``workers`` agents at once work the task queue's tasks, highest priority first, until
none is left (docs/workflows.md, "Queue steps").

Each worker looks for the first pending task in the queue's order (priority, then age) that is reserved for nobody
and within the step's priority band, and runs it through the task-spawn path (``TaskQueue.spawn_for``, the one
``POST /tasks/{id}/spawn`` uses): the task is taken, an agent is made for it from the step's settings (agent,
model, role, command, env, its starting point) with the task's title and description as its task, and the task
is handed on to it. The task then follows its agent (``tasks.following``): completed with its result, or failed
and requeued or dead-lettered. The worker waits for the agent to end, applies that end to the task at once (so a
requeued task is pending again before anyone looks), and looks again. Two workers (or any other caller) racing
for one task: one takes it, the other looks again.

The step ends when every worker found nothing left and every agent it made has ended. It fails when a task it
worked ended failed (dead-lettered, failed for good or cancelled) unless ``onTaskFailure: continue``, and at
once (taking nothing more) when an agent cannot be made: the same refusal would meet every task.

Every attempt is recorded in the step's ``result.queue.tasks`` as it is taken and as it ends. After a restart the
step carries on: the agents of recorded attempts still running are waited for, and the workers look again. An
attempt a crash cut off before its agent was made is released by the task queue's own sweep and taken again; an
agent made just before a crash, before its task was handed on, runs on unattached (as with
``POST /tasks/{id}/spawn``): the task may be worked twice, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from godel.core.models import Agent, Task, Workflow
from godel.core.states import TaskStatus
from godel.errors import GodelError, NotFoundError, TaskTransitionError
from godel.scheduler.plane import ControlPlane
from godel.scheduler.requests import SpawnRequest
from godel.store.tasks import TaskQuery
from godel.tasks import history as h
from godel.tasks.spawning import TASK_KEY, task_text
from godel.workflow.definition import OnTaskFailure, QueueSpec, StepDefinition
from godel.workflow.records import WorkflowRows, set_step

ENDED_FAILED = ("dead", "failed", "cancelled")  # an attempt's outcome that ended its task failed for good
_PAGE = 50

Request = Callable[[Task, int], SpawnRequest]  # the spawn request of a task's agent (task, the task's attempt)


@dataclass
class Ending:
    """How a queue step ended: its output (the JSON summary) and, when it failed, why."""

    output: str
    result: dict[str, Any]
    error: str | None = None


@dataclass
class Drain:
    plane: ControlPlane
    rows: WorkflowRows
    wf: Workflow
    step: StepDefinition
    request: Request
    going: asyncio.Event  # set while the run is running: a paused run takes no new task
    result: dict[str, Any]  # the step row's result; ``queue.tasks`` is kept in it
    entries: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)  # by (task, attempt), claim order
    refused: str | None = None  # an agent could not be made: take nothing more
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def spec(self) -> QueueSpec:
        assert self.step.queue is not None
        return self.step.queue

    @property
    def actor(self) -> str:
        return f"workflow:{self.wf.id}"

    async def run(self) -> Ending:
        """Work the queue until it is empty; after a restart, first wait for the attempts still running."""
        recorded = (self.result.get("queue") or {}).get("tasks") or []
        self.entries = {(e["taskId"], e["attempt"]): dict(e) for e in recorded}
        unfinished = []
        for entry in self.entries.values():
            if entry.get("status") != "running":
                continue
            if entry.get("agentId"):
                unfinished.append(self._follow(entry["taskId"], entry["attempt"], entry["agentId"]))
            else:  # cut off before its agent was made: the queue's sweep has put the task back
                entry["status"] = "released"
        await asyncio.gather(*unfinished, *(self._worker() for _ in range(self.spec.workers)))
        return self._ending()

    # ------------------------------------------------------------------------------------------ the workers

    async def _worker(self) -> None:
        while self.refused is None:
            await self.going.wait()
            task = await self._next()
            if task is None:
                return
            taken = await self._take(task)
            if taken is not None:
                await self._follow(*taken)

    async def _take(self, candidate: Task) -> tuple[str, int, str] | None:
        """Run one task through the task-spawn path: (task id, attempt, agent id), or None when it was not ours."""
        attempt: list[int] = []  # the attempt the take began (known once ``make`` is called)

        async def make(taken: Task) -> Agent:
            attempt.append(_attempt_of(taken))
            await self._record(taken, attempt[0], None, "running")
            return await self.plane.spawn(self.request(taken, attempt[0]), actor=self.actor)

        try:
            task, agent = await self.plane.task_queue.spawn_for(candidate.id, make, self._discard, actor=self.actor)
        except TaskTransitionError:
            if attempt:  # taken, then moved before it was handed on (cancelled): its agent was discarded
                await self._record(candidate, attempt[0], None, "moved")
            return None  # or another taker was first: look again
        except GodelError as exc:  # the agent could not be made; the task was put back
            if attempt:
                await self._record(candidate, attempt[0], None, "released")
            self.refused = f"task {candidate.id}: its agent could not be spawned: {exc.message}"
            return None
        await self._record(task, attempt[0], agent.id, "running")
        return task.id, attempt[0], agent.id

    async def _next(self) -> Task | None:
        """The first pending task in the queue's order this step may take (reserved for nobody, in the band,
        not being taken by another worker of this server)."""
        queue = self.plane.task_queue
        cursor: str | None = None
        while True:
            query = TaskQuery(status=(TaskStatus.PENDING,), min_priority=self.spec.min_priority,
                              max_priority=self.spec.max_priority, limit=_PAGE, cursor=cursor)  # fmt: skip
            page = await queue.list(query)
            for task in page.items:
                if task.agent_id is None and task.team_id is None and task.id not in queue.spawning:
                    return task
            if not page.has_more or not page.cursor:
                return None
            cursor = page.cursor

    async def _follow(self, task_id: str, attempt: int, agent_id: str) -> None:
        """Wait for the attempt's agent to end, apply that end to its task now, record what became of it."""
        queue = self.plane.task_queue
        try:
            await self.plane.wait_for_end(agent_id)
        except NotFoundError:
            pass  # deleted: the task follows that too
        try:
            task = await queue.settled(await queue.get(task_id))
        except NotFoundError:
            self.entries[(task_id, attempt)]["status"] = "deleted"
            await self._save()
            return
        await self._record(task, attempt, agent_id, h.attempt_outcome(task, attempt))

    async def _discard(self, agent: Agent, why: str) -> None:
        with contextlib.suppress(GodelError):
            await self.plane.kill(agent.id, actor=self.actor, reason=why)

    # ------------------------------------------------------------------------------------------ the record

    async def _record(self, task: Task, attempt: int, agent_id: str | None, status: str) -> None:
        key = (task.id, attempt)
        entry = self.entries.get(key) or {"taskId": task.id, "title": task.title, "priority": task.priority,
                                          "attempt": attempt, "agentId": None}  # fmt: skip
        entry["agentId"] = agent_id or entry.get("agentId")
        entry["status"] = status
        if status in ENDED_FAILED:
            entry["error"] = h.last_error_of(task)
        self.entries[key] = entry
        await self._save()

    async def _save(self) -> None:
        async with self._lock:  # one writer of the step's result at a time: each write carries the whole list
            self.result = {**self.result, "queue": {"tasks": list(self.entries.values())}}
            await set_step(self.rows, self.wf, self.step.id, {"result": self.result}, None, {})

    def _ending(self) -> Ending:
        tasks = list(self.entries.values())
        last: dict[str, dict[str, Any]] = {}
        for entry in tasks:  # in claim order: a task's last attempt is what became of it
            last[entry["taskId"]] = entry
        failed = [e for e in last.values() if e["status"] in ENDED_FAILED]
        summary = {
            "tasks": tasks,
            "completed": sum(1 for e in last.values() if e["status"] == "completed"),
            "failed": len(failed),
            "requeued": sum(1 for e in tasks if e["status"] == "requeued"),
        }
        output = json.dumps(summary, separators=(",", ":"))
        result = {**self.result, "output": output}
        if self.refused is not None:
            return Ending(output, result, self.refused)
        if failed and self.spec.on_task_failure is OnTaskFailure.FAIL:
            named = "; ".join(f"{e['taskId']} ({e['title']}): {e['status']}: {e.get('error') or ''}".rstrip(": ")
                              for e in failed[:5])  # fmt: skip
            more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
            return Ending(output, result, f"{len(failed)} of its tasks ended failed: {named}{more}")
        return Ending(output, result)


def task_request(base: SpawnRequest, step: StepDefinition, wf: Workflow) -> Request:
    """The request of each task's agent: the step's, with the task's text, its own label and the task named."""

    def request(task: Task, attempt: int) -> SpawnRequest:
        return dataclasses.replace(
            base, task=task_text(task), label=f"wf:{wf.id}:{step.id}:task:{task.id}:{attempt}",
            metadata={**base.metadata, TASK_KEY: task.id, "taskAttempt": attempt},
        )  # fmt: skip

    return request


def _attempt_of(task: Task) -> int:
    number = (h.open_attempt(task) or {}).get("attempt")
    return number if isinstance(number, int) else 0
