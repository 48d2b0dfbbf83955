"""``TaskQueue``: the durable task queue the API, teams and workflows use.

Every task lives in the store's ``tasks`` table and every change is one store transaction that validates the
move (``tasks.transitions``), writes the row and appends its ``task:*`` event together, so a restart loses
nothing and subscribers hear of a change only once it is committed. A task is taken either by an explicit
``assign`` (to an agent, or to a team that hands it on) or by ``claim`` (the highest-priority pending task an
agent or team may have, safe under concurrent claimers). ``fail`` puts the task back in the queue until it
has failed ``maxAttempts`` times; then it goes to the dead-letter list (status ``dead``) with the history of
every attempt, where ``retry`` can requeue it.

``spawn_for`` makes an agent for a pending task and hands the task to it (``tasks.spawning``). With a bus,
``start()`` also makes assigned tasks follow their agent (``tasks.following``): when the agent
completes, its task completes with the agent's result; when it fails for good, is killed or is deleted, its
task fails (and is requeued or dead-lettered like any failure).
"""

from __future__ import annotations

from typing import Any

from godel.core.clock import SystemClock
from godel.core.ids import new_id
from godel.core.models import Agent, Task
from godel.core.ports import Clock, EventBus, Page
from godel.core.states import TaskStatus
from godel.errors import AgentNotFoundError, ConflictError, FieldError, TaskTransitionError, ValidationError
from godel.store.tasks import TaskChange, TaskQuery
from godel.tasks import history as h
from godel.tasks.following import AgentFollower, agent_verdict
from godel.tasks.ports import TaskStorePort
from godel.tasks.spawning import Discard, Make, spawn_for
from godel.tasks.transitions import TaskTrigger, check

MIN_PRIORITY, MAX_PRIORITY = -1000, 1000
MAX_ATTEMPTS_LIMIT = 100
TITLE_LIMIT = 255
DESCRIPTION_LIMIT = 1_000_000
ID_LIMIT = 36


