"""``/api/v1/tasks``: the durable task queue (create, list, assign or claim, start, complete, fail, retry from
the dead-letter list, cancel, delete, spawn an agent for a task). The service is ``ControlPlane.task_queue``
(``godel.tasks``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from godel.api.access import (
    OWNER_KEY,
    TASK,
    allow,
    auth_of,
    may_steer,
    owned_metadata,
    spawn_request,
    visible_owners,
)
from godel.api.deps import Plane
from godel.api.schemas import Body, CreateAgent, agent_json, ok, page
from godel.auth.principal import Principal
from godel.core.models import Agent, Task
from godel.core.states import TaskStatus
from godel.errors import FieldError, PermissionDeniedError, ValidationError
from godel.tasks import MAX_PRIORITY, MIN_PRIORITY, TaskQuery
from godel.tasks import history as h
from godel.tasks.queue import DESCRIPTION_LIMIT, ID_LIMIT, MAX_ATTEMPTS_LIMIT, TITLE_LIMIT
from godel.tasks.spawning import TASK_KEY, task_text

router = APIRouter(prefix="/tasks", tags=["tasks"])
Reader = Annotated[Principal, allow("task:read", on=TASK)]
Updater = Annotated[Principal, allow("task:update", on=TASK)]

TaskPriority = Annotated[int, Field(strict=True, ge=MIN_PRIORITY, le=MAX_PRIORITY)]
RefId = Annotated[str, Field(min_length=1, max_length=ID_LIMIT)]


class CreateTask(Body):
    title: Annotated[str, Field(min_length=1, max_length=TITLE_LIMIT)]
    description: Annotated[str, Field(max_length=DESCRIPTION_LIMIT)] = ""
    priority: TaskPriority = 0
    max_attempts: Annotated[int, Field(strict=True, ge=1, le=MAX_ATTEMPTS_LIMIT)] = h.DEFAULT_MAX_ATTEMPTS
    agent_id: RefId | None = None
    team_id: RefId | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class Target(Body):
    agent_id: RefId | None = None
    team_id: RefId | None = None


class Start(Body):
    agent_id: RefId | None = None


class Complete(Body):
    result: dict[str, Any] | None = None


class Fail(Body):
    error: Annotated[str, Field(min_length=1, max_length=100_000)]
    retry: bool = True  # false: failed for good now, not requeued nor dead-lettered


class SpawnForTask(CreateAgent):
    """The agent's options, as for ``POST /agents``; its task is the queued task's title and description."""

    # Narrowed to "absent" on purpose (a task given here would be ignored, so it is refused as a 400 instead).
    task: Annotated[None, Field(description="leave out: the agent's task is the queued task's")] = None  # type: ignore[assignment]


class Cancel(Body):
    reason: Annotated[str, Field(max_length=10_000)] | None = None


def _t(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def task_json(t: Task) -> dict[str, Any]:
    return {
        "id": t.id,
        "title": t.title,
        "description": t.description,
        "priority": t.priority,
        "status": t.status.value,
        "agentId": t.agent_id,
        "teamId": t.team_id,
        "attempts": t.attempts,
        "maxAttempts": h.max_attempts_of(t),
        "result": t.result,
        "lastError": h.last_error_of(t),
        "history": h.history_of(t),
        "metadata": {k: v for k, v in h.user_metadata(t).items() if k != OWNER_KEY},
        "owner": t.metadata.get(OWNER_KEY),
        "createdAt": _t(t.created_at),
        "updatedAt": _t(t.updated_at),
        "completedAt": _t(t.completed_at),
    }


@router.post("", status_code=201)
async def create_task(
    body: CreateTask, plane: Plane, request: Request, caller: Annotated[Principal, allow("task:create")]
) -> JSONResponse:
    await may_steer(request, caller, agent_id=body.agent_id, team_id=body.team_id)
    task = await plane.task_queue.create(
        body.title,
        description=body.description,
        priority=body.priority,
        max_attempts=body.max_attempts,
        agent_id=body.agent_id,
        team_id=body.team_id,
        metadata=owned_metadata(body.metadata, caller),
    )
    return JSONResponse(ok(task_json(task)), status_code=201)


@router.get("")
async def list_tasks(
    plane: Plane,
    request: Request,
    caller: Annotated[Principal, allow("task:read")],
    status: Annotated[list[TaskStatus] | None, Query()] = None,
    agent_id: Annotated[str | None, Query(alias="agentId")] = None,
    team_id: Annotated[str | None, Query(alias="teamId")] = None,
    dead: Annotated[bool, Query(description="Only the dead-letter list (status=dead).")] = False,
    min_priority: Annotated[int | None, Query(alias="minPriority", ge=MIN_PRIORITY, le=MAX_PRIORITY)] = None,
    max_priority: Annotated[int | None, Query(alias="maxPriority", ge=MIN_PRIORITY, le=MAX_PRIORITY)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Highest priority first, then oldest first (the order tasks are claimed in)."""
    statuses = tuple(status or ())
    if dead:
        if statuses and set(statuses) != {TaskStatus.DEAD}:
            raise ValidationError(
                "dead=true lists the dead-letter list; leave out status", [FieldError("status", "not with dead=true")]
            )
        statuses = (TaskStatus.DEAD,)
    query = TaskQuery(
        status=statuses, agent_id=agent_id, team_id=team_id, min_priority=min_priority, max_priority=max_priority,
        limit=limit, cursor=cursor,
    )  # fmt: skip
    result = await plane.task_queue.list(query)
    owners = await visible_owners(request, caller, "task")
    items = [t for t in result.items if owners is None or t.metadata.get(OWNER_KEY) in owners]
    return page([task_json(t) for t in items], limit=limit, cursor=result.cursor, has_more=result.has_more)


