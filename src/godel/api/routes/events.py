"""``/api/v1/events``: query the durable event log, publish, and follow it live over SSE."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from godel.api.deps import Plane
from godel.api.routes.agents import _patterns
from godel.api.schemas import PublishEvent, event_json, ok, page
from godel.core.events import EventFilter
from godel.core.ports import EventQuery
from godel.errors import FieldError, ValidationError

router = APIRouter(prefix="/events", tags=["events"])


@router.get("")
async def query_events(
    plane: Plane,
    type: Annotated[list[str] | None, Query()] = None,
    agent_id: Annotated[str | None, Query(alias="agentId")] = None,
    team_id: Annotated[str | None, Query(alias="teamId")] = None,
    since: Annotated[int | None, Query(ge=0)] = None,
    after: datetime | None = None,
    before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    if cursor is not None:
        if not cursor.isdigit():
            raise ValidationError("cursor must be a sequence number", [FieldError("cursor", "not a number")])
        since = int(cursor)
    flt = EventFilter(patterns=_patterns(type), agent_id=agent_id, team_id=team_id)
    events = await plane.events(EventQuery(filter=flt, since=since, after=after, before=before, limit=limit))
    next_cursor = str(events[-1].sequence) if events else None
    return page([event_json(e) for e in events], limit=limit, cursor=next_cursor, has_more=len(events) == limit)


@router.post("", status_code=201)
async def publish(body: PublishEvent, plane: Plane) -> JSONResponse:
    event = await plane.publish(body.type, body.payload, body.metadata)
    return JSONResponse(ok(event_json(event)), status_code=201)


@router.get("/stream", response_model=None)
async def stream(
    plane: Plane,
    type: Annotated[list[str] | None, Query()] = None,
    agent_id: Annotated[str | None, Query(alias="agentId")] = None,
    team_id: Annotated[str | None, Query(alias="teamId")] = None,
    since: Annotated[int | None, Query(ge=0)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    """Server-sent events; each ``id:`` is the event's sequence, so a reconnecting client resumes exactly."""
    if last_event_id and last_event_id.isdigit():
        since = int(last_event_id)
    flt = EventFilter(patterns=_patterns(type), agent_id=agent_id, team_id=team_id)

    async def events() -> AsyncIterator[dict[str, Any]]:
        async for e in plane.bus.stream(flt, since=since):
            yield {"id": str(e.sequence), "event": "event", "data": json.dumps(event_json(e))}

    return EventSourceResponse(events(), ping=15)


@router.get("/{event_id}")
async def get_event(event_id: str, plane: Plane) -> dict[str, Any]:
    return ok(event_json(await plane.store.get_event(event_id)))
