"""The durable task queue: create, list, claim, and move a task along (docs/tasks.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, overload
from urllib.parse import quote

from godel.client.calls import API, JSON, Calls, Deferred, R, camelize, patterns_param
from godel.client.models import Agent, Page, Task, optional


def task_path(task_id: str, *rest: str) -> str:
    return "/".join((f"{API}/tasks/{quote(task_id, safe='')}", *rest))


class TaskCalls(Calls[R]):
    @overload
    def create_task(
        self: TaskCalls[JSON], title: str, *, description: str | None = None, priority: int | None = None,
        max_attempts: int | None = None, agent_id: str | None = None, team_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Task: ...  # fmt: skip
    @overload
    def create_task(
        self: TaskCalls[Deferred], title: str, *, description: str | None = None, priority: int | None = None,
        max_attempts: int | None = None, agent_id: str | None = None, team_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Awaitable[Task]: ...  # fmt: skip
    def create_task(
        self, title: str, *, description: str | None = None, priority: int | None = None,
        max_attempts: int | None = None, agent_id: str | None = None, team_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:  # fmt: skip
        """``POST /tasks``: a pending task; priority from -1000 to 1000 (higher is taken first)."""
        body = camelize(
            {
                "title": title,
                "description": description,
                "priority": priority,
                "max_attempts": max_attempts,
                "agent_id": agent_id,
                "team_id": team_id,
                "metadata": dict(metadata) if metadata is not None else None,
            }
        )
        return self._call("POST", f"{API}/tasks", json=body, into=Task.parse)

    @overload
    def list_tasks(
        self: TaskCalls[JSON], *, status: str | Sequence[str] | None = None, agent_id: str | None = None,
        team_id: str | None = None, dead: bool | None = None, limit: int | None = None, cursor: str | None = None,
    ) -> Page[Task]: ...  # fmt: skip
    @overload
    def list_tasks(
        self: TaskCalls[Deferred], *, status: str | Sequence[str] | None = None, agent_id: str | None = None,
        team_id: str | None = None, dead: bool | None = None, limit: int | None = None, cursor: str | None = None,
    ) -> Awaitable[Page[Task]]: ...  # fmt: skip
    def list_tasks(
        self, *, status: str | Sequence[str] | None = None, agent_id: str | None = None, team_id: str | None = None,
        dead: bool | None = None, limit: int | None = None, cursor: str | None = None,
    ) -> Any:  # fmt: skip
        """``GET /tasks``: highest priority first; ``dead=True`` is the dead-letter list."""
        query = camelize(
            {
                "status": patterns_param(status),
                "agent_id": agent_id,
                "team_id": team_id,
                "dead": dead,
                "limit": limit,
                "cursor": cursor,
            }
        )
        return self._call("GET", f"{API}/tasks", params=query, into=Page.of(Task))

    @overload
    def get_task(self: TaskCalls[JSON], task_id: str) -> Task: ...
    @overload
    def get_task(self: TaskCalls[Deferred], task_id: str) -> Awaitable[Task]: ...
    def get_task(self, task_id: str) -> Any:
        return self._call("GET", task_path(task_id), into=Task.parse)

    def task_stats(self) -> R:
        return self._call("GET", f"{API}/tasks/stats")

    def assign_task(self, task_id: str, *, agent_id: str | None = None, team_id: str | None = None) -> R:
        body = camelize({"agent_id": agent_id, "team_id": team_id})
        return self._call("POST", task_path(task_id, "assign"), json=body, into=Task.parse)

    @overload
    def claim_task(
        self: TaskCalls[JSON], *, agent_id: str | None = None, team_id: str | None = None
    ) -> Task | None: ...
    @overload
    def claim_task(
        self: TaskCalls[Deferred], *, agent_id: str | None = None, team_id: str | None = None
    ) -> Awaitable[Task | None]: ...
    def claim_task(self, *, agent_id: str | None = None, team_id: str | None = None) -> Any:
        """``POST /tasks/claim``: the next task for this agent or team, now assigned to it (None: queue empty)."""
        body = camelize({"agent_id": agent_id, "team_id": team_id})
        return self._call("POST", f"{API}/tasks/claim", json=body, into=optional(Task))

    def spawn_for_task(self, task_id: str, **fields: Any) -> R:
        """``POST /tasks/{id}/spawn``: an agent for a pending task, which holds it and settles it when it ends.
        Keyword arguments as for ``spawn_agent`` (``repo``, ``agent``, ``command``…), without ``task``: the
        agent's task is the queued task's. Answers ``{"task": Task, "agent": Agent}``; a task that is not pending
        is a ``ConflictError`` and no agent is spawned."""
        return self._call("POST", task_path(task_id, "spawn"), json=camelize(fields), into=_spawned)

    def start_task(self, task_id: str, *, agent_id: str | None = None) -> R:
        return self._call("POST", task_path(task_id, "start"), json=camelize({"agent_id": agent_id}), into=Task.parse)

    def complete_task(self, task_id: str, result: Mapping[str, Any] | None = None) -> R:
        body = {"result": dict(result)} if result is not None else {}
        return self._call("POST", task_path(task_id, "complete"), json=body, into=Task.parse)

    def fail_task(self, task_id: str, error: str, *, retry: bool | None = None) -> R:
        """``POST /tasks/{id}/fail``: requeued while attempts remain, else dead; ``retry=False``: failed now."""
        body = camelize({"error": error, "retry": retry})
        return self._call("POST", task_path(task_id, "fail"), json=body, into=Task.parse)

    def retry_task(self, task_id: str) -> R:
        """``POST /tasks/{id}/retry``: requeue a dead (or failed) task."""
        return self._call("POST", task_path(task_id, "retry"), into=Task.parse)

    def cancel_task(self, task_id: str, reason: str | None = None) -> R:
        return self._call("POST", task_path(task_id, "cancel"), json=camelize({"reason": reason}), into=Task.parse)

    def delete_task(self, task_id: str, *, force: bool = False) -> R:
        return self._call("DELETE", task_path(task_id), params={"force": "true"} if force else None)


def _spawned(data: Any) -> dict[str, Any]:
    return {"task": Task.parse(data["task"]), "agent": Agent.parse(data["agent"])}
