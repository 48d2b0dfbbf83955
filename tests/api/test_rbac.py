"""Authorization, tried route by route as each kind of caller: the whole allow/deny matrix.

The routes come from the app itself (every route of the OpenAPI document, and the WebSocket); the callers are one
user per built-in role, an agent's own run credential, a developer of another team, and nobody. Each resource the
routes name belongs to ``dev`` (team ``red``). The expected outcome is worked out here, independently of the
server's code, from the spec's role table and who owns what: a caller may act when one of its role's grants
names the resource and action (or ``*``) at a scope that reaches the resource (``own`` for dev's own, ``team``
for the people of team ``red``, ``all`` for anyone's). Allowed means "not 401/403" (the call may still be a 400 or
a 409: bodies are left empty so nothing is created), denied means exactly 403 (401 for nobody).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts

from godel.api.access import ON_ATTR, PERMISSION_ATTR
from godel.api.app import create_app
from godel.auth.permissions import BUILTIN_ROLES
from godel.scheduler.plane import ControlPlane
from tests.api.conftest import spawn, wait_state
from tests.conftest import admin_headers

FASTAPI_OWN = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}

# caller → (roles, team, relation to dev's resources)
CALLERS = {
    "admin": (("admin",), None),
    "operator": (("operator",), "red"),
    "dev": (("developer",), "red"),  # the owner
    "peer": (("developer",), "red"),
    "viewer": (("viewer",), "red"),
    "outsider": (("developer",), "blue"),
}


@dataclass(frozen=True)
class Route:
    path: str
    methods: frozenset[str]
    dependant: Any
    websocket: bool


def flat_routes(app: FastAPI) -> list[Route]:
    """Every route with its full path (FastAPI keeps included routers as lazy contexts)."""
    out = []
    for rc in iter_route_contexts(app.routes):
        original = rc.original_route
        if isinstance(original, APIRoute | APIWebSocketRoute):
            methods = frozenset(getattr(rc, "methods", None) or ())
            out.append(Route(rc.path, methods, original.dependant, isinstance(original, APIWebSocketRoute)))
    return out


def declarations(route: Any) -> list[tuple[str, bool]]:
    """Every permission a route declares, each with whether it is on the resource its path names."""
    out, stack = [], list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        found = getattr(dep.call, PERMISSION_ATTR, None)
        if found is not None:
            out.append((str(found), getattr(dep.call, ON_ATTR, None) is not None))
        stack.extend(dep.dependencies)
    return out


def declared(route: Any) -> str | None:
    found = declarations(route)
    return found[0][0] if found else None


def test_every_route_declares_its_permission(plane_app: FastAPI) -> None:
    routes = flat_routes(plane_app)
    assert len(routes) > 100 and any(r.websocket for r in routes)
    missing = [f"{sorted(r.methods)} {r.path}" for r in routes if r.path not in FASTAPI_OWN and declared(r) is None]
    assert missing == [], f"routes without a permission: {missing}"
    public = sorted({r.path for r in routes if declared(r) == "public"})
    # Only health, capabilities and the ways in (login, refresh, single sign-on) are open to anyone.
    assert public == [
        "/auth/login", "/auth/oidc/callback", "/auth/oidc/login", "/auth/refresh", "/capabilities", "/health",
        "/health/detailed", "/health/live", "/health/ready",
    ]  # fmt: skip


def expected_all(caller: str, route: Any) -> bool:
    """A route with several declarations (fork: read the source, create an agent) needs every one. A route that
    checks ownership itself (webhooks, keys, budgets: a path id but a collection-level declaration) is judged on
    the resource too. A merge id names no merge that ran: nobody's, so only ``all`` reaches it."""
    has_id = "{" in route.path
    # A merge id names no merge that ran (nobody's); claiming takes the next task of anyone's: both need ``all``.
    nobody = "{merge_id}" in route.path or route.path.endswith("/tasks/claim")
    return all(
        expected(caller, permission, owned or nobody or (has_id and len(declarations(route)) == 1), nobody=nobody)
        for permission, owned in declarations(route)
    )


