"""The event model (spec §2.2) and the event-type pattern language.

Patterns: a type is ``:``-separated segments (``workflow:step:start``). In a pattern, ``*`` as the *last*
segment matches one or more remaining segments (``agent:*`` matches ``agent:start`` and
``agent:tool:call``); ``*`` anywhere else matches exactly one segment (``workflow:*:start``); a lone ``*``
matches everything. Anything else matches literally.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from godel import __version__
from godel.core.clock import utcnow
from godel.core.ids import new_id


@dataclass(frozen=True)
class EventSource:
    component: str
    instance: str | None = None
    version: str | None = __version__


@dataclass(frozen=True)
class EventMetadata:
    correlation_id: str | None = None
    causation_id: str | None = None
    user_id: str | None = None
    agent_id: str | None = None
    team_id: str | None = None
    workflow_id: str | None = None
    trace_id: str | None = None


@dataclass(frozen=True)
class Event:
    type: str
    payload: dict[str, Any]
    source: EventSource
    metadata: EventMetadata = field(default_factory=EventMetadata)
    id: str = field(default_factory=new_id)
    timestamp: datetime = field(default_factory=utcnow)
    sequence: int | None = None  # assigned by the store at commit; None until persisted
    partition: str | None = None


def make_event(
    type_: str,
    payload: dict[str, Any] | None = None,
    *,
    component: str,
    agent_id: str | None = None,
    team_id: str | None = None,
    workflow_id: str | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    user_id: str | None = None,
) -> Event:
    return Event(
        type=type_,
        payload=payload or {},
        source=EventSource(component=component),
        metadata=EventMetadata(
            agent_id=agent_id,
            team_id=team_id,
            workflow_id=workflow_id,
            correlation_id=correlation_id,
            causation_id=causation_id,
            user_id=user_id,
        ),
    )


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.split(":"))


def matches(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    pat = _compile(pattern)
    segs = event_type.split(":")
    for i, p in enumerate(pat):
        last = i == len(pat) - 1
        if p == "*" and last:
            return len(segs) > i
        if i >= len(segs):
            return False
        if p != "*" and p != segs[i]:
            return False
    return len(segs) == len(pat)


def matches_any(patterns: Sequence[str] | None, event_type: str) -> bool:
    return not patterns or any(matches(p, event_type) for p in patterns)


def validate_pattern(pattern: str) -> str | None:
    """Return why a pattern is malformed, or None."""
    if not pattern:
        return "empty pattern"
    if any(seg == "" for seg in pattern.split(":")):
        return "empty segment (`::` or a leading/trailing `:`)"
    if any("*" in seg and seg != "*" for seg in pattern.split(":")):
        return "`*` must be a whole segment"
    return None


@dataclass(frozen=True)
class EventFilter:
    """Which events a subscriber or query wants besides its type patterns."""

    patterns: tuple[str, ...] = ()
    agent_id: str | None = None
    team_id: str | None = None
    workflow_id: str | None = None

    def accepts(self, event: Event) -> bool:
        md = event.metadata
        if self.agent_id is not None and md.agent_id != self.agent_id:
            return False
        if self.team_id is not None and md.team_id != self.team_id:
            return False
        if self.workflow_id is not None and md.workflow_id != self.workflow_id:
            return False
        return matches_any(self.patterns, event.type)


def sql_like_prefixes(patterns: Iterable[str]) -> list[str] | None:
    """For a store query: a literal prefix per pattern, or None when a pattern is ``*`` (match all)."""
    out = []
    for p in patterns:
        if p == "*":
            return None
        out.append(p.split("*", 1)[0])
    return out


def event_wire(e: Event) -> dict[str, Any]:
    """An event as it goes over the wire (the API, streams, webhooks): the spec's §2.2 shape, camelCase,
    the timestamp in milliseconds."""
    md = e.metadata
    return {
        "id": e.id,
        "type": e.type,
        "timestamp": int(e.timestamp.timestamp() * 1000),
        "source": {"component": e.source.component, "instance": e.source.instance, "version": e.source.version},
        "payload": e.payload,
        "metadata": {
            "correlationId": md.correlation_id,
            "causationId": md.causation_id,
            "userId": md.user_id,
            "agentId": md.agent_id,
            "teamId": md.team_id,
            "workflowId": md.workflow_id,
            "traceId": md.trace_id,
        },
        "sequence": e.sequence,
    }
