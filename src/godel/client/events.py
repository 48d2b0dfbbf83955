"""The durable event log: list, read one, publish ``custom:*`` (the live stream is in the concrete clients)."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, overload
from urllib.parse import quote

from godel.client.calls import API, JSON, Calls, Deferred, R, camelize, patterns_param
from godel.client.models import Event, Page


class EventCalls(Calls[R]):
    @overload
    def events(
        self: EventCalls[JSON], *, type: str | Sequence[str] | None = None, agent_id: str | None = None,
        team_id: str | None = None, since: int | None = None, after: str | None = None, before: str | None = None,
        limit: int | None = None,
    ) -> Page[Event]: ...  # fmt: skip
    @overload
    def events(
        self: EventCalls[Deferred], *, type: str | Sequence[str] | None = None, agent_id: str | None = None,
        team_id: str | None = None, since: int | None = None, after: str | None = None, before: str | None = None,
        limit: int | None = None,
    ) -> Awaitable[Page[Event]]: ...  # fmt: skip
    def events(
        self, *, type: str | Sequence[str] | None = None, agent_id: str | None = None, team_id: str | None = None,
        since: int | None = None, after: str | None = None, before: str | None = None, limit: int | None = None,
    ) -> Any:  # fmt: skip
        """Past events, oldest first from ``since`` (a sequence number); ``type`` takes patterns (``agent:*``)."""
        query = camelize(
            {
                "type": patterns_param(type),
                "agent_id": agent_id,
                "team_id": team_id,
                "since": since,
                "after": after,
                "before": before,
                "limit": limit,
            }
        )
        return self._call("GET", f"{API}/events", params=query, into=Page.of(Event))

    @overload
    def get_event(self: EventCalls[JSON], event_id: str) -> Event: ...
    @overload
    def get_event(self: EventCalls[Deferred], event_id: str) -> Awaitable[Event]: ...
    def get_event(self, event_id: str) -> Any:
        return self._call("GET", f"{API}/events/{quote(event_id, safe='')}", into=Event.parse)

    @overload
    def publish_event(
        self: EventCalls[JSON], type: str, payload: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Event: ...  # fmt: skip
    @overload
    def publish_event(
        self: EventCalls[Deferred], type: str, payload: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Awaitable[Event]: ...  # fmt: skip
    def publish_event(
        self, type: str, payload: Mapping[str, Any] | None = None, metadata: Mapping[str, Any] | None = None
    ) -> Any:
        """``POST /events``: only ``custom:*`` types; the server stamps the caller."""
        body = {"type": type, "payload": dict(payload or {}), "metadata": dict(metadata or {})}
        return self._call("POST", f"{API}/events", json=body, into=Event.parse)
