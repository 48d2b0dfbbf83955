"""The API of docs/api.md, written once for both clients.

Each method only says which request it is; ``_call`` sends it. ``GodelClient`` is ``Endpoints[dict]`` (its
``_call`` blocks and returns the data) and ``AsyncGodelClient`` is ``Endpoints[Awaitable[dict]]`` (its
``_call`` is a coroutine), so the request table is not duplicated and both stay typed. Methods return the
envelope's ``data`` untouched; streams and cursor-following live in the concrete clients.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

R = TypeVar("R")
JSON = dict[str, Any]

API = "/api/v1"


def camelize(fields: Mapping[str, Any]) -> JSON:
    """Top-level ``snake_case`` keys to the API's ``camelCase``; ``None`` means "not given" and is dropped."""
    out: JSON = {}
    for key, value in fields.items():
        if value is None:
            continue
        head, *rest = key.split("_")
        out[head + "".join(part[:1].upper() + part[1:] for part in rest)] = value
    return out


def agent_path(agent_id: str, *rest: str) -> str:
    # Quoted so that a stray "/" in an id cannot reach another route.
    return "/".join((f"{API}/agents/{quote(agent_id, safe='')}", *rest))


def iso_param(value: str | datetime | None) -> str | None:
    """A time for a query string: a ``datetime`` (a naive one is taken as UTC) as ISO 8601, a string as given."""
    if value is None or isinstance(value, str):
        return value
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def patterns_param(patterns: str | Sequence[str] | None) -> list[str] | None:
    if patterns is None:
        return None
    return [patterns] if isinstance(patterns, str) else list(patterns)


