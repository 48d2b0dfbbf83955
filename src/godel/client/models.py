"""Typed results for the main resources: ``Agent``, ``Event``, ``LogLine``, ``Team``, ``Workflow``, ``WorkflowStep``,
``Task``, and ``Page`` of them.

Each is the API's JSON object itself (a ``dict`` subclass) with typed, snake_case attributes over its camelCase
keys: ``agent.state``, ``agent.exit_code``, ``task.created_at`` (a ``datetime``). Staying a dict is deliberate: the
CLI prints ``--json`` as the API sent it, scripts written against the untyped client keep indexing
(``agent["id"]``), and a field the server adds later is there before this module names it. A key the server left
out reads as the attribute's default (``None`` for most) rather than raising.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")
R = TypeVar("R", bound="Resource")


class Field(Generic[T]):
    """``name = Field[str]("camelKey")``: reads ``self["camelKey"]``; typed for mypy, read-only."""

    def __init__(self, key: str, default: Any = None) -> None:
        self.key = key
        self.default = default

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Field[T]: ...
    @overload
    def __get__(self, obj: Resource, owner: type[Any]) -> T: ...
    def __get__(self, obj: Resource | None, owner: type[Any]) -> Field[T] | T:
        if obj is None:
            return self
        value = obj.get(self.key, self.default)
        return self.default if value is None else value


class Time(Field["datetime | None"]):
    """An ISO 8601 string in the JSON, a timezone-aware ``datetime`` (or ``None``) as an attribute."""

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Time: ...
    @overload
    def __get__(self, obj: Resource, owner: type[Any]) -> datetime | None: ...
    def __get__(self, obj: Resource | None, owner: type[Any]) -> Time | datetime | None:
        if obj is None:
            return self
        value = obj.get(self.key)
        return datetime.fromisoformat(value) if isinstance(value, str) else None


class Resource(dict[str, Any]):
    """One object of the API, as sent, with typed attributes (see the module's docstring)."""

    id = Field[str]("id", "")

    @classmethod
    def parse(cls: type[R], data: Any) -> R:
        return cls(data) if isinstance(data, Mapping) else cls()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"


class Agent(Resource):
    """``GET /api/v1/agents/{id}`` (docs/api.md): one agent and the state of its current run."""

    label = Field["str | None"]("label")
    team_id = Field["str | None"]("teamId")
    kind = Field["str | None"]("kind")  # the agent CLI: pi, claude, codex, aider, mini-swe-agent, gemini, command
    model = Field["str | None"]("model")
    task = Field[str]("task", "")
    state = Field[str]("state", "")  # pending, queued, starting, executing, paused, completed, failed, killed, …
    status = Field[str]("status", "")  # the spec's coarser status, derived from ``state``
    repo = Field["str | None"]("repo")
    branch = Field["str | None"]("branch")
    worktree = Field["str | None"]("worktree")
    commits = Field["list[str]"]("commits", [])
    priority = Field[int]("priority", 0)
    pid = Field["int | None"]("pid")
    exit_code = Field["int | None"]("exitCode")
    outcome = Field["str | None"]("outcome")
    last_error = Field["str | None"]("lastError")
    retry_count = Field[int]("retryCount", 0)
    max_retries = Field[int]("maxRetries", 0)
    owner = Field["str | None"]("owner")
    spawned_at = Time("spawnedAt")
    started_at = Time("startedAt")
    completed_at = Time("completedAt")
    updated_at = Time("updatedAt")

    @property
    def ended(self) -> bool:
        """Whether this snapshot shows the agent done: completed or killed, or failed with no retry left. (A
        fallback to the next model is the server's call: ``wait_agent`` asks the server instead.)"""
        if self.state in ("completed", "killed"):
            return True
        return self.state == "failed" and self.retry_count >= self.max_retries


class Event(Resource):
    """An event of the durable log (``GET /api/v1/events``, the SSE stream, the WebSocket): the spec's shape."""

    type = Field[str]("type", "")  # agent:state_changed, agent:log, team:completed, custom:…
    sequence = Field[int]("sequence", 0)  # store-assigned, gap-free: resume a stream from it
    payload = Field["dict[str, Any]"]("payload", {})
    metadata = Field["dict[str, Any]"]("metadata", {})

    @property
    def agent_id(self) -> str | None:
        return self.metadata.get("agentId")

    @property
    def team_id(self) -> str | None:
        return self.metadata.get("teamId")

    @property
    def timestamp(self) -> datetime | None:
        """Sent as milliseconds since the epoch."""
        ms = self.get("timestamp")
        return datetime.fromtimestamp(ms / 1000, UTC) if isinstance(ms, int | float) else None


class LogLine(Resource):
    """One line an agent wrote (``GET /api/v1/agents/{id}/logs``)."""

    sequence = Field["int | None"]("sequence")
    stream = Field["str | None"]("stream")  # stdout or stderr
    line = Field[str]("line", "")
    timestamp = Time("timestamp")


class Team(Resource):
    """A team of agents run by a strategy (docs/teams.md)."""

    name = Field["str | None"]("name")
    strategy = Field[str]("strategy", "")
    status = Field[str]("status", "")
    size = Field["int | None"]("size")
    progress = Field[int]("progress", 0)
    agent_ids = Field["list[str]"]("agentIds", [])
    result = Field[Any]("result")
    error = Field["str | None"]("error")
    owner = Field["str | None"]("owner")
    created_at = Time("createdAt")
    completed_at = Time("completedAt")


class WorkflowStep(Resource):
    """One step of a workflow: its ``id`` is the step's name in the file."""

    name = Field["str | None"]("name")
    status = Field[str]("status", "")  # pending, running, completed, failed, skipped, cancelled, …
    depends_on = Field["list[str]"]("dependsOn", [])
    agent_id = Field["str | None"]("agentId")
    output = Field[Any]("output")
    branch = Field["str | None"]("branch")
    error = Field["str | None"]("error")


class Workflow(Resource):
    """A DAG run (docs/workflows.md); ``steps`` only where the answer carries them (one workflow, not a listing)."""

    name = Field[str]("name", "")
    status = Field[str]("status", "")
    repo = Field["str | None"]("repo")
    progress = Field["int | None"]("progress")
    team_id = Field["str | None"]("teamId")
    created_at = Time("createdAt")
    completed_at = Time("completedAt")

    @property
    def steps(self) -> list[WorkflowStep]:
        return [WorkflowStep.parse(s) for s in self.get("steps") or []]


class Task(Resource):
    """A task of the durable queue (docs/tasks.md)."""

    title = Field[str]("title", "")
    description = Field["str | None"]("description")
    priority = Field[int]("priority", 0)
    status = Field[str]("status", "")  # pending, assigned, running, completed, failed, dead, cancelled
    agent_id = Field["str | None"]("agentId")
    team_id = Field["str | None"]("teamId")
    attempts = Field[int]("attempts", 0)
    max_attempts = Field["int | None"]("maxAttempts")
    result = Field[Any]("result")
    last_error = Field["str | None"]("lastError")
    created_at = Time("createdAt")
    completed_at = Time("completedAt")


class Page(dict[str, Any], Generic[R]):
    """A page of a listing: ``{"items": […], "pagination": {"cursor", "hasMore", …}}``, its items typed.

    The typed items are ``results`` (``items`` is the ``dict`` method, which ``json.dumps`` relies on)."""

    def __init__(self, data: Mapping[str, Any], kind: type[R]) -> None:
        super().__init__(data)
        self["items"] = [kind.parse(item) for item in data.get("items") or []]

    @property
    def results(self) -> list[R]:
        return list(self["items"])

    @property
    def cursor(self) -> str | None:
        pagination = self.get("pagination") or {}
        return pagination.get("cursor")

    @property
    def has_more(self) -> bool:
        return bool((self.get("pagination") or {}).get("hasMore"))

    @staticmethod
    def of(kind: type[R]) -> Callable[[Any], Page[R]]:
        """The parser of a page of ``kind`` (what ``_call(into=…)`` takes)."""
        return lambda data: Page(data if isinstance(data, Mapping) else {}, kind)


def optional(kind: type[R]) -> Callable[[Any], R | None]:
    """For answers that are an object or ``null`` (claiming from an empty queue)."""
    return lambda data: None if data is None else kind.parse(data)
