"""Bad input is a 400 in the error envelope that creates nothing, never a 500 (issue 10, item 13).

Each test is an attacker's request from the report, sent as raw bytes where JSON's strict form cannot say it
(``Infinity``); each checks the answer *and* that the listing it could have changed is the same afterwards.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from godel.api.app import create_app
from godel.api.limits import RequestLimits
from godel.scheduler.plane import ControlPlane
from tests.api.conftest import settings_for
from tests.conftest import admin_headers, make_repo

LIMIT = 256 * 1024


@pytest.fixture
async def plane(fast_tmp: Path) -> AsyncIterator[ControlPlane]:
    # No agent is ever admitted: a request that wrongly got through is visible as a row, and runs nothing.
    p = ControlPlane(settings_for(fast_tmp / "home", max_concurrent_agents=0, max_request_bytes=LIMIT))
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture
async def client(plane: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(plane=plane)
    app.add_middleware(RequestLimits, max_body_bytes=plane.settings.max_request_bytes)
    headers = await admin_headers(plane)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers) as c:
        yield c


async def agent_ids(client: httpx.AsyncClient) -> list[str]:
    r = await client.get("/api/v1/agents", params={"limit": 500})
    assert r.status_code == 200, r.text
    return [a["id"] for a in r.json()["data"]["items"]]


def assert_bad_input(r: httpx.Response, field: str | None = None, status: int = 400) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False
    if status == 400:
        assert body["error"]["code"] == "VALIDATION_ERROR", body
        if field is not None:
            fields = [f["field"] for f in body["error"]["details"]["fields"]]
            assert any(f == field or f.startswith(f"{field}.") for f in fields), fields


async def post_raw(client: httpx.AsyncClient, url: str, text: str) -> httpx.Response:
    return await client.post(url, content=text.encode(), headers={"Content-Type": "application/json"})


def spawn_body(repo: Path, **extra: Any) -> dict[str, Any]:
    return {"task": "do it", "repo": str(repo), "command": "true"} | extra


# ------------------------------------------------------------------------------------------ agents


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN", "1e400"])
async def test_non_finite_timeout_is_refused_before_the_agent_exists(
    client: httpx.AsyncClient, git_repo: Path, literal: str
) -> None:
    # It used to insert the agent, then fail rendering the 201 (JSON has no Infinity): a 500, and a retry
    # made a second agent.
    before = await agent_ids(client)
    text = json.dumps(spawn_body(git_repo))[:-1] + f', "timeout": {literal}}}'
    assert_bad_input(await post_raw(client, "/api/v1/agents", text), "timeout")
    assert await agent_ids(client) == before == []


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"timeout": 1e12}, "timeout"),
        ({"cleanupDelay": 1e300}, "cleanupDelay"),
        ({"budgetLimit": 1e300}, "budgetLimit"),
        ({"priority": 2**70}, "priority"),
        ({"maxRetries": 10**6}, "maxRetries"),
        ({"task": "do\x00it"}, "task"),
        ({"command": "echo a\x00b"}, "command"),
        ({"setup": "true\x00"}, "setup"),
        ({"label": "x\x00"}, "label"),
        ({"env": {"A=B": "x"}}, "env"),
        ({"env": {"1X": "x"}}, "env"),
        ({"env": {"": "x"}}, "env"),
        ({"env": {"OK": "a\x00b"}}, "env"),
        ({"config": {"nested": ["x\x00"]}}, "config"),
        ({"metadata": {"k\x00": 1}}, "metadata"),
        ({"task": "x" * 100_001}, "task"),
        ({"repo": "~godel-no-such-user-here/repo"}, "repo"),
        ({"repo": "/tmp/a\x00b"}, "repo"),
    ],
)
async def test_bad_spawn_values_are_refused_and_create_nothing(
    client: httpx.AsyncClient, git_repo: Path, extra: dict[str, Any], field: str
) -> None:
    r = await client.post("/api/v1/agents", json=spawn_body(git_repo) | extra)
    assert_bad_input(r, field)
    assert await agent_ids(client) == []


async def test_non_finite_number_inside_free_form_config_is_refused(client: httpx.AsyncClient, git_repo: Path) -> None:
    text = json.dumps(spawn_body(git_repo))[:-1] + ', "config": {"x": [1, NaN]}}'
    assert_bad_input(await post_raw(client, "/api/v1/agents", text), "config")
    assert await agent_ids(client) == []


async def test_a_body_over_the_limit_is_413_unread(client: httpx.AsyncClient, git_repo: Path) -> None:
    r = await client.post("/api/v1/agents", json=spawn_body(git_repo, task="x" * (LIMIT + 1)))
    assert_bad_input(r, status=413)
    assert r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert await agent_ids(client) == []


async def test_a_chunked_body_over_the_limit_is_413(client: httpx.AsyncClient, git_repo: Path) -> None:
    chunk = json.dumps(spawn_body(git_repo, task="y" * (LIMIT + 10))).encode()

    async def stream() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for i in range(0, len(chunk), 65536):
            yield chunk[i : i + 65536]

    r = await client.post("/api/v1/agents", content=stream(), headers={"Content-Type": "application/json"})
    assert_bad_input(r, status=413)
    assert await agent_ids(client) == []


async def test_spawn_env_names_and_values_that_are_fine_still_work(client: httpx.AsyncClient, git_repo: Path) -> None:
    r = await client.post("/api/v1/agents", json=spawn_body(git_repo, env={"_A1": "x=y", "B": ""}, timeout=60))
    assert r.status_code == 201, r.text
    assert r.json()["data"]["config"]["env"] == {"_A1": "<redacted>", "B": "<redacted>"}


# ------------------------------------------------------------------------------- other endpoints


async def test_key_expiry_beyond_what_a_date_holds_is_400(client: httpx.AsyncClient) -> None:
    async def keys() -> list[str]:
        r = await client.get("/api/v1/keys")
        assert r.status_code == 200, r.text
        return [k["id"] for k in r.json()["data"]["items"]]

    before = await keys()
    for value in ("1e12", "Infinity", "1e400"):
        text = f'{{"scope": "user", "id": "admin", "expiresIn": {value}}}'
        assert_bad_input(await post_raw(client, "/api/v1/keys", text), "expiresIn")
    assert await keys() == before


@pytest.mark.parametrize("url", ["/api/v1/events", "/api/v1/agents/x/events"])
@pytest.mark.parametrize("param", ["since", "cursor"])
async def test_sequence_numbers_beyond_64_bits_are_400(client: httpx.AsyncClient, url: str, param: str) -> None:
    if param == "cursor" and "agents" in url:
        return  # that listing takes no cursor
    r = await client.get(url, params={param: str(2**63)})
    assert_bad_input(r, param)


async def test_merge_of_a_repo_under_an_unknown_users_home_is_400(client: httpx.AsyncClient) -> None:
    async def merges() -> list[Any]:
        r = await client.get("/api/v1/merges")
        assert r.status_code == 200, r.text
        return list(r.json()["data"]["items"])

    before = await merges()
    r = await client.post("/api/v1/merges", json={"repo": "~godel-no-such-user-here", "into": "main"})
    assert_bad_input(r, "repo")
    assert await merges() == before


async def test_nul_in_the_url_is_400(client: httpx.AsyncClient) -> None:
    assert_bad_input(await client.get("/api/v1/agents", params={"label": "a\x00b"}))
    assert_bad_input(await client.get("/api/v1/agents/a%00b"))


async def test_405_names_every_allowed_method(client: httpx.AsyncClient) -> None:
    r = await client.put("/api/v1/agents")
    assert r.status_code == 405, r.text
    assert r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert {"GET", "POST"} <= {m.strip() for m in r.headers["allow"].split(",")}


async def test_openapi_states_the_real_error_answers(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert "ErrorEnvelope" in doc["components"]["schemas"]
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            responses = op["responses"]
            assert "422" not in responses, (method, path)
            assert responses["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorEnvelope")
            if path.startswith("/api/v1/"):
                assert {"401", "403"} <= responses.keys(), (method, path)
            if "requestBody" in op:
                assert "413" in responses, (method, path)
    assert "401" not in doc["paths"]["/health"]["get"]["responses"]


async def test_a_body_nested_too_deep_to_parse_is_a_validation_error(client: httpx.AsyncClient) -> None:
    text = '{"type": "custom:x", "payload": {"a": ' + "[" * 5000 + "]" * 5000 + "}}"
    assert_bad_input(await post_raw(client, "/api/v1/events", text), "body")


async def test_repo_roots_confine_spawns_and_merges(fast_tmp: Path, git_repo: Path) -> None:
    inside = fast_tmp / "roots"
    inside.mkdir()
    plane = ControlPlane(settings_for(fast_tmp / "home2", max_concurrent_agents=0, repo_roots=[inside]))
    await plane.start()
    try:
        transport = httpx.ASGITransport(app=create_app(plane=plane))
        headers = await admin_headers(plane)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers) as c:
            assert_bad_input(await c.post("/api/v1/agents", json=spawn_body(git_repo)), "repo")
            assert_bad_input(await c.post("/api/v1/merges", json={"repo": str(git_repo), "into": "x"}), "repo")
            assert await agent_ids(c) == []
            ok = await c.post("/api/v1/agents", json=spawn_body(make_repo(inside / "r")))
            assert ok.status_code == 201, ok.text
    finally:
        await plane.stop()
