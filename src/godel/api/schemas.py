"""Request bodies (pydantic, camelCase on the wire, unknown fields refused) and the JSON shapes of entities.

Entity rendering is hand-written rather than pydantic response models: the shapes are the spec's, the
domain objects are plain dataclasses, and one function per entity keeps the wire format in one place.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from godel.core.events import Event, validate_pattern
from godel.core.models import Agent, CleanupPolicy, Session, Snapshot, TransitionRecord


class Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


NonEmpty = Annotated[str, Field(min_length=1)]
Priority = Annotated[int, Field(ge=-1_000_000, le=1_000_000)]


class CreateAgent(Body):
    task: NonEmpty
    repo: NonEmpty
    base_ref: NonEmpty = "HEAD"
    label: Annotated[str, Field(max_length=255)] | None = None
    team_id: str | None = None
    agent: NonEmpty = "command"
    command: str | None = None
    model: str = ""
    priority: Priority = 0
    timeout: Annotated[float, Field(gt=0)] | None = None
    max_retries: Annotated[int, Field(ge=0, le=100)] = 0
    cleanup: CleanupPolicy = CleanupPolicy.MANUAL
    cleanup_delay: Annotated[float, Field(ge=0)] = 0.0
    setup: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    budget_limit: Annotated[float, Field(ge=0)] | None = None


class Reason(Body):
    reason: str | None = None


class Resume(Body):
    reason: str | None = None
    message: Annotated[str, Field(min_length=1)] | None = None  # a follow-up: continue the ended agent's session


class CreateSnapshot(Body):
    label: Annotated[str, Field(max_length=255)] | None = None


class Restore(Body):
    snapshot_id: NonEmpty


class Fork(Body):
    snapshot_id: str | None = None
    session_point: Annotated[int, Field(ge=0)] | None = None
    task: str | None = None
    label: str | None = None
    command: str | None = None
    agent: str | None = None
    model: str | None = None
    priority: Priority | None = None
    timeout: Annotated[float, Field(gt=0)] | None = None


class PublishEvent(Body):
    type: Annotated[str, Field(min_length=3, max_length=100, pattern=r"^[a-z0-9_.-]+(:[a-z0-9_.-]+)+$")]
    payload: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)


def pattern_error(patterns: list[str]) -> str | None:
    for p in patterns:
        why = validate_pattern(p)
        if why:
            return f"{p!r}: {why}"
    return None


def _t(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def agent_json(a: Agent) -> dict[str, Any]:
    return {
        "id": a.id,
        "label": a.label,
        "teamId": a.team_id,
        "kind": a.kind,
        "model": a.model,
        "task": a.task,
        "status": a.status.value,
        "lifecycleState": a.lifecycle_state.value,
        "state": a.state.value,
        "repo": a.repo,
        "baseRef": a.base_ref,
        "baseCommit": a.base_commit,
        "branch": a.branch,
        "worktree": a.worktree,
        "commits": a.commits,
        "priority": a.priority,
        "timeout": a.timeout,
        "cleanup": a.cleanup.value,
        "cleanupDelay": a.cleanup_delay,
        "setup": a.setup,
        "nodeId": a.node_id,
        "pid": a.pid,
        "exitCode": a.exit_code,
        "outcome": a.outcome,
        "spawnedAt": _t(a.spawned_at),
        "startedAt": _t(a.started_at),
        "completedAt": _t(a.completed_at),
        "pauseTime": _t(a.pause_time),
        "pausedBy": a.paused_by,
        "runtime": a.runtime,
        "retryCount": a.retry_count,
        "maxRetries": a.max_retries,
        "lastError": a.last_error,
        "nextAttemptAt": _t(a.next_attempt_at),
        "budgetLimit": a.budget_limit,
        "budgetConsumed": a.budget_consumed,
        "config": _redacted(a.config),
        "metadata": {**a.metadata, "worktree": a.worktree, "snapshotFrom": a.snapshot_from},
        "context": _run_context(a.context),
        "updatedAt": _t(a.updated_at),
    }


def _run_context(context: dict[str, Any] | None) -> dict[str, Any]:
    """What the API shows of an agent's run state (the route of models, the CLI session); not a fork's preamble."""
    ctx = context or {}
    return {
        "route": ctx.get("route", []),
        "routeIndex": ctx.get("routeIndex", 0),
        "sessionId": ctx.get("session"),
        "nativeSession": ctx.get("nativeSession"),
        "followUp": ctx.get("prompt"),
    }


def session_json(s: Session) -> dict[str, Any]:
    ctx = s.context
    return {
        "id": s.id,
        "agentId": s.agent_id,
        "parentId": s.parent_id,
        "status": s.status.value,
        "depth": s.depth,
        "prompt": ctx.get("prompt"),
        "attempt": ctx.get("attempt"),
        "model": ctx.get("model"),
        "resumes": ctx.get("resumes"),
        "nativeSession": ctx.get("nativeSession"),
        "usage": ctx.get("usage", {}),
        "result": ctx.get("result"),
        "outcome": ctx.get("outcome"),
        "messages": ctx.get("messages", []),
        "createdAt": _t(s.created_at),
        "completedAt": _t(s.completed_at),
    }


REDACTED = "<redacted>"


def _redacted(config: dict[str, Any]) -> dict[str, Any]:
    """Environment values given at spawn may be secrets: the API shows their names, never their values."""
    env = config.get("env")
    if not isinstance(env, dict) or not env:
        return config
    return {**config, "env": dict.fromkeys(env, REDACTED)}


def event_json(e: Event) -> dict[str, Any]:
    md = e.metadata
    return {
        "id": e.id,
        "type": e.type,
        "timestamp": int(e.timestamp.timestamp() * 1000),
        "source": {
            "component": e.source.component,
            "instance": e.source.instance,
            "version": e.source.version,
        },
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


def log_json(e: Event) -> dict[str, Any]:
    return {
        "sequence": e.sequence,
        "timestamp": _t(e.timestamp),
        "stream": e.payload.get("stream"),
        "line": e.payload.get("line"),
    }


def snapshot_json(s: Snapshot) -> dict[str, Any]:
    return {
        "id": s.id,
        "agentId": s.agent_id,
        "ref": s.ref,
        "commit": s.commit,
        "parentCommit": s.parent_commit,
        "label": s.label,
        "createdAt": _t(s.created_at),
    }


def transition_json(t: TransitionRecord) -> dict[str, Any]:
    return {
        "fromState": t.from_state.value,
        "toState": t.to_state.value,
        "trigger": t.trigger,
        "actor": t.actor,
        "reason": t.reason,
        "at": _t(t.at),
        "eventSequence": t.event_sequence,
    }


def ok(data: Any) -> dict[str, Any]:
    return {"success": True, "data": data}


def page(items: list[Any], *, limit: int, cursor: str | None, has_more: bool) -> dict[str, Any]:
    return ok({"items": items, "pagination": {"limit": limit, "cursor": cursor, "hasMore": has_more}})
