"""``/api/v1/agents``: spawn, query and command agents."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from godel.api.access import AGENT, StillValid, allow, auth_of, may_steer, spawn_request, visible_owners
from godel.api.deps import Plane
from godel.api.schemas import (
    MAX_INT64,
    CreateAgent,
    CreateSnapshot,
    Fork,
    Reason,
    Restore,
    Resume,
    agent_json,
    event_json,
    log_json,
    ok,
    page,
    pattern_error,
    session_json,
    snapshot_json,
    transition_json,
)
from godel.auth.principal import Principal
from godel.core.events import EventFilter
from godel.core.ports import AgentQuery, EventQuery
from godel.core.states import AgentState, AgentStatus
from godel.errors import FieldError, NotFoundError, ValidationError

router = APIRouter(prefix="/agents", tags=["agents"])
Reader = Annotated[Principal, allow("agent:read", on=AGENT)]
Updater = Annotated[Principal, allow("agent:update", on=AGENT)]

_ENDED = {AgentState.COMPLETED.value, AgentState.FAILED.value, AgentState.KILLED.value}


@router.post("", status_code=201)
async def create_agent(
    body: CreateAgent, plane: Plane, request: Request, caller: Annotated[Principal, allow("agent:create")]
) -> JSONResponse:
    await may_steer(request, caller, team_id=body.team_id)  # joining a team is a change to that team
    spawn = spawn_request(body.model_dump(), caller)
    if caller.agent_id is not None:  # a sub-agent is also its parent's owner's
        spawn.metadata["onBehalfOf"] = (await auth_of(request).owner_of("agent", caller.agent_id)).id
    agent = await plane.spawn(spawn, actor=caller.id)
    return JSONResponse(ok(agent_json(agent)), status_code=201)


@router.get("")
async def list_agents(
    plane: Plane,
    request: Request,
    caller: Annotated[Principal, allow("agent:read")],
    status: Annotated[list[AgentStatus] | None, Query()] = None,
    team_id: Annotated[str | None, Query(alias="teamId")] = None,
    label: str | None = None,
    model: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    owners = await visible_owners(request, caller, "agent")
    result = await plane.list_agents(
        AgentQuery(status=status or (), team_id=team_id, label=label, model=model, limit=limit, cursor=cursor,
                   owners=owners)
    )  # fmt: skip
    return page([agent_json(a) for a in result.items], limit=limit, cursor=result.cursor, has_more=result.has_more)


@router.get("/{agent_id}")
async def get_agent(agent_id: str, plane: Plane, caller: Annotated[Principal, allow("agent:read", on=AGENT)]) -> Any:
    data = agent_json(await plane.get(agent_id))
    data["rateLimited"] = plane.budgets.rate_limited(agent_id)
    return ok(data)


@router.delete("/{agent_id}")
async def delete_agent(
    agent_id: str, plane: Plane, caller: Annotated[Principal, allow("agent:delete", on=AGENT)], force: bool = False
) -> dict[str, Any]:
    await plane.delete(agent_id, force=force, actor=caller.id)
    return ok({"id": agent_id, "deleted": True})


@router.post("/{agent_id}/kill")
async def kill(agent_id: str, plane: Plane, caller: Updater, body: Reason | None = None) -> dict[str, Any]:
    return ok(agent_json(await plane.kill(agent_id, actor=caller.id, reason=body.reason if body else None)))


@router.post("/{agent_id}/pause")
async def pause(agent_id: str, plane: Plane, caller: Updater, body: Reason | None = None) -> dict[str, Any]:
    return ok(agent_json(await plane.pause(agent_id, actor=caller.id, reason=body.reason if body else None)))


@router.post("/{agent_id}/resume")
async def resume(agent_id: str, plane: Plane, caller: Updater, body: Resume | None = None) -> dict[str, Any]:
    """Continue a paused agent; with a ``message``, continue an ended agent's CLI session with it instead."""
    if body and body.message:
        return ok(agent_json(await plane.continue_agent(agent_id, body.message, actor=caller.id)))
    return ok(agent_json(await plane.resume(agent_id, actor=caller.id, reason=body.reason if body else None)))


@router.get("/{agent_id}/sessions")
async def sessions(agent_id: str, plane: Plane, caller: Reader) -> dict[str, Any]:
    """The agent's runs with their transcripts, oldest first."""
    items = [session_json(s) for s in await plane.workspaces.sessions(agent_id)]
    return ok({"items": items})


@router.post("/{agent_id}/restart")
async def restart(agent_id: str, plane: Plane, caller: Updater, body: Reason | None = None) -> dict[str, Any]:
    return ok(agent_json(await plane.restart(agent_id, actor=caller.id, reason=body.reason if body else None)))


@router.get("/{agent_id}/transitions")
async def transitions(agent_id: str, plane: Plane, caller: Reader) -> dict[str, Any]:
    return ok({"items": [transition_json(t) for t in await plane.transitions(agent_id)]})


