"""Agents: spawn, list, read, steer (kill, pause, resume, restart), logs, events, diffs, snapshots, forks."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, overload

from godel.client.calls import API, JSON, Calls, Deferred, R, agent_path, camelize
from godel.client.models import Agent, Event, LogLine, Page


class AgentCalls(Calls[R]):
    @overload
    def spawn_agent(self: AgentCalls[JSON], **fields: Any) -> Agent: ...
    @overload
    def spawn_agent(self: AgentCalls[Deferred], **fields: Any) -> Awaitable[Agent]: ...
    def spawn_agent(self, **fields: Any) -> Any:
        """``POST /agents``: keyword arguments in snake_case (``base_ref``, ``max_retries``…) or camelCase."""
        return self._call("POST", f"{API}/agents", json=camelize(fields), into=Agent.parse)

    @overload
    def list_agents(
        self: AgentCalls[JSON], *, status: str | None = None, team_id: str | None = None, label: str | None = None,
        model: str | None = None, limit: int | None = None, cursor: str | None = None,
    ) -> Page[Agent]: ...  # fmt: skip
    @overload
    def list_agents(
        self: AgentCalls[Deferred], *, status: str | None = None, team_id: str | None = None,
        label: str | None = None, model: str | None = None, limit: int | None = None, cursor: str | None = None,
    ) -> Awaitable[Page[Agent]]: ...  # fmt: skip
    def list_agents(
        self, *, status: str | None = None, team_id: str | None = None, label: str | None = None,
        model: str | None = None, limit: int | None = None, cursor: str | None = None,
    ) -> Any:  # fmt: skip
        """One page, newest first; ``iter_agents`` follows the cursor for you."""
        query = camelize(
            {"status": status, "team_id": team_id, "label": label, "model": model, "limit": limit, "cursor": cursor}
        )
        return self._call("GET", f"{API}/agents", params=query, into=Page.of(Agent))

    @overload
    def get_agent(self: AgentCalls[JSON], agent_id: str) -> Agent: ...
    @overload
    def get_agent(self: AgentCalls[Deferred], agent_id: str) -> Awaitable[Agent]: ...
    def get_agent(self, agent_id: str) -> Any:
        return self._call("GET", agent_path(agent_id), into=Agent.parse)

    def delete_agent(self, agent_id: str, force: bool = False) -> R:
        return self._call("DELETE", agent_path(agent_id), params={"force": True} if force else None)

    @overload
    def kill(self: AgentCalls[JSON], agent_id: str, reason: str | None = None) -> Agent: ...
    @overload
    def kill(self: AgentCalls[Deferred], agent_id: str, reason: str | None = None) -> Awaitable[Agent]: ...
    def kill(self, agent_id: str, reason: str | None = None) -> Any:
        return self._action(agent_id, "kill", reason)

    @overload
    def pause(self: AgentCalls[JSON], agent_id: str, reason: str | None = None) -> Agent: ...
    @overload
    def pause(self: AgentCalls[Deferred], agent_id: str, reason: str | None = None) -> Awaitable[Agent]: ...
    def pause(self, agent_id: str, reason: str | None = None) -> Any:
        return self._action(agent_id, "pause", reason)

    @overload
    def resume(
        self: AgentCalls[JSON], agent_id: str, reason: str | None = None, *, message: str | None = None
    ) -> Agent: ...
    @overload
    def resume(
        self: AgentCalls[Deferred], agent_id: str, reason: str | None = None, *, message: str | None = None
    ) -> Awaitable[Agent]: ...
    def resume(self, agent_id: str, reason: str | None = None, *, message: str | None = None) -> Any:
        """Continue a paused agent; with ``message``, continue an ended agent's CLI session with a follow-up."""
        body = camelize({"reason": reason, "message": message})
        return self._call("POST", agent_path(agent_id, "resume"), json=body, into=Agent.parse)

    @overload
    def restart(self: AgentCalls[JSON], agent_id: str, reason: str | None = None) -> Agent: ...
    @overload
    def restart(self: AgentCalls[Deferred], agent_id: str, reason: str | None = None) -> Awaitable[Agent]: ...
    def restart(self, agent_id: str, reason: str | None = None) -> Any:
        return self._action(agent_id, "restart", reason)

    def _action(self, agent_id: str, action: str, reason: str | None) -> R:
        return self._call("POST", agent_path(agent_id, action), json=camelize({"reason": reason}), into=Agent.parse)

    def sessions(self, agent_id: str) -> R:
        return self._call("GET", agent_path(agent_id, "sessions"))

    def transitions(self, agent_id: str) -> R:
        return self._call("GET", agent_path(agent_id, "transitions"))

    @overload
    def logs(
        self: AgentCalls[JSON], agent_id: str, *, tail: int | None = None, stream: str | None = None
    ) -> Page[LogLine]: ...
    @overload
    def logs(
        self: AgentCalls[Deferred], agent_id: str, *, tail: int | None = None, stream: str | None = None
    ) -> Awaitable[Page[LogLine]]: ...
    def logs(self, agent_id: str, *, tail: int | None = None, stream: str | None = None) -> Any:
        """The lines written so far (``follow_logs`` streams them as they come)."""
        query = camelize({"tail": tail, "stream": stream})
        return self._call("GET", agent_path(agent_id, "logs"), params=query, into=Page.of(LogLine))

    @overload
    def agent_events(
        self: AgentCalls[JSON], agent_id: str, *, since: int | None = None, type: str | None = None,
        limit: int | None = None,
    ) -> Page[Event]: ...  # fmt: skip
    @overload
    def agent_events(
        self: AgentCalls[Deferred], agent_id: str, *, since: int | None = None, type: str | None = None,
        limit: int | None = None,
    ) -> Awaitable[Page[Event]]: ...  # fmt: skip
    def agent_events(
        self, agent_id: str, *, since: int | None = None, type: str | None = None, limit: int | None = None
    ) -> Any:
        query = camelize({"since": since, "type": type, "limit": limit})
        return self._call("GET", agent_path(agent_id, "events"), params=query, into=Page.of(Event))

    def diff(self, agent_id: str) -> R:
        return self._call("GET", agent_path(agent_id, "diff"))

    def snapshots(self, agent_id: str) -> R:
        return self._call("GET", agent_path(agent_id, "snapshots"))

    def snapshot(self, agent_id: str, *, label: str | None = None) -> R:
        return self._call("POST", agent_path(agent_id, "snapshots"), json=camelize({"label": label}))

    def restore(self, agent_id: str, snapshot_id: str) -> R:
        return self._call("POST", agent_path(agent_id, "restore"), json={"snapshotId": snapshot_id}, into=Agent.parse)

    def fork(
        self,
        agent_id: str,
        *,
        snapshot_id: str | None = None,
        task: str | None = None,
        label: str | None = None,
        command: str | None = None,
        **fields: Any,
    ) -> R:
        """``POST /agents/{id}/fork``; extra keywords (``agent``, ``model``, ``priority``, ``timeout``,
        ``session_point``) pass through."""
        body = camelize({"snapshot_id": snapshot_id, "task": task, "label": label, "command": command, **fields})
        return self._call("POST", agent_path(agent_id, "fork"), json=body, into=Agent.parse)
