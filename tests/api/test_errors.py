"""Bad input gets the spec's error envelope, and leaves nothing half-created behind."""

from __future__ import annotations

from pathlib import Path

import httpx

from godel.settings import Settings
from tests.conftest import run_git


def assert_envelope(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and body["error"]["code"] == code and body["error"]["message"]
    assert body["meta"]["requestId"] == r.headers["x-request-id"] and body["meta"]["timestamp"]
    return body


async def nothing_created(client: httpx.AsyncClient, repo: Path, settings: Settings) -> None:
    assert (await client.get("/api/v1/agents")).json()["data"]["items"] == []
    assert run_git(repo, "branch", "--list", "godel/*") == ""
    assert not settings.worktrees_dir.exists() or list(settings.worktrees_dir.iterdir()) == []


async def test_validation_errors_name_fields(client: httpx.AsyncClient, git_repo: Path, settings: Settings) -> None:
    body = assert_envelope(await client.post("/api/v1/agents", json={"repo": str(git_repo)}), 400, "VALIDATION_ERROR")
    assert {"field": "task", "message": "Field required"} in body["error"]["details"]["fields"]
    body = assert_envelope(
        await client.post("/api/v1/agents", json={"task": "t", "repo": str(git_repo), "command": "x", "bogus": 1}),
        400,
        "VALIDATION_ERROR",
    )
    assert body["error"]["details"]["fields"][0]["field"] == "bogus"
    assert_envelope(
        await client.post("/api/v1/agents", json={"task": "t", "repo": str(git_repo), "command": "x", "timeout": -1}),
        400,
        "VALIDATION_ERROR",
    )
    assert_envelope(
        await client.post("/api/v1/agents", content=b"{not json", headers={"content-type": "application/json"}),
        400,
        "VALIDATION_ERROR",
    )
    body = assert_envelope(
        await client.post("/api/v1/agents", json={"task": "t", "repo": str(git_repo)}),
        400,
        "VALIDATION_ERROR",
    )
    assert body["error"]["details"]["fields"][0]["field"] == "command"
    assert_envelope(await client.get("/api/v1/agents?status=bogus"), 400, "VALIDATION_ERROR")
    assert_envelope(await client.get("/api/v1/agents?limit=0"), 400, "VALIDATION_ERROR")
    assert_envelope(await client.get("/api/v1/events?type=agent::x"), 400, "VALIDATION_ERROR")
    await nothing_created(client, git_repo, settings)


async def test_spawn_input_that_cannot_work(
    client: httpx.AsyncClient, git_repo: Path, fast_tmp: Path, settings: Settings
) -> None:
    plain = fast_tmp / "plain"
    plain.mkdir()
    assert_envelope(
        await client.post("/api/v1/agents", json={"task": "t", "repo": str(plain), "command": "true"}),
        400,
        "NOT_A_GIT_REPOSITORY",
    )
    assert_envelope(
        await client.post("/api/v1/agents", json={"task": "t", "repo": str(fast_tmp / "missing"), "command": "true"}),
        400,
        "NOT_A_GIT_REPOSITORY",
    )
    assert_envelope(
        await client.post(
            "/api/v1/agents",
            json={"task": "t", "repo": str(git_repo), "command": "true", "baseRef": "no-such-ref"},
        ),
        400,
        "REF_NOT_FOUND",
    )
    body = assert_envelope(
        await client.post("/api/v1/agents", json={"task": "t", "repo": str(git_repo), "agent": "nope"}),
        400,
        "UNKNOWN_AGENT_KIND",
    )
    assert "command" in body["error"]["message"]
    await nothing_created(client, git_repo, settings)


async def test_unknown_ids_and_routes(client: httpx.AsyncClient) -> None:
    assert_envelope(await client.get("/api/v1/agents/00000000-0000-0000-0000-000000000000"), 404, "AGENT_NOT_FOUND")
    assert_envelope(await client.post("/api/v1/agents/nope/kill"), 404, "AGENT_NOT_FOUND")
    assert_envelope(await client.get("/api/v1/events/nope"), 404, "EVENT_NOT_FOUND")
    assert_envelope(await client.get("/api/v1/nothing-here"), 404, "NOT_FOUND")
    assert_envelope(await client.get("/api/agents/nope"), 404, "AGENT_NOT_FOUND")  # the /api alias


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    r = await client.get("/health", headers={"X-Request-ID": "my-trace-1"})
    assert r.headers["x-request-id"] == "my-trace-1"
    assert (await client.get("/health")).headers["x-request-id"].startswith("req_")


async def test_out_of_range_numbers_are_400_not_500(client: httpx.AsyncClient, git_repo: Path) -> None:
    body = {"task": "t", "repo": str(git_repo), "command": "true", "priority": 10**20}
    r = assert_envelope(await client.post("/api/v1/agents", json=body), 400, "VALIDATION_ERROR")
    assert r["error"]["details"]["fields"][0]["field"] == "priority"
    missing = {"task": "t", "repo": str(git_repo), "command": "true", "baseRef": "nope"}
    r = assert_envelope(await client.post("/api/v1/agents", json=missing), 400, "REF_NOT_FOUND")
    assert r["error"]["details"]["fields"][0]["field"] == "baseRef"


async def test_env_values_never_come_back_from_the_api(client: httpx.AsyncClient, git_repo: Path) -> None:
    body = {"task": "t", "repo": str(git_repo), "command": 'echo "${#TOKEN}"', "env": {"TOKEN": "s3cret"}}
    r = await client.post("/api/v1/agents", json=body)
    assert r.status_code == 201 and "s3cret" not in r.text
    agent = r.json()["data"]
    assert agent["config"]["env"] == {"TOKEN": "<redacted>"}
    from tests.api.conftest import wait_state

    await wait_state(client, agent["id"], "completed")
    logs = (await client.get(f"/api/v1/agents/{agent['id']}/logs")).json()["data"]["items"]
    assert [x["line"] for x in logs] == ["6"]  # the agent itself did get the value
    assert "s3cret" not in (await client.get("/api/v1/agents")).text