@router.get("/{agent_id}/logs", response_model=None)
async def logs(
    agent_id: str,
    plane: Plane,
    request: Request,
    caller: Annotated[Principal, allow("event:read", on=AGENT)],
    tail: Annotated[int, Query(ge=0, le=100_000)] = 100,
    stream: Literal["stdout", "stderr"] | None = None,
    follow: bool = False,
) -> dict[str, Any] | EventSourceResponse:
    # The position is read *before* the tail: a line committed between the two reads is then followed
    # rather than skipped (it is in neither the tail nor the stream otherwise).
    position = await plane.store.last_sequence() if follow else 0
    lines = await plane.logs(agent_id, tail=tail, stream=stream)
    if not follow:
        return ok({"items": [log_json(e) for e in lines]})
    since = lines[-1].sequence if lines else position

    async def events() -> AsyncIterator[dict[str, Any]]:
        for e in lines:
            yield {"event": "log", "id": str(e.sequence), "data": json.dumps(log_json(e))}
        if await _finished(plane, agent_id):
            yield {"event": "end", "data": json.dumps({"state": (await plane.get(agent_id)).state.value})}
            return
        flt = EventFilter(patterns=("agent:*",), agent_id=agent_id)
        valid = StillValid(request)
        async for e in plane.bus.stream(flt, since=since):
            if not await valid.holds():  # logged out, revoked or disabled since the stream opened
                return
            if e.type == "agent:log":
                if stream is None or e.payload.get("stream") == stream:
                    yield {"event": "log", "id": str(e.sequence), "data": json.dumps(log_json(e))}
            elif e.type == "agent:deleted":
                yield {"event": "end", "data": json.dumps({"state": "deleted"})}
                return
            elif e.payload.get("to") in _ENDED and await _finished(plane, agent_id):
                yield {"event": "end", "data": json.dumps({"state": e.payload["to"]})}
                return

    return EventSourceResponse(events(), ping=15)


@router.get("/{agent_id}/events")
async def agent_events(
    agent_id: str,
    plane: Plane,
    caller: Annotated[Principal, allow("event:read", on=AGENT)],
    since: Annotated[int | None, Query(ge=0, le=MAX_INT64)] = None,
    type: Annotated[list[str] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    await plane.get(agent_id)
    patterns = _patterns(type)
    events = await plane.events(
        EventQuery(filter=EventFilter(patterns=patterns, agent_id=agent_id), since=since, limit=limit)
    )
    cursor = str(events[-1].sequence) if events else None
    return page([event_json(e) for e in events], limit=limit, cursor=cursor, has_more=len(events) == limit)


@router.get("/{agent_id}/diff")
async def diff(agent_id: str, plane: Plane, caller: Reader) -> dict[str, Any]:
    return ok(await plane.diff(agent_id))


@router.get("/{agent_id}/snapshots")
async def list_snapshots(agent_id: str, plane: Plane, caller: Reader) -> dict[str, Any]:
    return ok({"items": [snapshot_json(s) for s in await plane.workspaces.snapshots(agent_id)]})


@router.post("/{agent_id}/snapshots", status_code=201)
async def create_snapshot(
    agent_id: str, plane: Plane, caller: Updater, body: CreateSnapshot | None = None
) -> JSONResponse:
    snap = await plane.workspaces.snapshot(
        agent_id, label=body.label if body else None, include_ignored=bool(body and body.include_ignored),
        actor=caller.id,
    )  # fmt: skip
    return JSONResponse(ok(snapshot_json(snap)), status_code=201)


@router.post("/{agent_id}/restore")
async def restore(agent_id: str, body: Restore, plane: Plane, caller: Updater) -> dict[str, Any]:
    return ok(agent_json(await plane.workspaces.restore(agent_id, body.snapshot_id, actor=caller.id)))


@router.post("/{agent_id}/fork", status_code=201)
async def fork(
    agent_id: str,
    plane: Plane,
    caller: Updater,  # a fork snapshots the source's working tree: a change to it, not a read
    creator: Annotated[Principal, allow("agent:create")],
    body: Fork | None = None,
) -> JSONResponse:
    body = body or Fork()
    overrides = body.model_dump(exclude={"snapshot_id", "session_point", "include_ignored"})
    agent = await plane.workspaces.fork(
        agent_id, snapshot_id=body.snapshot_id, overrides=overrides, session_point=body.session_point,
        include_ignored=body.include_ignored, actor=creator.id, owner=creator.id,
    )  # fmt: skip
    return JSONResponse(ok(agent_json(agent)), status_code=201)


async def _finished(plane: Plane, agent_id: str) -> bool:
    """Ended for good: completed or killed, or failed with no retry to come (a retry continues the log)."""
    try:
        agent = await plane.get(agent_id)
    except NotFoundError:
        return True
    if agent.state == AgentState.FAILED:
        return agent.retry_count >= agent.max_retries
    return agent.state.value in _ENDED


def _patterns(raw: list[str] | None) -> tuple[str, ...]:
    patterns = tuple(p.strip() for item in raw or [] for p in item.split(",") if p.strip())
    why = pattern_error(list(patterns))
    if why:
        raise ValidationError(f"bad event pattern {why}", [FieldError("type", why)])
    return patterns
