"""Request bodies (pydantic, camelCase on the wire, unknown fields refused) and the JSON shapes of entities.

Entity rendering is hand-written rather than pydantic response models: the shapes are the spec's, the
domain objects are plain dataclasses, and one function per entity keeps the wire format in one place.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from godel.core.events import Event, event_wire, validate_pattern
from godel.core.models import Agent, CleanupPolicy, Session, Snapshot, TransitionRecord
from godel.core.runs import RunContext
from godel.runtimes import isolation_of

MAX_INT64 = 2**63 - 1  # sequence numbers, cursors, ids: what a BIGINT column holds
TEXT_LIMIT = 100_000  # characters of a task, command or setup script (each travels as one argv string: 128 KiB)
NAME_LIMIT = 255
ENV_LIMIT = 1000  # variables in one spawn's ``env``
MAX_SECONDS = 365 * 86400.0  # a timeout or delay longer than a year is a mistake (and overflows datetimes)
MAX_USD = 1e9


def _bad_value(value: Any) -> str | None:
    """Why a value must not be accepted anywhere in a body: a NUL byte (no process argument, environment or
    PostgreSQL text can hold one) or a number that is not finite (JSON cannot render it back)."""
    if isinstance(value, str):
        return "must not contain a NUL byte" if "\0" in value else None
    if isinstance(value, float):
        return None if math.isfinite(value) else "must be a finite number"
    if isinstance(value, dict):
        for k, v in value.items():
            why = _bad_value(k) or _bad_value(v)
            if why:
                return why
    elif isinstance(value, (list, tuple)):
        for v in value:
            why = _bad_value(v)
            if why:
                return why
    return None


class Body(BaseModel):
    """Every request body: camelCase, unknown fields refused, numbers finite, no NUL byte in any string (free-form
    JSON values included)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _clean(cls, value: Any) -> Any:
        why = _bad_value(value)
        if why:
            raise ValueError(why)
        return value


def _expandable(text: str) -> str:
    try:
        Path(text).expanduser()
    except RuntimeError as exc:  # "~nosuchuser": no such user's home
        raise ValueError(f"cannot expand {text.split('/')[0]!r}: no such user") from exc
    return text


NonEmpty = Annotated[str, Field(min_length=1)]
Name = Annotated[str, Field(min_length=1, max_length=NAME_LIMIT)]
Text = Annotated[str, Field(min_length=1, max_length=TEXT_LIMIT)]
RepoPath = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_expandable)]
Priority = Annotated[int, Field(ge=-1_000_000, le=1_000_000)]
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS)]
Usd = Annotated[float, Field(ge=0, lt=MAX_USD)]
EnvName = Annotated[str, Field(min_length=1, max_length=NAME_LIMIT, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
EnvValue = Annotated[str, Field(max_length=TEXT_LIMIT)]
Env = Annotated[dict[EnvName, EnvValue], Field(max_length=ENV_LIMIT)]


class CreateAgent(Body):
    task: Text
    repo: RepoPath
    base_ref: Name = "HEAD"
    label: Annotated[str, Field(max_length=NAME_LIMIT)] | None = None
    team_id: Name | None = None
    agent: Annotated[str, Field(min_length=1, max_length=100)] = "command"
    command: Annotated[str, Field(max_length=TEXT_LIMIT)] | None = None
    model: Annotated[str, Field(max_length=NAME_LIMIT)] = ""
    priority: Priority = 0
    timeout: Seconds | None = None
    max_retries: Annotated[int, Field(ge=0, le=100)] = 0
    cleanup: CleanupPolicy = CleanupPolicy.MANUAL
    cleanup_delay: Annotated[float, Field(ge=0, le=MAX_SECONDS)] = 0.0
    setup: Annotated[str, Field(max_length=TEXT_LIMIT)] | None = None
    env: Env = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    budget_limit: Usd | None = None
    allow_subagents: bool = False  # the run's own API credential may spawn agents (which it then owns)


class Reason(Body):
    reason: Annotated[str, Field(max_length=10_000)] | None = None


class Resume(Body):
    reason: Annotated[str, Field(max_length=10_000)] | None = None
    message: Text | None = None  # a follow-up: continue the ended agent's session


class CreateSnapshot(Body):
    label: Annotated[str, Field(max_length=NAME_LIMIT)] | None = None
    include_ignored: bool = False  # ignored files too (build output, node_modules): a snapshot as large as they are


class Restore(Body):
    snapshot_id: Name


class Fork(Body):
    snapshot_id: Name | None = None
    session_point: Annotated[int, Field(ge=0, le=MAX_INT64)] | None = None
    task: Text | None = None
    label: Annotated[str, Field(max_length=NAME_LIMIT)] | None = None
    command: Annotated[str, Field(max_length=TEXT_LIMIT)] | None = None
    agent: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    model: Annotated[str, Field(max_length=NAME_LIMIT)] | None = None
    priority: Priority | None = None
    timeout: Seconds | None = None
    runtime: Annotated[str, Field(min_length=1, max_length=64)] | None = None  # run the fork in another runtime
    include_ignored: bool = False  # the fresh snapshot (when none is named) takes ignored files too


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
        # Where it runs (the spec's ``runtime`` is seconds of execution): the runtime and what it confines.
        "isolation": {"runtime": a.runtime_name, "level": isolation_of(a.runtime_name)},
        "retryCount": a.retry_count,
        "maxRetries": a.max_retries,
        "lastError": a.last_error,
        "nextAttemptAt": _t(a.next_attempt_at),
        "budgetLimit": a.budget_limit,
        "budgetConsumed": a.budget_consumed,
        "config": _redacted(a.config),
        # The limits every run of it is held to (spawn, team, server) and what its last run used (cgroups).
        "resources": {"limits": a.metadata.get("resourceLimits"), "usage": a.outcome.get("resources")},
        "metadata": {**a.metadata, "worktree": a.worktree, "snapshotFrom": a.snapshot_from},
        "owner": a.owner,
        "context": _run_context(a.context),
        "updatedAt": _t(a.updated_at),
    }


def _run_context(context: dict[str, Any] | None) -> dict[str, Any]:
    """What the API shows of an agent's run state (the route of models, the CLI session); not a fork's preamble."""
    ctx = RunContext.parse(context)
    return {
        "route": list(ctx.route),
        "routeIndex": ctx.route_index,
        "sessionId": ctx.session,
        "nativeSession": ctx.native_session,
        "followUp": ctx.prompt,
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
    return event_wire(e)


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
