from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from godel.api.app import create_app
from godel.errors import InvalidTransitionError
from godel.scheduler.plane import ControlPlane
from godel.settings import Settings
from tests.conftest import admin_headers


def settings_for(home: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "home": home,
        "watch_interval": 0.02,
        "reconcile_interval": 0.05,
        "kill_grace": 1.0,
        "retry_backoff": 0.05,
        "retry_backoff_max": 0.2,
        "max_concurrent_agents": 8,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(fast_tmp: Path) -> Settings:
    return settings_for(fast_tmp / "home")


@pytest.fixture
async def plane(settings: Settings) -> AsyncIterator[ControlPlane]:
    p = ControlPlane(settings)
    await p.start()
    try:
        yield p
    finally:
        await kill_runs(p)
        await p.stop()


async def kill_runs(p: ControlPlane) -> None:
    """Kill every live run before a test's plane stops."""
    for agent_id in list(p.supervisor.runs):
        # A run may be ending already (a workflow or team killed it): its 409 is the answer, not a failure.
        with contextlib.suppress(InvalidTransitionError):
            await p.kill(agent_id, actor="test", reason="test teardown")


@pytest.fixture
async def client(plane: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(plane=plane)
    transport = httpx.ASGITransport(app=app)
    headers = await admin_headers(plane)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers) as c:
        yield c


async def eventually(check: Callable[[], Awaitable[Any]], *, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy; fail with its last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)  # polling interval while waiting for an observable condition
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")


async def spawn(client: httpx.AsyncClient, repo: Path, command: str, task: str = "do it", **extra: Any) -> dict:
    r = await client.post("/api/v1/agents", json={"task": task, "repo": str(repo), "command": command, **extra})
    assert r.status_code == 201, r.text
    return r.json()["data"]


async def wait_state(client: httpx.AsyncClient, agent_id: str, *states: str, timeout: float = 10.0) -> dict:
    async def check() -> dict | None:
        data = (await client.get(f"/api/v1/agents/{agent_id}")).json()["data"]
        return data if data["state"] in states else None

    return await eventually(check, timeout=timeout)
