"""Teams of agents run by a strategy (docs/teams.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, overload
from urllib.parse import quote

from godel.client.calls import API, JSON, Calls, Deferred, R, camelize, patterns_param
from godel.client.models import Agent, Page, Team


def team_path(team_id: str, *rest: str) -> str:
    return "/".join((f"{API}/teams/{quote(team_id, safe='')}", *rest))


class TeamCalls(Calls[R]):
    @overload
    def create_team(self: TeamCalls[JSON], strategy: str, repo: str, **fields: Any) -> Team: ...
    @overload
    def create_team(self: TeamCalls[Deferred], strategy: str, repo: str, **fields: Any) -> Awaitable[Team]: ...
    def create_team(self, strategy: str, repo: str, **fields: Any) -> Any:
        """``POST /teams``: keyword arguments in snake_case (``task``, ``tasks``, ``stages``, ``size``, ``max_agents``,
        ``agent``, ``model``, ``command``, ``roles``, ``profiles``, ``retry_policy``, ``budget``, ``start``…)."""
        body = camelize({"strategy": strategy, "repo": repo, **fields})
        if isinstance(body.get("retryPolicy"), Mapping):
            body["retryPolicy"] = camelize(body["retryPolicy"])
        return self._call("POST", f"{API}/teams", json=body, into=Team.parse)

    @overload
    def list_teams(
        self: TeamCalls[JSON], *, status: str | Sequence[str] | None = None, limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Team]: ...  # fmt: skip
    @overload
    def list_teams(
        self: TeamCalls[Deferred], *, status: str | Sequence[str] | None = None, limit: int | None = None,
        cursor: str | None = None,
    ) -> Awaitable[Page[Team]]: ...  # fmt: skip
    def list_teams(
        self, *, status: str | Sequence[str] | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Any:
        query = camelize({"status": patterns_param(status), "limit": limit, "cursor": cursor})
        return self._call("GET", f"{API}/teams", params=query, into=Page.of(Team))

    @overload
    def get_team(self: TeamCalls[JSON], team_id: str) -> Team: ...
    @overload
    def get_team(self: TeamCalls[Deferred], team_id: str) -> Awaitable[Team]: ...
    def get_team(self, team_id: str) -> Any:
        return self._call("GET", team_path(team_id), into=Team.parse)

    def update_team(self, team_id: str, **fields: Any) -> R:
        """``PATCH /teams/{id}``: ``name``, ``description``, ``metadata``, ``max_agents``, ``budget``."""
        return self._call("PATCH", team_path(team_id), json=camelize(fields), into=Team.parse)

    def delete_team(self, team_id: str, *, force: bool = False) -> R:
        return self._call("DELETE", team_path(team_id), params={"force": "true"} if force else None)

    @overload
    def team_action(self: TeamCalls[JSON], team_id: str, action: str) -> Team: ...
    @overload
    def team_action(self: TeamCalls[Deferred], team_id: str, action: str) -> Awaitable[Team]: ...
    def team_action(self, team_id: str, action: str) -> Any:
        """``start``, ``pause``, ``resume`` or ``complete``."""
        return self._call("POST", team_path(team_id, quote(action, safe="")), into=Team.parse)

    def scale_team(self, team_id: str, size: int) -> R:
        return self._call("POST", team_path(team_id, "scale"), json={"size": size}, into=Team.parse)

    @overload
    def team_agents(self: TeamCalls[JSON], team_id: str) -> Page[Agent]: ...
    @overload
    def team_agents(self: TeamCalls[Deferred], team_id: str) -> Awaitable[Page[Agent]]: ...
    def team_agents(self, team_id: str) -> Any:
        return self._call("GET", team_path(team_id, "agents"), into=Page.of(Agent))

    def team_metrics(self, team_id: str) -> R:
        return self._call("GET", team_path(team_id, "metrics"))