class TaskQueue:
    def __init__(self, store: TaskStorePort, bus: EventBus | None = None, *, clock: Clock | None = None) -> None:
        self.store = store
        self.bus = bus
        self.clock: Clock = clock or SystemClock()
        self._follower: AgentFollower | None = None
        self.spawning: set[str] = set()  # tasks an agent is being made for in this process (``tasks.spawning``)

    # ------------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Follow agents (needs a bus): assigned tasks complete or fail with their agent."""
        if self.bus is None or self._follower is not None:
            return
        self._follower = AgentFollower(self, self.bus)
        self._follower.start()

    async def stop(self) -> None:
        follower, self._follower = self._follower, None
        if follower is not None:
            await follower.stop()

    # --------------------------------------------------------------------------------------------- queries

    async def get(self, task_id: str) -> Task:
        return await self.store.get_task(task_id)

    async def list(self, query: TaskQuery) -> Page[Task]:
        return await self.store.list_tasks(query)

    async def dead_letters(self, *, limit: int = 50, cursor: str | None = None) -> Page[Task]:
        return await self.store.list_tasks(TaskQuery(status=(TaskStatus.DEAD,), limit=limit, cursor=cursor))

    async def stats(self) -> dict[str, int]:
        """Tasks per status; ``pending`` is the queue's depth."""
        return await self.store.count_tasks()

    # ------------------------------------------------------------------------------------------- commands

    async def create(
        self,
        title: str,
        *,
        description: str = "",
        priority: int = 0,
        max_attempts: int = h.DEFAULT_MAX_ATTEMPTS,
        agent_id: str | None = None,
        team_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        actor: str = "api",
    ) -> Task:
        """A pending task. With ``agent_id`` it is reserved for that agent's claims; with ``team_id``, for
        claims by that team (or its agents)."""
        _validate_new(title, description, priority, max_attempts, metadata or {})
        await self._check_refs(agent_id, team_id)
        task = Task(
            id=new_id(),
            title=title,
            description=description,
            priority=priority,
            agent_id=agent_id,
            team_id=team_id,
            metadata={
                **(metadata or {}),
                h.MAX_ATTEMPTS: max_attempts,
                h.HISTORY: [],
                h.RESERVED_FOR: {"agentId": agent_id, "teamId": team_id},
            },
        )
        created, _ = await self.store.create_task(task, actor=actor)
        return created

    async def assign(
        self, task_id: str, *, agent_id: str | None = None, team_id: str | None = None, actor: str = "api"
    ) -> Task:
        """Give a pending task to an agent or a team; or a task a team holds to one agent."""
        if agent_id is None and team_id is None:
            raise ValidationError("assign to an agent or a team", [FieldError("agentId", "or teamId is required")])
        await self._check_refs(agent_id, team_id)
        now = self.clock.now()

        def decide(task: Task) -> TaskChange:
            check(task, TaskTrigger.ASSIGN)
            if task.status == TaskStatus.ASSIGNED:
                if task.agent_id is not None or agent_id is None:
                    holder = f"agent {task.agent_id}" if task.agent_id else f"team {task.team_id}"
                    raise TaskTransitionError(
                        task.id, task.status.value, TaskTrigger.ASSIGN.value,
                        f"task {task.id} is already assigned to {holder}; fail or cancel it first",
                    )  # fmt: skip
                team = team_id or task.team_id
                changes = {"agent_id": agent_id, "team_id": team, "metadata": h.update_attempt(task, agentId=agent_id)}
                return TaskChange(changes, "task:assigned", {"agentId": agent_id, "teamId": team, "handedOn": True})
            agent, team = (agent_id, team_id or task.team_id) if agent_id else (None, team_id)
            metadata = h.begin_attempt(task, agent_id=agent, team_id=team, at=now, claimed=False)
            changes = {"status": TaskStatus.ASSIGNED, "agent_id": agent, "team_id": team, "metadata": metadata}
            payload = {"agentId": agent, "teamId": team, "attempt": task.attempts + 1}
            return TaskChange(changes, "task:assigned", payload)

        task, _ = await self.store.change_task(task_id, decide, actor=actor)
        return await self.settled(task)

    async def claim(
        self, *, agent_id: str | None = None, team_id: str | None = None, actor: str = "api"
    ) -> Task | None:
        """Take the highest-priority pending task (oldest first among equals) this agent or team may have, and
        assign it; None when there is none. An agent may take tasks reserved for it, for its team, or for
        nobody; a team, tasks for it or for nobody."""
        if agent_id is None and team_id is None:
            raise ValidationError("claim for an agent or a team", [FieldError("agentId", "or teamId is required")])
        agent = await self._check_refs(agent_id, team_id)
        eligible_team = team_id or (agent.team_id if agent is not None else None)
        now = self.clock.now()

        def decide(task: Task) -> TaskChange:
            check(task, TaskTrigger.CLAIM)
            holder, team = agent_id or task.agent_id, task.team_id or team_id
            metadata = h.begin_attempt(task, agent_id=holder, team_id=team, at=now, claimed=True)
            changes = {"status": TaskStatus.ASSIGNED, "agent_id": holder, "team_id": team, "metadata": metadata}
            payload = {"agentId": holder, "teamId": team, "attempt": task.attempts + 1, "claimed": True}
            return TaskChange(changes, "task:assigned", payload)

        claimed = await self.store.claim_task(decide, agent_id=agent_id, team_id=eligible_team, actor=actor)
        return await self.settled(claimed[0]) if claimed else None

    async def spawn_for(self, task_id: str, make: Make, discard: Discard, *, actor: str = "api") -> tuple[Task, Agent]:
        """Make an agent for a pending task, which then holds it and settles it when it ends (``tasks.spawning``)."""
        return await spawn_for(self, task_id, make, discard, actor=actor)

    async def begin(self, task_id: str, *, agent_id: str | None = None, actor: str = "api") -> Task:
        """Record that work on an assigned task has started (the spec's "start"); an agent named here takes a
        task its team holds."""
        now = self.clock.now()

        def decide(task: Task) -> TaskChange:
            check(task, TaskTrigger.START)
            _held_by(task, agent_id, TaskTrigger.START)
            agent = task.agent_id or agent_id
            metadata = h.update_attempt(task, startedAt=now, agentId=agent)
            return TaskChange({"agent_id": agent, "metadata": metadata}, "task:started", {"agentId": agent})

        if agent_id is not None:
            await self._check_refs(agent_id, None)
        task, _ = await self.store.change_task(task_id, decide, actor=actor)
        return await self.settled(task)

    async def complete(
        self,
        task_id: str,
        result: dict[str, Any] | None = None,
        *,
        agent_id: str | None = None,
        attempt: int | None = None,
        actor: str = "api",
    ) -> Task:
        """Complete an assigned task with its result. With ``agent_id`` (or ``attempt``, a history entry's
        number), only while that agent holds it (that attempt runs): a guard for callers acting on old news."""
        now = self.clock.now()

        def decide(task: Task) -> TaskChange:
            check(task, TaskTrigger.COMPLETE)
            _held_by(task, agent_id, TaskTrigger.COMPLETE, attempt)
            changes = {
                "status": TaskStatus.COMPLETED,
                "result": result,
                "completed_at": now,
                "metadata": h.end_attempt(task, outcome="completed", at=now),
            }
            return TaskChange(changes, "task:completed", {"agentId": task.agent_id, "attempt": task.attempts + 1})

        task, _ = await self.store.change_task(task_id, decide, actor=actor)
        return task

    async def fail(
        self,
        task_id: str,
        error: str,
        *,
        retry: bool = True,
        agent_id: str | None = None,
        attempt: int | None = None,
        actor: str = "api",
    ) -> Task:
        """Record a failed attempt: back to ``pending`` while attempts remain, else ``dead`` (the dead-letter
        list). ``retry=False``: ``failed`` at once, not dead-lettered (the caller knows retrying is useless).
        ``agent_id``/``attempt`` guard as in ``complete``."""
        error = error.strip() or "failed"
        now = self.clock.now()

        def decide(task: Task) -> TaskChange:
            check(task, TaskTrigger.FAIL)
            _held_by(task, agent_id, TaskTrigger.FAIL, attempt)
            attempts = task.attempts + 1
            metadata = h.end_attempt(task, outcome="failed", at=now, error=error)
            changes: dict[str, Any] = {"attempts": attempts, "metadata": metadata}
            payload = {"agentId": task.agent_id, "attempt": attempts, "maxAttempts": h.max_attempts_of(task),
                       "error": error}  # fmt: skip
            if not retry:
                changes |= {"status": TaskStatus.FAILED, "completed_at": now}
                return TaskChange(changes, "task:failed", {**payload, "requeued": False})
            if attempts >= h.max_attempts_of(task):
                changes |= {"status": TaskStatus.DEAD, "completed_at": now}
                return TaskChange(changes, "task:dead", payload)
            # Requeued for whom it was meant: anyone, or the agent or team it was created for (the history keeps
            # who failed it).
            agent, team = h.reservation_of(task)
            changes |= {"status": TaskStatus.PENDING, "agent_id": agent, "team_id": team}
            return TaskChange(changes, "task:failed", {**payload, "requeued": True})

        task, _ = await self.store.change_task(task_id, decide, actor=actor)
        return task

    async def retry(self, task_id: str, *, actor: str = "api") -> Task:
        """Requeue a dead (or failed) task with a fresh count of attempts; its history stays."""

        def decide(task: Task) -> TaskChange:
            check(task, TaskTrigger.RETRY)
            agent, team = h.reservation_of(task)
            changes = {"status": TaskStatus.PENDING, "attempts": 0, "agent_id": agent, "team_id": team,
                       "completed_at": None}  # fmt: skip
            return TaskChange(changes, "task:requeued", {"previousAttempts": task.attempts})

        task, _ = await self.store.change_task(task_id, decide, actor=actor)
        return task

    async def cancel(self, task_id: str, reason: str | None = None, *, actor: str = "api") -> Task:
        """Stop a pending or assigned task for good: ``failed``, not dead-lettered."""
        why = f"cancelled: {reason}" if reason else "cancelled"
        now = self.clock.now()

        def decide(task: Task) -> TaskChange:
            check(task, TaskTrigger.CANCEL)
            metadata = h.end_attempt(task, outcome="cancelled", at=now, error=why)
            changes = {"status": TaskStatus.FAILED, "completed_at": now, "metadata": metadata}
            return TaskChange(changes, "task:cancelled", {"agentId": task.agent_id, "reason": reason})

        task, _ = await self.store.change_task(task_id, decide, actor=actor)
        return task

    async def delete(self, task_id: str, *, force: bool = False, actor: str = "api") -> Task:
        """Delete a task (its events stay in the log). An assigned one only with ``force``."""

        def allowed(task: Task) -> None:
            if task.status == TaskStatus.ASSIGNED and not force:
                raise TaskTransitionError(
                    task.id, task.status.value, TaskTrigger.DELETE.value,
                    f"task {task.id} is assigned; fail or cancel it first, or delete with force",
                )  # fmt: skip

        deleted, _ = await self.store.delete_task(task_id, allowed=allowed, actor=actor)
        return deleted

    # ------------------------------------------------------------------------------------------- helpers

    async def settled(self, task: Task) -> Task:
        """After giving a task to an agent: if that agent ended meanwhile (after the check, before the commit),
        its end event was handled before the task was its, so settle the task now, as the event would have."""
        if self._follower is None or task.agent_id is None:
            return task
        try:
            ended = agent_verdict(await self.store.get_agent(task.agent_id)) is not None
        except AgentNotFoundError:
            ended = True
        if not ended:
            return task
        await self._follower.settle(task)
        return await self.store.get_task(task.id)

    async def _check_refs(self, agent_id: str | None, team_id: str | None) -> Agent | None:
        """The named agent (None when none is named); an unknown agent or team is a 400 on its field, an agent
        that has ended for good (completed, killed, failed with no retry to come) a 409."""
        problems: list[FieldError] = []
        agent: Agent | None = None
        if agent_id is not None:
            try:
                agent = await self.store.get_agent(agent_id) if _plausible_id(agent_id) else None
            except AgentNotFoundError:
                agent = None
            if agent is None:
                problems.append(FieldError("agentId", f"no agent {agent_id!r}"))
        if team_id is not None and not (_plausible_id(team_id) and await self.store.team_exists(team_id)):
            problems.append(FieldError("teamId", f"no team {team_id!r}"))
        if problems:
            raise ValidationError("; ".join(p.message for p in problems), problems)
        if agent is not None and agent_verdict(agent) is not None:
            raise ConflictError(
                f"agent {agent.id} has ended ({agent.state.value}); tasks go to agents that are queued or running",
                details={"agentId": agent.id, "agentState": agent.state.value},
            )
        return agent