def expected(caller: str, permission: str, owned: bool, *, nobody: bool = False) -> bool:
    """From the role table alone: does ``caller`` hold ``permission`` on a resource of dev's (or on the
    collection, when ``owned`` is False)?"""
    resource, action = permission.split(":")
    if caller == "anonymous":
        return False
    if caller == "agent":
        grants = BUILTIN_ROLES["agent"]
        relation = "other"  # the agent of someone else: dev's resources are not its own
    else:
        roles, team = CALLERS[caller]
        grants = tuple(g for r in roles for g in BUILTIN_ROLES[r])
        relation = "own" if caller == "dev" else ("team" if team == "red" else "other")
    if nobody:
        relation = "other"
    needed = {"own": {"own", "team", "all"}, "team": {"team", "all"}, "other": {"all"}}
    for grant in grants:
        g_res, g_act, g_scope = grant.split(":")
        if g_res not in ("*", resource) or g_act not in ("*", action):
            continue
        if not owned or g_scope in needed[relation]:
            return True
    return False


@dataclass
class World:
    app: FastAPI
    plane: ControlPlane
    headers: dict[str, dict[str, str]]
    ids: dict[str, str]
    repo: Path


@pytest.fixture
async def plane_app(plane: ControlPlane) -> AsyncIterator[FastAPI]:
    app = create_app(plane=plane)
    yield app


async def _client(app: FastAPI, headers: dict[str, str]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers=headers)


async def _resources(
    app: FastAPI, plane: ControlPlane, dev: dict[str, str], admin: dict[str, str], repo: Path, *, fresh: bool = False
) -> dict[str, str]:
    """One of each kind of resource, all dev's (made by dev, or by the admin *for* dev)."""
    ids: dict[str, str] = {}
    async with await _client(app, dev) as c:
        agent = await spawn(c, repo, "sleep 30")
        ids["agent_id"] = agent["id"]
        team = {"strategy": "parallel", "repo": str(repo), "task": "t", "agent": "command", "command": "true",
                "size": 1, "start": False}  # fmt: skip
        r = await c.post("/api/v1/teams", json=team)
        assert r.status_code == 201, r.text
        ids["team_id"] = r.json()["data"]["id"]
        wf = "name: w\nsteps:\n  - id: a\n    command: 'true'\n"
        r = await c.post("/api/v1/workflows", json={"source": wf, "repo": str(repo), "start": False})
        assert r.status_code == 201, r.text
        ids["workflow_id"] = r.json()["data"]["id"]
        r = await c.post("/api/v1/tasks", json={"title": "t"})
        assert r.status_code == 201, r.text
        ids["task_id"] = r.json()["data"]["id"]
        r = await c.post("/api/v1/webhooks", json={"url": "https://hooks.example.com/x", "patterns": ["agent:*"]})
        assert r.status_code == 201, r.text
        ids["webhook_id"] = r.json()["data"]["id"]
        events = (await c.get(f"/api/v1/agents/{agent['id']}/events")).json()["data"]["items"]
        ids["event_id"] = events[0]["id"]
    async with await _client(app, admin) as c:
        r = await c.post("/api/v1/keys", json={"scope": "user", "id": "dev"})
        assert r.status_code == 201, r.text
        ids["key_id"] = r.json()["data"]["id"]
        r = await c.put("/api/v1/budgets", json={"scope": "user", "id": "dev", "usd": 5})
        assert r.status_code == 200, r.text
        ids["budget_id"] = r.json()["data"]["id"]
        role = "custom2" if fresh else "custom1"
        r = await c.put(f"/api/v1/roles/{role}", json={"permissions": ["agent:read:own"]})
        assert r.status_code == 200, r.text
        r = await c.post("/api/v1/users/dev/api-keys", json={})
        assert r.status_code == 201, r.text
        ids["key_id:apikey"] = r.json()["data"]["id"]
    ids["name"] = "dev"
    ids["role"] = role
    if fresh:  # a user to remove, of dev's team (so that "team"-scoped deleters would reach them)
        async with await _client(app, admin) as c:
            name = f"gone-{ids['agent_id'][:8]}"
            r = await c.post("/api/v1/users", json={"name": name, "roles": ["viewer"], "team": "red"})
            assert r.status_code == 201, r.text
        ids["user_to_remove"] = name
    ids["action"] = "pause"
    ids["merge_id"] = "00000000-0000-0000-0000-000000000000"  # nobody's: no merge has run
    return ids


