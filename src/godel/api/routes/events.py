"""``/api/v1/events``: query the durable event log, publish, and follow it live over SSE."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from godel.api.access import StillValid, allow, auth_of
from godel.api.deps import Plane
from godel.api.routes.agents import _patterns
from godel.api.schemas import MAX_INT64, PublishEvent, event_json, ok, page
from godel.auth.principal import Principal
from godel.core.events import Event, EventFilter
from godel.core.ports import EventQuery
from godel.errors import FieldError, PermissionDeniedError, ValidationError

CUSTOM = "custom:"

router = APIRouter(prefix="/events", tags=["events"])


@router.get("")
async def query_events(
    plane: Plane,
    request: Request,
    caller: Annotated[Principal, allow("event:read")],
    type: Annotated[list[str] | None, Query()] = None,
    agent_id: Annotated[str | None, Query(alias="agentId")] = None,
    team_id: Annotated[str | None, Query(alias="teamId")] = None,
    since: Annotated[int | None, Query(ge=0, le=MAX_INT64)] = None,
    after: datetime | None = None,
    before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    if cursor is not None:
        if not cursor.isdigit() or int(cursor) > MAX_INT64:
            raise ValidationError("cursor must be a sequence number", [FieldError("cursor", "not a sequence number")])
        since = int(cursor)
    flt = EventFilter(patterns=_patterns(type), agent_id=agent_id, team_id=team_id)
    events = await plane.events(EventQuery(filter=flt, since=since, after=after, before=before, limit=limit))
    # The cursor is the last event *scanned*: a page of events the caller may not see still moves it on.
    next_cursor = str(events[-1].sequence) if events else None
    shown = await readable(request, caller, events)
    return page([event_json(e) for e in shown], limit=limit, cursor=next_cursor, has_more=len(events) == limit)


@router.post("", status_code=201)
async def publish(
    body: PublishEvent, plane: Plane, request: Request, caller: Annotated[Principal, allow("event:create")]
) -> JSONResponse:
    """Publish an event of your own (``custom:…``), stamped with who you are. System events (``agent:*``,
    ``budget:*``, …) are Godel's alone."""
    if not body.type.startswith(CUSTOM):
        raise ValidationError(
            f"event type {body.type!r} is reserved for Godel; publish your own under {CUSTOM}…",
            [FieldError("type", f"must start with {CUSTOM!r}")],
        )
    metadata = dict(body.metadata)
    for key in ("agentId", "teamId", "workflowId", "correlationId", "causationId"):
        if metadata.get(key) is not None and not isinstance(metadata[key], str):
            raise ValidationError(f"metadata.{key} must be a string", [FieldError(f"metadata.{key}", "a string")])
    if caller.agent_id is not None:  # an agent speaks about itself only
        metadata.setdefault("agentId", caller.agent_id)
    auth = auth_of(request)
    for key, kind in (("agentId", "agent"), ("teamId", "team"), ("workflowId", "workflow")):
        if isinstance(metadata.get(key), str) and not caller.may(
            "event", "create", await auth.owner_of(kind, metadata[key])
        ):
            raise PermissionDeniedError(f"{caller.id} may not publish events about {kind} {metadata[key]}",
                                        details={"permission": "event:create"})  # fmt: skip
    event = await plane.publish(body.type, body.payload, metadata, actor=caller.id)
    return JSONResponse(ok(event_json(event)), status_code=201)


@router.get("/stream", response_model=None)
async def stream(
    plane: Plane,
    request: Request,
    caller: Annotated[Principal, allow("event:read")],
    type: Annotated[list[str] | None, Query()] = None,
    agent_id: Annotated[str | None, Query(alias="agentId")] = None,
    team_id: Annotated[str | None, Query(alias="teamId")] = None,
    since: Annotated[int | None, Query(ge=0, le=MAX_INT64)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    """Server-sent events; each ``id:`` is the event's sequence, so a reconnecting client resumes exactly."""
    if last_event_id and last_event_id.isdigit() and int(last_event_id) <= MAX_INT64:
        since = int(last_event_id)
    flt = EventFilter(patterns=_patterns(type), agent_id=agent_id, team_id=team_id)

    async def events() -> AsyncIterator[dict[str, Any]]:
        auth, valid = auth_of(request), StillValid(request)
        async for e in plane.bus.stream(flt, since=since):
            if not await valid.holds():  # logged out, revoked or disabled since the stream opened
                return
            if await auth.can_read_event(caller, e):
                yield {"id": str(e.sequence), "event": "event", "data": json.dumps(event_json(e))}

    return EventSourceResponse(events(), ping=15)


@router.get("/{event_id}")
async def get_event(
    event_id: str, plane: Plane, request: Request, caller: Annotated[Principal, allow("event:read")]
) -> dict[str, Any]:
    event = await plane.store.get_event(event_id)
    if not await auth_of(request).can_read_event(caller, event):
        raise PermissionDeniedError(f"{caller.id} may not read this event", details={"permission": "event:read"})
    return ok(event_json(event))


async def readable(conn: Request, caller: Principal, events: list[Event]) -> list[Event]:
    auth = auth_of(conn)
    return [e for e in events if await auth.can_read_event(caller, e)]