class Endpoints(ABC, Generic[R]):
    """Every request, once; the sync and async clients supply ``_call`` (which returns a value or an awaitable)."""

    @abstractmethod
    def _call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None) -> R: ...

    # Agents
    def spawn_agent(self, **fields: Any) -> R:
        """``POST /agents``: keyword arguments in snake_case (``base_ref``, ``max_retries``…) or camelCase."""
        return self._call("POST", f"{API}/agents", json=camelize(fields))

    def list_agents(
        self,
        *,
        status: str | None = None,
        team_id: str | None = None,
        label: str | None = None,
        model: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> R:
        query = camelize(
            {
                "status": status,
                "team_id": team_id,
                "label": label,
                "model": model,
                "limit": limit,
                "cursor": cursor,
            }
        )
        return self._call("GET", f"{API}/agents", params=query)

    def get_agent(self, agent_id: str) -> R:
        return self._call("GET", agent_path(agent_id))

    def delete_agent(self, agent_id: str, force: bool = False) -> R:
        return self._call("DELETE", agent_path(agent_id), params={"force": True} if force else None)

    def kill(self, agent_id: str, reason: str | None = None) -> R:
        return self._action(agent_id, "kill", reason)

    def pause(self, agent_id: str, reason: str | None = None) -> R:
        return self._action(agent_id, "pause", reason)

    def resume(self, agent_id: str, reason: str | None = None, *, message: str | None = None) -> R:
        """Continue a paused agent; with ``message``, continue an ended agent's CLI session with a follow-up."""
        body = camelize({"reason": reason, "message": message})
        return self._call("POST", agent_path(agent_id, "resume"), json=body)

    def sessions(self, agent_id: str) -> R:
        return self._call("GET", agent_path(agent_id, "sessions"))

    def restart(self, agent_id: str, reason: str | None = None) -> R:
        return self._action(agent_id, "restart", reason)

    def _action(self, agent_id: str, action: str, reason: str | None) -> R:
        return self._call("POST", agent_path(agent_id, action), json=camelize({"reason": reason}))

    def transitions(self, agent_id: str) -> R:
        return self._call("GET", agent_path(agent_id, "transitions"))

    def logs(self, agent_id: str, *, tail: int | None = None, stream: str | None = None) -> R:
        return self._call("GET", agent_path(agent_id, "logs"), params=camelize({"tail": tail, "stream": stream}))

    def agent_events(
        self, agent_id: str, *, since: int | None = None, type: str | None = None, limit: int | None = None
    ) -> R:
        query = camelize({"since": since, "type": type, "limit": limit})
        return self._call("GET", agent_path(agent_id, "events"), params=query)

    def diff(self, agent_id: str) -> R:
        return self._call("GET", agent_path(agent_id, "diff"))

    def snapshots(self, agent_id: str) -> R:
        return self._call("GET", agent_path(agent_id, "snapshots"))

    def snapshot(self, agent_id: str, *, label: str | None = None) -> R:
        return self._call("POST", agent_path(agent_id, "snapshots"), json=camelize({"label": label}))

    def restore(self, agent_id: str, snapshot_id: str) -> R:
        return self._call("POST", agent_path(agent_id, "restore"), json={"snapshotId": snapshot_id})

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
        return self._call("POST", agent_path(agent_id, "fork"), json=body)

    # Events
    def events(
        self,
        *,
        type: str | Sequence[str] | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        since: int | None = None,
        after: str | None = None,
        before: str | None = None,
        limit: int | None = None,
    ) -> R:
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
        return self._call("GET", f"{API}/events", params=query)

    def get_event(self, event_id: str) -> R:
        return self._call("GET", f"{API}/events/{quote(event_id, safe='')}")

    def publish_event(
        self, type: str, payload: Mapping[str, Any] | None = None, metadata: Mapping[str, Any] | None = None
    ) -> R:
        body = {"type": type, "payload": dict(payload or {}), "metadata": dict(metadata or {})}
        return self._call("POST", f"{API}/events", json=body)

    # Gateway: virtual keys, usage, budgets
    def create_key(
        self,
        scope: str,
        scope_id: str,
        *,
        models: Sequence[str] | None = None,
        expires_in: float | None = None,
    ) -> R:
        """``POST /keys``: a key for one agent, team or user (``scope``); the answer's ``key`` is its text, shown
        only this once. No ``models``: every configured model; no ``expires_in`` (seconds): it never expires."""
        body = camelize(
            {
                "scope": scope,
                "id": scope_id,
                "models": list(models) if models is not None else None,
                "expires_in": expires_in,
            }
        )
        return self._call("POST", f"{API}/keys", json=body)

    def list_keys(self, *, scope: str | None = None, scope_id: str | None = None, revoked: bool | None = None) -> R:
        """``GET /keys``: live keys, or with ``revoked=True`` revoked ones too (never their text)."""
        return self._call("GET", f"{API}/keys", params=camelize({"scope": scope, "id": scope_id, "revoked": revoked}))

    def revoke_key(self, key_id: str) -> R:
        return self._call("DELETE", f"{API}/keys/{quote(key_id, safe='')}")

    def usage(
        self,
        *,
        by: str | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
    ) -> R:
        """``GET /usage``: requests, tokens and USD summed by ``agent``, ``team``, ``user``, ``model`` or ``day``."""
        query = camelize({"by": by, "since": iso_param(since), "until": iso_param(until)})
        return self._call("GET", f"{API}/usage", params=query)

    def set_budget(self, scope: str, scope_id: str, *, usd: float, period: str | None = None) -> R:
        """``PUT /budgets``: the USD limit of one agent, team or user per ``daily``, ``monthly`` or ``total``."""
        body = camelize({"scope": scope, "id": scope_id, "usd": usd, "period": period})
        return self._call("PUT", f"{API}/budgets", json=body)

    def budgets(self, *, scope: str | None = None, scope_id: str | None = None) -> R:
        return self._call("GET", f"{API}/budgets", params=camelize({"scope": scope, "id": scope_id}))

    def delete_budget(self, budget_id: str) -> R:
        return self._call("DELETE", f"{API}/budgets/{quote(budget_id, safe='')}")

    # Who may call: sessions, users, their API keys, roles, the audit log
    def login(self, username: str, password: str) -> R:
        """``POST /auth/login``: an access token (15 minutes) and a refresh token."""
        return self._call("POST", "/auth/login", json={"username": username, "password": password})

    def me(self) -> R:
        """``GET /auth/me``: who this client is, with its roles and permissions."""
        return self._call("GET", "/auth/me")

    def create_user(
        self, name: str, *, roles: Sequence[str] | None = None, team: str | None = None, password: str | None = None
    ) -> R:
        body = camelize({"name": name, "roles": list(roles) if roles is not None else None, "team": team,
                         "password": password})  # fmt: skip
        return self._call("POST", f"{API}/users", json=body)

    def list_users(self) -> R:
        return self._call("GET", f"{API}/users")

    def get_user(self, name: str) -> R:
        return self._call("GET", f"{API}/users/{quote(name, safe='')}")

    def update_user(self, name: str, **changes: Any) -> R:
        """``PATCH /users/NAME``: ``roles``, ``team``, ``password``, ``disabled``."""
        return self._call("PATCH", f"{API}/users/{quote(name, safe='')}", json=camelize(changes))

    def delete_user(self, name: str) -> R:
        return self._call("DELETE", f"{API}/users/{quote(name, safe='')}")

    def create_api_key(self, user: str, *, name: str | None = None, expires_in: float | None = None) -> R:
        """``POST /users/NAME/api-keys``: an API key (``godel_sk_…``) for calling Godel's API as that user; the
        answer's ``key`` is its text, shown only this once."""
        body = camelize({"name": name, "expires_in": expires_in})
        return self._call("POST", f"{API}/users/{quote(user, safe='')}/api-keys", json=body)

    def list_api_keys(self, user: str, *, revoked: bool | None = None) -> R:
        return self._call("GET", f"{API}/users/{quote(user, safe='')}/api-keys", params=camelize({"revoked": revoked}))

    def revoke_api_key(self, user: str, key_id: str) -> R:
        return self._call("DELETE", f"{API}/users/{quote(user, safe='')}/api-keys/{quote(key_id, safe='')}")

    def list_roles(self) -> R:
        return self._call("GET", f"{API}/roles")

    def set_role(self, name: str, permissions: Sequence[str], description: str | None = None) -> R:
        body = camelize({"permissions": list(permissions), "description": description})
        return self._call("PUT", f"{API}/roles/{quote(name, safe='')}", json=body)

    def delete_role(self, name: str) -> R:
        return self._call("DELETE", f"{API}/roles/{quote(name, safe='')}")

    def audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        before: int | None = None,
        limit: int | None = None,
    ) -> R:
        """``GET /audit``: newest first; page with ``before`` (the last row's ``seq``)."""
        query = camelize({"actor": actor, "action": action, "before": before, "limit": limit})
        return self._call("GET", f"{API}/audit", params=query)

    def verify_audit(self) -> R:
        """``GET /audit/verify``: walks the hash chain; ``firstBadSeq`` names the first row that was altered."""
        return self._call("GET", f"{API}/audit/verify")

    # Health
    def health(self) -> R:
        return self._call("GET", "/health")

    def health_ready(self) -> R:
        return self._call("GET", "/health/ready")

    def health_detailed(self) -> R:
        return self._call("GET", "/health/detailed")

    def capabilities(self) -> R:
        return self._call("GET", "/capabilities")

    # Tasks: the durable queue
    def create_task(
        self,
        title: str,
        *,
        description: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> R:
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
        return self._call("POST", f"{API}/tasks", json=body)

    def list_tasks(
        self,
        *,
        status: str | Sequence[str] | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        dead: bool | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> R:
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
        return self._call("GET", f"{API}/tasks", params=query)

    def get_task(self, task_id: str) -> R:
        return self._call("GET", task_path(task_id))

    def task_stats(self) -> R:
        return self._call("GET", f"{API}/tasks/stats")

    def assign_task(self, task_id: str, *, agent_id: str | None = None, team_id: str | None = None) -> R:
        body = camelize({"agent_id": agent_id, "team_id": team_id})
        return self._call("POST", task_path(task_id, "assign"), json=body)

    def claim_task(self, *, agent_id: str | None = None, team_id: str | None = None) -> R:
        """``POST /tasks/claim``: the next task for this agent or team, now assigned to it (None: queue empty)."""
        return self._call("POST", f"{API}/tasks/claim", json=camelize({"agent_id": agent_id, "team_id": team_id}))

    def start_task(self, task_id: str, *, agent_id: str | None = None) -> R:
        return self._call("POST", task_path(task_id, "start"), json=camelize({"agent_id": agent_id}))

    def complete_task(self, task_id: str, result: Mapping[str, Any] | None = None) -> R:
        body = {"result": dict(result)} if result is not None else {}
        return self._call("POST", task_path(task_id, "complete"), json=body)

    def fail_task(self, task_id: str, error: str, *, retry: bool | None = None) -> R:
        """``POST /tasks/{id}/fail``: requeued while attempts remain, else dead; ``retry=False``: failed now."""
        return self._call("POST", task_path(task_id, "fail"), json=camelize({"error": error, "retry": retry}))

    def retry_task(self, task_id: str) -> R:
        """``POST /tasks/{id}/retry``: requeue a dead (or failed) task."""
        return self._call("POST", task_path(task_id, "retry"))

    def cancel_task(self, task_id: str, reason: str | None = None) -> R:
        return self._call("POST", task_path(task_id, "cancel"), json=camelize({"reason": reason}))

    def delete_task(self, task_id: str, *, force: bool = False) -> R:
        return self._call("DELETE", task_path(task_id), params={"force": "true"} if force else None)

    # Merge queue
    def merge(
        self,
        repo: str,
        into: str,
        branches: Sequence[str] | None = None,
        *,
        team_id: str | None = None,
        workflow_id: str | None = None,
        base: str | None = None,
        verify: str | None = None,
        verify_timeout: float | None = None,
        batch: bool | None = None,
        resolve: str | None = None,
        refinery_agent: str | None = None,
        refinery_model: str | None = None,
    ) -> R:
        """``POST /merges``: merge ``branches`` (or a team's or a workflow's agent branches) into ``into``, each
        behind the ``verify`` command; answers 202 with the job, to follow with ``get_merge``. A conflict goes to
        the ``resolve`` command, or to a refinery agent of kind ``refinery_agent``."""
        refinery = {"agent": refinery_agent, "model": refinery_model or ""} if refinery_agent else None
        body = camelize(
            {
                "repo": repo,
                "into": into,
                "branches": list(branches) if branches else None,
                "team_id": team_id,
                "workflow_id": workflow_id,
                "base": base,
                "verify": verify,
                "verify_timeout": verify_timeout,
                "batch": batch,
                "resolve": resolve,
                "refinery": refinery,
            }
        )
        return self._call("POST", f"{API}/merges", json=body)

    def submit_workflow(
        self,
        source: str,
        *,
        repo: str,
        base_ref: str | None = None,
        variables: Mapping[str, Any] | None = None,
        filename: str | None = None,
        team_id: str | None = None,
        start: bool | None = None,
    ) -> R:
        """Submit a workflow file's text (YAML or JSON); invalid files come back with every error's line."""
        body = camelize({"source": source, "repo": repo, "base_ref": base_ref, "variables": variables,
                         "filename": filename, "team_id": team_id, "start": start})  # fmt: skip
        return self._call("POST", f"{API}/workflows", json=body)

    def list_workflows(
        self, *, status: str | Sequence[str] | None = None, limit: int | None = None, cursor: str | None = None
    ) -> R:
        statuses = [status] if isinstance(status, str) else list(status) if status else None
        return self._call("GET", f"{API}/workflows", params=camelize({"status": statuses, "limit": limit,
                                                                      "cursor": cursor}))  # fmt: skip

    def get_workflow(self, workflow_id: str) -> R:
        return self._call("GET", f"{API}/workflows/{quote(workflow_id, safe='')}")

    def delete_workflow(self, workflow_id: str, *, force: bool = False) -> R:
        return self._call("DELETE", f"{API}/workflows/{quote(workflow_id, safe='')}",
                          params={"force": "true"} if force else None)  # fmt: skip

    def workflow_action(self, workflow_id: str, action: str) -> R:
        """``start``, ``pause``, ``resume`` or ``cancel``."""
        return self._call("POST", f"{API}/workflows/{quote(workflow_id, safe='')}/{quote(action, safe='')}")

    def get_merge(self, merge_id: str) -> R:
        return self._call("GET", f"{API}/merges/{quote(merge_id, safe='')}")

    def list_merges(self, *, limit: int | None = None) -> R:
        return self._call("GET", f"{API}/merges", params=camelize({"limit": limit}))

    # Teams (docs/teams.md)
    def create_team(self, strategy: str, repo: str, **fields: Any) -> R:
        """``POST /teams``: keyword arguments in snake_case (``task``, ``tasks``, ``stages``, ``size``, ``max_agents``,
        ``agent``, ``model``, ``command``, ``roles``, ``profiles``, ``retry_policy``, ``budget``, ``start``…)."""
        body = camelize({"strategy": strategy, "repo": repo, **fields})
        if isinstance(body.get("retryPolicy"), Mapping):
            body["retryPolicy"] = camelize(body["retryPolicy"])
        return self._call("POST", f"{API}/teams", json=body)

    def list_teams(
        self, *, status: str | Sequence[str] | None = None, limit: int | None = None, cursor: str | None = None
    ) -> R:
        query = camelize({"status": patterns_param(status), "limit": limit, "cursor": cursor})
        return self._call("GET", f"{API}/teams", params=query)

    def get_team(self, team_id: str) -> R:
        return self._call("GET", team_path(team_id))

    def update_team(self, team_id: str, **fields: Any) -> R:
        """``PATCH /teams/{id}``: ``name``, ``description``, ``metadata``, ``max_agents``, ``budget``."""
        return self._call("PATCH", team_path(team_id), json=camelize(fields))

    def delete_team(self, team_id: str, *, force: bool = False) -> R:
        return self._call("DELETE", team_path(team_id), params={"force": "true"} if force else None)

    def team_action(self, team_id: str, action: str) -> R:
        """``start``, ``pause``, ``resume`` or ``complete``."""
        return self._call("POST", team_path(team_id, quote(action, safe="")))

    def scale_team(self, team_id: str, size: int) -> R:
        return self._call("POST", team_path(team_id, "scale"), json={"size": size})

    def team_agents(self, team_id: str) -> R:
        return self._call("GET", team_path(team_id, "agents"))

    def team_metrics(self, team_id: str) -> R:
        return self._call("GET", team_path(team_id, "metrics"))


def task_path(task_id: str, *rest: str) -> str:
    return "/".join((f"{API}/tasks/{quote(task_id, safe='')}", *rest))


def team_path(team_id: str, *rest: str) -> str:
    return "/".join((f"{API}/teams/{quote(team_id, safe='')}", *rest))
