"""The moves a security review made against the first version of authentication, each now refused: forking a
teammate's agent to read its secrets, claiming anyone's task, attaching work to another's team or agent, merging
another's branch, keeping a stream after logout, an agent outliving its disabled owner, a password change that left
sessions open, a removed user's name handed to someone else, a team change that kept the old team's access."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from godel.api.app import create_app
from godel.auth.accounts import Accounts
from godel.scheduler.plane import ControlPlane
from tests.api.conftest import spawn, wait_state
from tests.conftest import admin_headers, run_git

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def app(plane: ControlPlane) -> AsyncIterator[FastAPI]:
    yield create_app(plane=plane)


def client(app: FastAPI, headers: dict[str, str]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers=headers)


async def people(plane: ControlPlane) -> dict[str, dict[str, str]]:
    return {
        "admin": await admin_headers(plane),
        "alice": await admin_headers(plane, "alice", ("developer",), "red"),
        "frank": await admin_headers(plane, "frank", ("developer",), "red"),  # alice's teammate
        "bob": await admin_headers(plane, "bob", ("developer",), "blue"),
        "carol": await admin_headers(plane, "carol", ("operator",), "red"),
    }


async def test_a_teammate_cannot_fork_an_agent_to_read_its_secrets(app: FastAPI, plane: ControlPlane,
                                                                     git_repo: Path) -> None:  # fmt: skip
    who = await people(plane)
    async with client(app, who["alice"]) as alice, client(app, who["frank"]) as frank:
        agent = await spawn(alice, git_repo, "sleep 30", env={"ALICE_TOKEN": "s3cr3t-xyz"})
        await wait_state(alice, agent["id"], "executing")
        assert (await frank.get(f"/api/v1/agents/{agent['id']}")).status_code == 200  # he may read it…
        r = await frank.post(f"/api/v1/agents/{agent['id']}/fork", json={"command": "echo LEAK=$ALICE_TOKEN"})
        assert r.status_code == 403  # …but a fork snapshots it: a change
        assert (await alice.get(f"/api/v1/agents/{agent['id']}/snapshots")).json()["data"]["items"] == []
    # Forked by someone else who may (an admin), the source's env stays behind.
    async with client(app, who["admin"]) as admin:
        r = await admin.post(f"/api/v1/agents/{agent['id']}/fork", json={"command": "echo LEAK=$ALICE_TOKEN"})
        assert r.status_code == 201, r.text
        forked = await wait_state(admin, r.json()["data"]["id"], "completed", "failed")
        lines = (await admin.get(f"/api/v1/agents/{forked['id']}/logs")).json()["data"]["items"]
        assert [x["line"] for x in lines if x["line"].startswith("LEAK=")] == ["LEAK="]


async def test_tasks_cannot_be_claimed_or_pushed_across_owners(app: FastAPI, plane: ControlPlane,
                                                                 git_repo: Path) -> None:  # fmt: skip
    who = await people(plane)
    async with client(app, who["alice"]) as alice, client(app, who["bob"]) as bob:
        secret = (await alice.post("/api/v1/tasks", json={"title": "rotate the db password"})).json()["data"]
        alice_agent = await spawn(alice, git_repo, "sleep 30")
        bob_agent = await spawn(bob, git_repo, "sleep 30")
        r = await bob.post("/api/v1/tasks/claim", json={"agentId": bob_agent["id"]})
        assert r.status_code == 403 and "task:update:all" in r.json()["error"]["message"]
        assert (await bob.post("/api/v1/tasks", json={"title": "x", "agentId": alice_agent["id"]})).status_code == 403
        mine = (await bob.post("/api/v1/tasks", json={"title": "mine"})).json()["data"]
        r = await bob.post(f"/api/v1/tasks/{mine['id']}/assign", json={"agentId": alice_agent["id"]})
        assert r.status_code == 403
        assert (await alice.get(f"/api/v1/tasks/{secret['id']}")).json()["data"]["status"] == "pending"


async def test_no_joining_anothers_team_and_no_merging_anothers_branch(app: FastAPI, plane: ControlPlane,
                                                                        git_repo: Path) -> None:  # fmt: skip
    who = await people(plane)
    async with client(app, who["alice"]) as alice, client(app, who["bob"]) as bob:
        team = {"strategy": "parallel", "repo": str(git_repo), "task": "t", "agent": "command", "command": "true",
                "size": 1, "start": False}  # fmt: skip
        team_id = (await alice.post("/api/v1/teams", json=team)).json()["data"]["id"]
        body = {"task": "t", "repo": str(git_repo), "command": "true", "teamId": team_id}
        assert (await bob.post("/api/v1/agents", json=body)).status_code == 403
        wf = "name: w\nsteps:\n  - id: a\n    command: 'true'\n"
        r = await bob.post("/api/v1/workflows", json={"source": wf, "repo": str(git_repo), "teamId": team_id})
        assert r.status_code == 403
        done = await spawn(alice, git_repo, "echo private > secret.txt")
        await wait_state(alice, done["id"], "completed")
        branch = f"godel/{done['id']}"
        r = await bob.post("/api/v1/merges", json={"repo": str(git_repo), "into": "bob-steal", "branches": [branch]})
        assert r.status_code == 403
        r = await bob.post("/api/v1/merges", json={"repo": str(git_repo), "into": branch, "branches": ["main"]})
        assert r.status_code == 403
    assert "bob-steal" not in run_git(git_repo, "branch", "--list")


async def test_streams_and_sockets_end_with_their_credential(app: FastAPI, plane: ControlPlane) -> None:
    await Accounts(plane.auth).create_user("dave", roles=["viewer"], password=PASSWORD)
    async with client(app, {}) as anonymous:
        tokens = (await anonymous.post("/auth/login", json={"username": "dave", "password": PASSWORD})).json()["data"]
    headers = {"Authorization": f"Bearer {tokens['accessToken']}", "Accept": "text/event-stream"}
    from godel.api.access import StillValid

    async with client(app, headers) as dave:
        assert (await dave.get("/auth/me")).status_code == 200
        # What a long-lived stream holds on to: re-checked, it fails once the session is closed.
        scope = {"type": "http", "method": "GET", "path": "/api/v1/events/stream", "query_string": b"",
                 "headers": [(b"authorization", headers["Authorization"].encode())], "app": app}  # fmt: skip
        from starlette.requests import Request

        request = Request(scope)
        valid = StillValid(request, every=0.0)
        assert await valid.holds()
        assert (await dave.post("/auth/logout")).status_code == 200
        assert not await valid.holds()


async def test_an_agent_stops_speaking_for_a_disabled_owner(app: FastAPI, plane: ControlPlane,
                                                             git_repo: Path) -> None:  # fmt: skip
    who = await people(plane)
    async with client(app, who["alice"]) as alice:
        agent = await spawn(alice, git_repo, "sleep 30")
        await wait_state(alice, agent["id"], "executing")
    key = await plane.auth.issue_agent_credential(agent["id"], allow_spawn=True)
    async with client(app, {"X-API-Key": key}) as run:
        assert (await run.get(f"/api/v1/agents/{agent['id']}")).status_code == 200
        async with client(app, who["admin"]) as admin:
            assert (await admin.patch("/api/v1/users/alice", json={"disabled": True})).status_code == 200
        r = await run.get(f"/api/v1/agents/{agent['id']}")
        assert r.status_code == 401 and "disabled or removed" in r.json()["error"]["message"]
        body = {"task": "t", "repo": str(git_repo), "command": "true"}
        assert (await run.post("/api/v1/agents", json=body)).status_code == 401


async def test_a_new_password_closes_sessions_and_a_removed_name_stays_taken(app: FastAPI, plane: ControlPlane) -> None:
    await Accounts(plane.auth).create_user("erin", roles=["developer"], password=PASSWORD)
    async with client(app, {}) as anonymous:
        tokens = (await anonymous.post("/auth/login", json={"username": "erin", "password": PASSWORD})).json()["data"]
    async with client(app, await admin_headers(plane)) as admin:
        r = await admin.patch("/api/v1/users/erin", json={"password": "another long password"})
        assert r.status_code == 200
        async with client(app, {"Authorization": f"Bearer {tokens['accessToken']}"}) as old:
            assert (await old.get("/auth/me")).status_code == 401
        async with client(app, {}) as anonymous:
            r = await anonymous.post("/auth/refresh", json={"refreshToken": tokens["refreshToken"]})
            assert r.status_code == 401
        assert (await admin.delete("/api/v1/users/erin")).status_code == 200
        r = await admin.post("/api/v1/users", json={"name": "erin", "roles": ["developer"]})
        assert r.status_code == 409  # her agents, teams and webhooks are still hers: the name is never reused


async def test_a_team_change_moves_access_at_once(app: FastAPI, plane: ControlPlane, git_repo: Path) -> None:
    who = await people(plane)
    async with client(app, who["alice"]) as alice, client(app, who["carol"]) as carol:
        agent = await spawn(alice, git_repo, "true")
        assert (await carol.get(f"/api/v1/agents/{agent['id']}")).status_code == 200  # operator of her team
        async with client(app, who["admin"]) as admin:
            assert (await admin.patch("/api/v1/users/alice", json={"team": "blue"})).status_code == 200
        await asyncio.sleep(0)  # nothing to wait for: the change is made on this server
        assert (await carol.get(f"/api/v1/agents/{agent['id']}")).status_code == 403