def _plausible_id(value: str) -> bool:
    return 0 < len(value) <= ID_LIMIT


def _held_by(task: Task, agent_id: str | None, trigger: TaskTrigger, attempt: int | None = None) -> None:
    if agent_id is not None and task.agent_id is not None and task.agent_id != agent_id:
        raise TaskTransitionError(
            task.id, task.status.value, trigger.value,
            f"task {task.id} is assigned to agent {task.agent_id}, not {agent_id}",
        )  # fmt: skip
    running = (h.open_attempt(task) or {}).get("attempt")
    if attempt is not None and running != attempt:
        raise TaskTransitionError(
            task.id, task.status.value, trigger.value, f"attempt {attempt} of task {task.id} is no longer running"
        )


def _validate_new(title: str, description: str, priority: int, max_attempts: int, metadata: dict[str, Any]) -> None:
    problems: list[FieldError] = []
    if not title.strip():
        problems.append(FieldError("title", "must not be empty"))
    elif len(title) > TITLE_LIMIT:
        problems.append(FieldError("title", f"at most {TITLE_LIMIT} characters"))
    if len(description) > DESCRIPTION_LIMIT:
        problems.append(FieldError("description", f"at most {DESCRIPTION_LIMIT} characters"))
    if not _int_within(priority, MIN_PRIORITY, MAX_PRIORITY):
        problems.append(FieldError("priority", f"an integer from {MIN_PRIORITY} to {MAX_PRIORITY}"))
    if not _int_within(max_attempts, 1, MAX_ATTEMPTS_LIMIT):
        problems.append(FieldError("maxAttempts", f"an integer from 1 to {MAX_ATTEMPTS_LIMIT}"))
    reserved = sorted(set(metadata) & set(h.RESERVED))
    if reserved:
        problems.append(FieldError("metadata", f"{', '.join(reserved)} are kept by Godel; use other keys"))
    if problems:
        raise ValidationError("invalid task: " + "; ".join(f"{p.field} {p.message}" for p in problems), problems)


def _int_within(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