@router.get("/stats")
async def task_stats(plane: Plane, caller: Annotated[Principal, allow("task:read")]) -> dict[str, Any]:
    """How many tasks are in each status; ``pending`` is the queue's depth, ``dead`` the dead-letter list's."""
    return ok({"counts": await plane.task_queue.stats()})


@router.post("/claim")
async def claim_task(
    body: Target, plane: Plane, request: Request, caller: Annotated[Principal, allow("task:update")]
) -> Any:
    """Take the next task of the shared queue, whoever made it: that needs ``task:update:all`` (to take one of
    your own, assign it)."""
    if caller.scope_of("task", "update") != "all":
        raise PermissionDeniedError(
            "claiming takes the next task of the shared queue, whoever made it: it needs task:update:all "
            "(assign one of your own tasks with POST /tasks/{id}/assign)",
            details={"permission": "task:update:all"},
        )
    await may_steer(request, caller, agent_id=body.agent_id, team_id=body.team_id)
    """The next task for this agent or team, now assigned to it; ``data`` is null when the queue has none."""
    task = await plane.task_queue.claim(agent_id=body.agent_id, team_id=body.team_id)
    return ok(task_json(task) if task else None)


@router.get("/{task_id}")
async def get_task(task_id: str, plane: Plane, caller: Reader) -> dict[str, Any]:
    return ok(task_json(await plane.task_queue.get(task_id)))


@router.delete("/{task_id}")
async def delete_task(
    task_id: str, plane: Plane, caller: Annotated[Principal, allow("task:delete", on=TASK)], force: bool = False
) -> dict[str, Any]:
    await plane.task_queue.delete(task_id, force=force)
    return ok({"id": task_id, "deleted": True})


@router.post("/{task_id}/assign")
async def assign_task(task_id: str, body: Target, plane: Plane, request: Request, caller: Updater) -> dict[str, Any]:
    await may_steer(request, caller, agent_id=body.agent_id, team_id=body.team_id)
    return ok(task_json(await plane.task_queue.assign(task_id, agent_id=body.agent_id, team_id=body.team_id)))


@router.post("/{task_id}/start")
async def start_task(
    task_id: str, plane: Plane, request: Request, caller: Updater, body: Start | None = None
) -> dict[str, Any]:
    await may_steer(request, caller, agent_id=body.agent_id if body else None)
    return ok(task_json(await plane.task_queue.begin(task_id, agent_id=body.agent_id if body else None)))


@router.post("/{task_id}/complete")
async def complete_task(task_id: str, plane: Plane, caller: Updater, body: Complete | None = None) -> dict[str, Any]:
    return ok(task_json(await plane.task_queue.complete(task_id, body.result if body else None)))


@router.post("/{task_id}/fail")
async def fail_task(task_id: str, body: Fail, plane: Plane, caller: Updater) -> dict[str, Any]:
    return ok(task_json(await plane.task_queue.fail(task_id, body.error, retry=body.retry)))


@router.post("/{task_id}/retry")
async def retry_task(task_id: str, plane: Plane, caller: Updater) -> dict[str, Any]:
    return ok(task_json(await plane.task_queue.retry(task_id)))


@router.post("/{task_id}/cancel")
async def cancel_task(task_id: str, plane: Plane, caller: Updater, body: Cancel | None = None) -> dict[str, Any]:
    return ok(task_json(await plane.task_queue.cancel(task_id, body.reason if body else None)))


@router.post("/{task_id}/spawn", status_code=201)
async def spawn_for_task(
    task_id: str,
    body: SpawnForTask,
    plane: Plane,
    request: Request,
    caller: Updater,  # the agent takes the task: a change to it
    creator: Annotated[Principal, allow("agent:create")],
) -> JSONResponse:
    """Spawn an agent for a pending task: the agent holds the task from the start, and the task completes or
    fails with the agent's outcome. A task that is not pending (or is reserved for an agent or a team) is a 409
    and no agent is spawned."""
    await may_steer(request, creator, team_id=body.team_id)  # joining a team is a change to that team
    fields = body.model_dump(exclude={"task"})
    fields["metadata"] = {**fields.get("metadata", {}), TASK_KEY: task_id}
    on_behalf = (await auth_of(request).owner_of("agent", creator.agent_id)).id if creator.agent_id else None

    async def make(task: Task) -> Agent:
        spawn = spawn_request({**fields, "task": task_text(task)}, creator)
        if on_behalf is not None:  # a sub-agent is also its parent's owner's
            spawn.metadata["onBehalfOf"] = on_behalf
        return await plane.spawn(spawn, actor=creator.id)

    async def discard(agent: Agent, why: str) -> None:
        await plane.kill(agent.id, actor=creator.id, reason=why)

    task, agent = await plane.task_queue.spawn_for(task_id, make, discard, actor=caller.id)
    return JSONResponse(ok({"task": task_json(task), "agent": agent_json(agent)}), status_code=201)
