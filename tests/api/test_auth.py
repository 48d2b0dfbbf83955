"""Authentication and the browser-side defences, tried the way an attacker or a careless client would: no
credential, a wrong, revoked or expired one, a refresh token used twice, a foreign ``Host``, a cross-site
``Origin`` (HTTP and WebSocket), a cookie without proof of origin, a flood of requests; and the audit log altered
behind Godel's back."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from fastapi import FastAPI

from godel.api.app import create_app
from godel.auth.accounts import Accounts
from godel.scheduler.plane import ControlPlane
from tests.api.conftest import settings_for
from tests.conftest import admin_headers
from tests.gateway.conftest import stack  # noqa: F401  (a fixture)

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def app(plane: ControlPlane) -> AsyncIterator[FastAPI]:
    yield create_app(plane=plane)


def client_of(app: FastAPI, **kw: Any) -> httpx.AsyncClient:
    kw.setdefault("base_url", "http://localhost")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), **kw)


async def test_no_or_bad_credentials_get_401_and_public_routes_stay_open(app: FastAPI, plane: ControlPlane) -> None:
    async with client_of(app) as c:
        routes = [("GET", "/api/v1/agents"), ("POST", "/api/v1/agents"), ("GET", "/api/v1/events"),
                  ("PUT", "/api/v1/budgets"), ("POST", "/api/v1/keys"), ("GET", "/api/v1/audit"),
                  ("GET", "/api/v1/events/stream"), ("GET", "/auth/me"), ("GET", "/api/agents")]  # fmt: skip
        for method, path in routes:
            r = await c.request(method, path, json={} if method != "GET" else None)
            assert r.status_code == 401, (method, path, r.text)
            assert r.json()["error"]["code"] == "UNAUTHORIZED"
        for bad in ("godel_sk_000000000000_" + "x" * 43, "nonsense", "eyJhbGciOiJIUzI1NiJ9.e30.bad"):
            r = await c.get("/api/v1/agents", headers={"X-API-Key": bad})
            assert r.status_code == 401, bad
            r = await c.get("/api/v1/agents", headers={"Authorization": f"Bearer {bad}"})
            assert r.status_code == 401, bad
        for path in ("/health", "/health/live", "/health/ready", "/capabilities", "/openapi.json"):
            assert (await c.get(path)).status_code == 200, path
        caps = (await c.get("/capabilities")).text
        assert "godel_sk_" not in caps and "password" not in caps.lower()


async def test_api_keys_are_argon2_shown_once_revocable_and_expire(app: FastAPI, plane: ControlPlane) -> None:
    accounts = Accounts(plane.auth)
    await accounts.create_user("alice", roles=["developer"])
    text, row = await accounts.create_api_key("alice", name="ci", expires_in=None)
    stored = await plane.store.get_api_key(row["id"])
    assert stored["key_hash"].startswith("$argon2id$") and text.split("_")[-1] not in stored["key_hash"]
    async with client_of(app, headers={"X-API-Key": text}) as c:
        me = (await c.get("/auth/me")).json()["data"]
        assert me["id"] == "user:alice" and me["roles"] == ["developer"]
        listed = (await c.get("/api/v1/users/alice/api-keys")).json()["data"]["items"]
        assert [k["id"] for k in listed] == [row["id"]] and text not in json.dumps(listed)
        assert (await c.delete(f"/api/v1/users/alice/api-keys/{row['id']}")).status_code == 200
        assert (await c.get("/auth/me")).status_code == 401  # revoked: at once on this server
    short, _ = await accounts.create_api_key("alice", name="short", expires_in=0.05)
    await asyncio.sleep(0.1)  # let the key's 50 ms lifetime run out
    async with client_of(app, headers={"X-API-Key": short}) as c:
        r = await c.get("/auth/me")
        assert r.status_code == 401 and "expired" in r.json()["error"]["message"]


async def test_login_refresh_rotation_and_logout(app: FastAPI, plane: ControlPlane) -> None:
    await Accounts(plane.auth).create_user("bob", roles=["viewer"], password=PASSWORD)
    async with client_of(app) as c:
        assert (await c.post("/auth/login", json={"username": "bob", "password": "wrong"})).status_code == 401
        assert (await c.post("/auth/login", json={"username": "nobody", "password": "x"})).status_code == 401
        r = await c.post("/auth/login", json={"username": "bob", "password": PASSWORD})
        assert r.status_code == 200, r.text
        tokens = r.json()["data"]
        cookie = r.headers.get_list("set-cookie")
        assert any(h.startswith("godel_session=") and "HttpOnly" in h and "SameSite=strict" in h for h in cookie)
        bearer = {"Authorization": f"Bearer {tokens['accessToken']}"}
        assert (await c.get("/auth/me", headers=bearer)).json()["data"]["id"] == "user:bob"
        r = await c.post("/auth/refresh", json={"refreshToken": tokens["refreshToken"]})
        assert r.status_code == 200
        second = r.json()["data"]
        assert second["refreshToken"] != tokens["refreshToken"]
        # The first refresh token again: a stolen copy. Refused, and the whole session closes with it.
        assert (await c.post("/auth/refresh", json={"refreshToken": tokens["refreshToken"]})).status_code == 401
        assert (await c.post("/auth/refresh", json={"refreshToken": second["refreshToken"]})).status_code == 401
        assert (await c.get("/auth/me", headers=bearer)).status_code == 401
        # A new login, then logout: its access token stops working.
        fresh = (await c.post("/auth/login", json={"username": "bob", "password": PASSWORD})).json()["data"]
        headers = {"Authorization": f"Bearer {fresh['accessToken']}"}
        assert (await c.post("/auth/logout", headers=headers)).status_code == 200
        assert (await c.get("/auth/me", headers=headers)).status_code == 401


async def test_login_is_rate_limited(app: FastAPI, plane: ControlPlane) -> None:
    await Accounts(plane.auth).create_user("carol", roles=["viewer"], password=PASSWORD)
    async with client_of(app) as c:
        codes = [(await c.post("/auth/login", json={"username": "carol", "password": "guess"})).status_code
                 for _ in range(12)]  # fmt: skip
    assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]
    assert type(app.state.login_rate_limit.limiter).__name__ == "MovingWindowRateLimiter"  # see test_login_limit


async def test_foreign_host_and_cross_site_origin_are_refused(
    app: FastAPI, plane: ControlPlane, git_repo: Path
) -> None:
    headers = await admin_headers(plane)
    body = {"task": "t", "repo": str(git_repo), "command": "id > pwned"}
    async with client_of(app, base_url="http://evil.example", headers=headers) as c:  # DNS rebinding
        r = await c.post("/api/v1/agents", json=body)
        assert r.status_code == 403 and r.json()["error"]["code"] == "ORIGIN_REFUSED"
        assert (await c.post("/proxy/v1/chat/completions", json={})).status_code == 403
    async with client_of(app, headers={**headers, "Origin": "http://evil.example"}) as c:
        r = await c.post("/api/v1/agents", json=body)
        assert r.status_code == 403
        r = await c.post("/api/v1/agents/x/kill", content=b"", headers={"Content-Type": "text/plain"})
        assert r.status_code == 403
    async with client_of(app, headers=headers) as c:
        assert (await c.get("/api/v1/agents")).json()["data"]["items"] == []  # nothing was created
        assert (await c.get("/api/v1/agents", headers={"Origin": "http://localhost"})).status_code == 200
    assert not (git_repo / "pwned").exists()


async def test_a_cookie_must_show_where_a_change_comes_from(app: FastAPI, plane: ControlPlane) -> None:
    await Accounts(plane.auth).create_user("dora", roles=["developer"], password=PASSWORD)
    async with client_of(app) as c:
        r = await c.post("/auth/login", json={"username": "dora", "password": PASSWORD})
        access = r.json()["data"]["accessToken"]
    cookie = {"Cookie": f"godel_session={access}"}
    async with client_of(app, headers=cookie) as c:
        assert (await c.get("/auth/me")).status_code == 200  # reading with the cookie is fine
        r = await c.post("/api/v1/tasks", json={"title": "t"})  # a change with no Origin, no Referer
        assert r.status_code == 403 and r.json()["error"]["code"] == "ORIGIN_REFUSED"
        r = await c.post("/api/v1/tasks", json={"title": "t"}, headers={"Sec-Fetch-Site": "cross-site",
                                                                          "Referer": "http://localhost/x"})  # fmt: skip
        assert r.status_code == 403
        r = await c.post("/api/v1/tasks", json={"title": "t"}, headers={"Origin": "http://localhost"})
        assert r.status_code == 201, r.text


async def test_api_rate_limit_per_credential(fast_tmp: Path) -> None:
    plane = ControlPlane(settings_for(fast_tmp / "home", api_rate_limit="5/minute"))
    await plane.start(background=False)
    try:
        app = create_app(plane=plane)
        async with client_of(app, headers=await admin_headers(plane)) as c:
            codes = [(await c.get("/auth/me")).status_code for _ in range(7)]
            assert codes == [200] * 5 + [429, 429]
            r = await c.get("/auth/me")
            assert r.json()["error"]["code"] == "RATE_LIMITED" and int(r.headers["Retry-After"]) >= 1
        async with client_of(app, headers=await admin_headers(plane, "other")) as c:
            assert (await c.get("/auth/me")).status_code == 200  # per credential, not global
    finally:
        await plane.stop()


async def test_the_audit_log_records_changes_and_detects_an_altered_row(app: FastAPI, plane: ControlPlane) -> None:
    async with client_of(app, headers=await admin_headers(plane)) as c:
        assert (await c.post("/api/v1/users", json={"name": "eve", "roles": ["viewer"]})).status_code == 201
        assert (await c.post("/api/v1/users/eve/api-keys", json={})).status_code == 201
        async with client_of(app) as anonymous:
            assert (
                await anonymous.post("/auth/login", json={"username": "eve", "password": "nope"})
            ).status_code == 401
        rows = (await c.get("/api/v1/audit")).json()["data"]["items"]
        actions = [(r["actor"], r["action"], r["outcome"]) for r in rows]
        assert ("user:admin", "POST /api/v1/users", "success") in actions
        assert ("user:admin", "POST /api/v1/users/{name}/api-keys", "success") in actions
        assert ("anonymous", "POST /auth/login", "denied") in actions
        assert all(r["requestId"] for r in rows)
        verdict = (await c.get("/api/v1/audit/verify")).json()["data"]
        assert verdict["ok"] is True and verdict["rows"] >= len(rows) >= 3
    db = plane.settings.home / "godel.db"
    with sqlite3.connect(db) as conn:  # Godel's own triggers refuse the change…
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE audit_log SET actor = 'user:nobody' WHERE seq = 2")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM audit_log WHERE seq = 2")
    with sqlite3.connect(db) as conn:  # …so an attacker with the file drops them first
        conn.execute("DROP TRIGGER audit_log_no_update")
        conn.execute("UPDATE audit_log SET outcome = 'failure' WHERE seq = 2")
    verdict = await app.state.audit.verify()
    assert not verdict.ok and verdict.first_bad == 2
    async with client_of(app, headers=await admin_headers(plane)) as c:
        shown = (await c.get("/api/v1/audit/verify")).json()["data"]
        assert shown["ok"] is False and shown["firstBadSeq"] == 2


async def test_files_are_private_and_the_first_admin_is_made_once(stack: Any) -> None:  # noqa: F811
    async with stack([]) as s:
        home = s.plane.settings.home
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        for name in ("credentials", "jwt.key"):
            assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name
        creds = json.loads((home / "credentials").read_text())
        assert creds["apiKey"].startswith("godel_sk_") and creds["user"] == "admin"
        before = (home / "credentials").read_text()
        assert await Accounts(s.plane.auth).bootstrap(home, s.url) is None  # users exist: nothing is made again
        assert (home / "credentials").read_text() == before
        async with httpx.AsyncClient(base_url=s.url, headers=s.headers) as c:
            assert (await c.get("/auth/me")).json()["data"]["id"] == "user:admin"


async def test_websocket_needs_a_credential_and_a_same_site_origin(stack: Any, fast_tmp: Path) -> None:  # noqa: F811
    from tests.conftest import make_repo

    repo = make_repo(fast_tmp / "repo")
    async with stack([]) as s, httpx.AsyncClient(base_url=s.url, headers=s.headers) as api:
        agent = (await api.post("/api/v1/agents", json={"task": "t", "repo": str(repo), "command": "sleep 30"})).json()
        agent_id = agent["data"]["id"]
        ws_url = s.url.replace("http://", "ws://") + "/events"
        key = s.headers["X-API-Key"]
        with pytest.raises(websockets.exceptions.InvalidStatus):  # no credential
            async with websockets.connect(ws_url):
                pass
        with pytest.raises(websockets.exceptions.InvalidStatus):  # cross-site, even with the key
            async with websockets.connect(f"{ws_url}?token={key}", origin="http://evil.example"):  # type: ignore[arg-type]
                pass
        async with websockets.connect(f"{ws_url}?token={key}") as ws:
            await ws.send(
                json.dumps({"id": "1", "type": "subscribe", "payload": {"patterns": ["agent:*"], "since": 0}})
            )
            first = json.loads(await ws.recv())
            assert first["type"] in ("response", "event")
        # A developer who does not own the agent: sees none of its events, and may not kill it.
        await api.post("/api/v1/users", json={"name": "mallory", "roles": ["developer"], "team": "other"})
        mallory = (await api.post("/api/v1/users/mallory/api-keys", json={})).json()["data"]["key"]
        async with websockets.connect(f"{ws_url}?token={mallory}") as ws:
            await ws.send(json.dumps({"id": "k", "type": "command",
                                      "payload": {"command": "agent:kill", "agentId": agent_id}}))  # fmt: skip
            await ws.send(json.dumps({"id": "s", "type": "subscribe", "payload": {"patterns": ["*"], "since": 0}}))
            seen = []
            try:
                while True:
                    seen.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=1.0)))
            except TimeoutError:
                pass
        kill = next(m for m in seen if m.get("metadata", {}).get("correlationId") == "k")
        assert kill["payload"]["success"] is False and kill["payload"]["error"]["code"] == "FORBIDDEN"
        assert not [
            m for m in seen if m["type"] == "event" and m["payload"].get("metadata", {}).get("agentId") == agent_id
        ]
        state = (await api.get(f"/api/v1/agents/{agent_id}")).json()["data"]["state"]
        assert state == "executing"
        await api.post(f"/api/v1/agents/{agent_id}/kill")
