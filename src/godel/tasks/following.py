"""Assigned tasks follow their agent's end.

The follower subscribes to the agents' end events on the bus (``agent:complete``, ``agent:error``,
``agent:kill``, ``agent:deleted``) and settles the tasks assigned to that agent:

- the agent completed → the task completes, with the agent's result (``outcome.result``), branch and commits;
- the agent failed for good (no retry of its own is coming), was killed or deleted → the task fails, and is
  requeued or dead-lettered like any failure.

An ``agent:error`` after which the scheduler retries the agent (attempts left, or a fallback model) leaves the
task assigned: the agent's next run may still complete it. At start, and again whenever the subscription had
to drop events, a sweep settles every assigned task whose agent ended while nobody was listening (the server
was down), so the outcome reaches the task exactly as if the event had been seen. The same sweep puts back
in the queue a task taken for an agent by a spawn the server did not live to finish (``tasks.spawning``).
Settling is idempotent: each change checks that the task is still assigned to that agent, so a sweep and an
event racing on one task change it once.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

import structlog

from godel.core.events import Event, EventFilter
from godel.core.models import Agent, Task
from godel.core.ports import Backpressure, EventBus
from godel.core.runs import ended_for_good
from godel.core.states import AgentState, TaskStatus
from godel.errors import AgentNotFoundError, ConflictError, GodelError, NotFoundError
from godel.store.tasks import TaskQuery
from godel.tasks import history as h
from godel.tasks.spawning import Spawner, interrupted_spawn, release


class TaskSettler(Spawner, Protocol):
    """What following needs of the queue (``godel.tasks.queue.TaskQueue``): its store, its two verdicts, and
    what releasing an interrupted spawn needs."""

    async def complete(
        self, task_id: str, result: dict[str, Any] | None = None, *, agent_id: str | None = None,
        attempt: int | None = None, actor: str = "api",
    ) -> Task: ...  # fmt: skip

    async def fail(
        self, task_id: str, error: str, *, retry: bool = True, agent_id: str | None = None,
        attempt: int | None = None, actor: str = "api",
    ) -> Task: ...  # fmt: skip


log = structlog.get_logger("godel.tasks")

AGENT_ENDS = ("agent:complete", "agent:error", "agent:kill", "agent:deleted")
ACTOR = "tasks"
_PAGE = 200


def agent_verdict(agent: Agent) -> str | None:
    """``completed`` or ``failed`` when the agent has ended for good; None while it runs or will run again."""
    if not ended_for_good(agent):
        return None
    return "completed" if agent.state == AgentState.COMPLETED else "failed"


def agent_result(agent: Agent) -> dict[str, Any]:
    outcome = agent.outcome or {}
    return {
        "agentId": agent.id,
        "result": outcome.get("result"),
        "reason": outcome.get("reason"),
        "branch": agent.branch,
        "commits": agent.commits,
    }


class AgentFollower:
    def __init__(self, queue: TaskSettler, bus: EventBus) -> None:
        self.queue = queue
        self.bus = bus
        self._sub: Any = None
        self._task: asyncio.Task[None] | None = None
        self.settled = 0  # tasks changed because their agent ended (for tests and stats)

    def start(self) -> None:
        # Subscribed before the first sweep: an end committed in between is seen by one or the other.
        self._sub = self.bus.subscribe(
            EventFilter(patterns=AGENT_ENDS), buffer_size=10_000, policy=Backpressure.SLIDING
        )
        self._task = asyncio.create_task(self._run(), name="godel:tasks-follow-agents")

    async def stop(self) -> None:
        if self._sub is not None:
            self._sub.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def _run(self) -> None:
        await self._guarded(self.sweep())
        dropped = 0
        while True:
            event = await self._sub.get()
            if event is None:
                return
            if self._sub.dropped != dropped:  # the buffer overflowed: what was lost is in the store
                dropped = self._sub.dropped
                await self._guarded(self.sweep())
            await self._guarded(self.on_event(event))

    async def _guarded(self, work: Any) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("settling tasks after an agent ended failed")

    async def on_event(self, event: Event) -> None:
        agent_id = event.metadata.agent_id or event.payload.get("agentId")
        if not agent_id:
            return
        if event.type == "agent:deleted":
            # The database already cleared the tasks' agent_id (ON DELETE SET NULL); the history remembers.
            for task in await self._assigned(None):
                if task.agent_id is None and (h.open_attempt(task) or {}).get("agentId") == agent_id:
                    await self._fail(task, f"agent {agent_id} was deleted")
            return
        for task in await self._assigned(agent_id):
            await self.settle(task)

    async def sweep(self) -> None:
        """Settle every assigned task whose agent has ended (or is gone); release interrupted spawns."""
        for task in await self._assigned(None):
            if interrupted_spawn(task, self.queue.spawning):
                why = "the server stopped while an agent was being spawned for it"
                await self._act(release(self.queue, task.id, (h.open_attempt(task) or {}).get("attempt"), why,
                                        actor=ACTOR))  # fmt: skip
            else:
                await self.settle(task)

    async def settle(self, task: Task) -> None:
        if task.status != TaskStatus.ASSIGNED:
            return
        attempt = h.open_attempt(task) or {}
        agent_id = task.agent_id or attempt.get("agentId")
        if not agent_id:
            return  # held by a team, no agent yet
        try:
            agent = await self.queue.store.get_agent(agent_id)
        except AgentNotFoundError:
            await self._fail(task, f"agent {agent_id} no longer exists")
            return
        verdict = agent_verdict(agent)
        if verdict == "completed":
            change = self.queue.complete(
                task.id, agent_result(agent), agent_id=agent.id, attempt=attempt.get("attempt"), actor=ACTOR
            )
            await self._act(change)
        elif verdict == "failed":
            ended = "was killed" if agent.state == AgentState.KILLED else "failed"
            await self._fail(task, f"agent {agent.id} {ended}" + (f": {agent.last_error}" if agent.last_error else ""))

    async def _fail(self, task: Task, error: str) -> None:
        """Fail the attempt that was running when ``task`` was read, and no later one."""
        attempt = (h.open_attempt(task) or {}).get("attempt")
        await self._act(self.queue.fail(task.id, error, agent_id=task.agent_id, attempt=attempt, actor=ACTOR))

    async def _act(self, change: Any) -> None:
        try:
            await change
            self.settled += 1
        except (ConflictError, NotFoundError):
            pass  # someone else moved or deleted the task meanwhile: their change stands
        except GodelError as exc:
            log.warning("could not settle a task after its agent ended", error=exc.message)

    async def _assigned(self, agent_id: str | None) -> list[Task]:
        found: list[Task] = []
        cursor: str | None = None
        while True:
            query = TaskQuery(status=(TaskStatus.ASSIGNED,), agent_id=agent_id, limit=_PAGE, cursor=cursor)
            page = await self.queue.store.list_tasks(query)
            found.extend(page.items)
            if not page.has_more:
                return found
            cursor = page.cursor