def _path(route: Route, ids: dict[str, str]) -> str:
    def fill(m: re.Match[str]) -> str:
        name = m.group(1)
        if name == "key_id" and "api-keys" in route.path:
            return ids["key_id:apikey"]
        return ids[name]

    return re.sub(r"\{(\w+)\}", fill, route.path)


@pytest.mark.timeout(900)
async def test_the_whole_matrix(plane: ControlPlane, plane_app: FastAPI, git_repo: Path) -> None:
    headers = {"admin": await admin_headers(plane)}
    for name, (roles, team) in CALLERS.items():
        if name != "admin":
            headers[name] = await admin_headers(plane, name, roles, team)
    ids = await _resources(plane_app, plane, headers["dev"], headers["admin"], git_repo)
    # An agent's own credential, of an agent that belongs to the outsider.
    async with await _client(plane_app, headers["outsider"]) as c:
        theirs = await spawn(c, git_repo, "sleep 30")
        await wait_state(c, theirs["id"], "executing")  # its launch issues (and replaces) its own credential
    headers["agent"] = {"X-API-Key": await plane.auth.issue_agent_credential(theirs["id"], allow_spawn=False)}
    headers["anonymous"] = {}

    routes = [r for r in flat_routes(plane_app) if not r.websocket and r.path.startswith(("/api/v1/", "/auth/"))]
    assert len(routes) > 60
    wrong: list[str] = []
    checked = 0
    order = ["anonymous", "agent", "outsider", "viewer", "peer", "operator", "dev", "admin"]
    for route in sorted(routes, key=lambda r: r.path):
        permission = declared(route)
        assert permission is not None
        if permission in ("public", "authenticated"):
            continue
        for method in sorted(route.methods - {"HEAD"}):
            for caller in order:
                allow = expected_all(caller, route)  # an event is dev's when its agent is: the same rule
                path = _path(route, ids)
                if allow and (method == "DELETE" or route.path.endswith("/stream")):
                    continue  # destructive (a DELETE), or endless (a stream): their refusals are what is tried here
                async with await _client(plane_app, headers[caller]) as c:
                    r = await c.request(method, path, json=None if method in ("GET", "DELETE") else {})
                checked += 1
                if allow and r.status_code in (401, 403):
                    wrong.append(
                        f"{caller} refused {method} {route.path} ({permission}): {r.status_code} {r.text[:200]}"
                    )
                if not allow and r.status_code != (401 if caller == "anonymous" else 403):
                    wrong.append(f"BYPASS: {caller} got {r.status_code} on {method} {route.path} ({permission})")
    # The DELETEs the callers may make, each on a fresh resource of dev's (a deleted one has no owner any more).
    for route in routes:
        if "DELETE" not in route.methods or "{" not in route.path:
            continue
        permission = declared(route)
        assert permission is not None
        for caller in order:
            if not expected_all(caller, route):
                continue
            fresh = await _resources(plane_app, plane, headers["dev"], headers["admin"], git_repo, fresh=True)
            async with await _client(plane_app, headers[caller]) as c:
                path = _path(route, {**ids, **fresh})
                if route.path.endswith("/users/{name}"):
                    path = path.rsplit("/", 1)[0] + "/" + fresh["user_to_remove"]
                r = await c.request("DELETE", path, params={"force": "true"})
            checked += 1
            if r.status_code in (401, 403):
                wrong.append(f"{caller} refused DELETE {route.path} ({permission}): {r.status_code} {r.text[:200]}")
    assert wrong == [], "\n".join(wrong)
    assert checked > 400
