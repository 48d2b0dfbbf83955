"""Resource limits in requests: bad values and limits the runtime cannot enforce are a 400 that names the field (or
the setting) and creates nothing; nobody gets an agent that silently runs without the limit it asked for.

These run on the local runtime, which enforces no limit (it gives agents no cgroups): every limit is refused there.
Enforcement itself is tested with sandboxed agents in real cgroups (tests/sandbox/test_limits*.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from godel.api.app import create_app
from godel.core.limits import ResourceLimits
from godel.errors import ValidationError
from godel.scheduler.plane import ControlPlane
from godel.scheduler.requests import SpawnRequest, effective_limits
from tests.api.conftest import settings_for
from tests.conftest import admin_headers


async def _client(plane: ControlPlane) -> httpx.AsyncClient:
    headers = await admin_headers(plane)
    transport = httpx.ASGITransport(app=create_app(plane=plane))
    return httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers)


@pytest.fixture
async def api(fast_tmp: Path) -> AsyncIterator[httpx.AsyncClient]:
    plane = ControlPlane(settings_for(fast_tmp / "home", max_concurrent_agents=0))  # nothing is ever admitted
    await plane.start()
    try:
        async with await _client(plane) as client:
            yield client
    finally:
        await plane.stop()


async def _agents(client: httpx.AsyncClient) -> list[str]:
    r = await client.get("/api/v1/agents")
    assert r.status_code == 200, r.text
    return [a["id"] for a in r.json()["data"]["items"]]


def _refused(r: httpx.Response, *fields: str) -> str:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR", error
    found = [f["field"] for f in error["details"]["fields"]]
    assert set(fields) <= set(found), found
    return str(error["message"])


def _spawn(repo: Path, **extra: Any) -> dict[str, Any]:
    return {"task": "t", "repo": str(repo), "command": "true"} | extra


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        ({"memoryMb": "lots"}, "config.sandbox.limits.memoryMb"),
        ({"memoryMb": 1.5}, "config.sandbox.limits.memoryMb"),
        ({"memoryMb": 1}, "config.sandbox.limits.memoryMb"),
        ({"cpus": -1}, "config.sandbox.limits.cpus"),
        ({"cpus": True}, "config.sandbox.limits.cpus"),
        ({"pids": 0}, "config.sandbox.limits.pids"),
        ({"disk": 10}, "config.sandbox.limits.disk"),
        ([64], "config.sandbox.limits"),
    ],
)
async def test_bad_limits_are_a_400_naming_the_field(
    api: httpx.AsyncClient, git_repo: Path, limits: Any, field: str
) -> None:
    r = await api.post("/api/v1/agents", json=_spawn(git_repo, config={"sandbox": {"limits": limits}}))
    _refused(r, field)
    assert await _agents(api) == []


async def test_an_unknown_sandbox_key_is_refused(api: httpx.AsyncClient, git_repo: Path) -> None:
    r = await api.post("/api/v1/agents", json=_spawn(git_repo, config={"sandbox": {"network": "open"}}))
    _refused(r, "config.sandbox.network")
    assert await _agents(api) == []


async def test_limits_the_runtime_cannot_enforce_are_refused_not_dropped(
    api: httpx.AsyncClient, git_repo: Path
) -> None:
    limits = {"memoryMb": 256, "pids": 64}
    r = await api.post("/api/v1/agents", json=_spawn(git_repo, config={"sandbox": {"limits": limits}}))
    message = _refused(r, "config.sandbox.limits.memoryMb", "config.sandbox.limits.pids")
    assert "local runtime cannot enforce a memory limit" in message and "cgroups" in message
    assert await _agents(api) == []


async def test_the_limits_an_agent_runs_under_cannot_be_forged_in_its_metadata(
    api: httpx.AsyncClient, git_repo: Path
) -> None:
    r = await api.post("/api/v1/agents", json=_spawn(git_repo, metadata={"resourceLimits": {"memoryMb": 1 << 20}}))
    assert r.status_code == 201, r.text
    shown = r.json()["data"]
    assert "resourceLimits" not in shown["metadata"] and shown["resources"] == {"limits": None, "usage": None}


async def test_a_team_with_bad_or_unenforceable_limits_is_refused(api: httpx.AsyncClient, git_repo: Path) -> None:
    team = {"strategy": "parallel", "repo": str(git_repo), "task": "t", "agent": "command", "command": "true"}
    bad = await api.post("/api/v1/teams", json=team | {"resourceLimits": {"cpus": "all", "pids": -1}})
    _refused(bad, "resourceLimits.cpus", "resourceLimits.pids")
    unenforced = await api.post("/api/v1/teams", json=team | {"resourceLimits": {"cpus": 0.5}})
    assert "cpu limit" in _refused(unenforced)
    assert (await api.get("/api/v1/teams")).json()["data"]["items"] == []


async def test_server_defaults_a_runtime_cannot_enforce_refuse_every_spawn(fast_tmp: Path, git_repo: Path) -> None:
    plane = ControlPlane(settings_for(fast_tmp / "home", max_concurrent_agents=0, agent_pids=128))
    await plane.start()
    try:
        async with await _client(plane) as client:
            r = await client.post("/api/v1/agents", json=_spawn(git_repo))
            assert "pids limit" in _refused(r, "settings.agent_pids")
            assert await _agents(client) == []
    finally:
        await plane.stop()


def test_the_spawn_wins_over_its_team_which_wins_over_the_server() -> None:
    req = SpawnRequest(
        "t", ".", config={"sandbox": {"limits": {"memoryMb": 512}}}, team_limits={"memoryMb": 256, "cpus": 1.5}
    )
    server = ResourceLimits(memory_mb=128, cpus=4, pids=100)
    assert effective_limits(req, server, ("memory", "cpu", "pids"), "sandbox") == ResourceLimits(512, 1.5, 100)
    with pytest.raises(ValidationError) as refused:
        effective_limits(req, server, ("memory",), "sandbox")
    assert [f.field for f in refused.value.fields] == ["resourceLimits.cpus", "settings.agent_pids"]
