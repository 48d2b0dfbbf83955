"""A real Godel server for team tests: uvicorn in the test's event loop, its gateway in front of one
``ScriptedModel`` per role (each a provider named after the role, ``ROLE/scripted-model``), and a repository.

Agents go through the gateway like in production (``use_gateway`` on). ``stack(scripts, home=…, port=…)`` may
be entered twice on the same home to restart the server in the middle of a team.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from tests.agents.conftest import agents_dir
from tests.conftest import local_admin_headers, make_repo
from tests.e2e.serverproc import free_port

from godel.api.app import create_app
from godel.scheduler.plane import ControlPlane
from godel.settings import Settings
from godel.teams import TeamOrchestrator
from godel.testing import ScriptedModel

MODEL = "scripted-model"
ENDED = ("completed", "failed")


def model_of(role: str) -> str:
    return f"{role}/{MODEL}"


@dataclass
class Stack:
    plane: ControlPlane
    teams: TeamOrchestrator
    url: str
    client: httpx.AsyncClient
    repo: Path
    models: dict[str, ScriptedModel] = field(default_factory=dict)

    async def create(self, **body: Any) -> dict[str, Any]:
        body.setdefault("repo", str(self.repo))
        r = await self.client.post("/api/v1/teams", json=body)
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()["data"]
        return data

    async def team(self, team_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/api/v1/teams/{team_id}")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()["data"]
        return data

    async def agents(self, team_id: str) -> list[dict[str, Any]]:
        r = await self.client.get(f"/api/v1/teams/{team_id}/agents")
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["data"]["items"]
        return items

    async def wait_team(self, team_id: str, *, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            team = await self.team(team_id)
            if team["status"] in ENDED:
                return team
            if time.monotonic() > deadline:
                agents = await self.agents(team_id)
                states = [(a["metadata"].get("step"), a["state"], a["lastError"]) for a in agents]
                raise AssertionError(f"team {team_id} is {team['status']} after {timeout}s; agents: {states}")
            await asyncio.sleep(0.1)  # polling the API for the orchestrator's verdict

    async def wait_for(self, check: Callable[[], Any], what: str, *, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await check()
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)  # polling an observable condition


StackFactory = Callable[..., Any]


@pytest.fixture
def repo(fast_tmp: Path) -> Path:
    return make_repo(fast_tmp / "repo")


@pytest.fixture
def stack(fast_tmp: Path, repo: Path) -> StackFactory:
    @asynccontextmanager
    async def make(
        scripts: dict[str, Any] | None = None,
        *,
        home: Path | None = None,
        port: int | None = None,
        leave_running: bool = False,
        **overrides: Any,
    ) -> AsyncIterator[Stack]:
        models = {role: ScriptedModel(turns).start() for role, turns in (scripts or {}).items()}
        providers = {
            role: {"kind": "openai-chat", "base_url": f"{m.url}/v1", "models": [MODEL], "api_key_env": None}
            for role, m in models.items()
        }
        port = port or free_port()
        values: dict[str, Any] = {
            "home": home or fast_tmp / f"home-{port}",
            "providers": providers,
            "url": f"http://127.0.0.1:{port}",
            "port": port,
            "agents_dir": agents_dir(),
            "agent_cli_retries": 0,
            "watch_interval": 0.02,
            "reconcile_interval": 0.05,
            "kill_grace": 2.0,
            "retry_backoff": 0.05,
            "retry_backoff_max": 0.2,
            "max_concurrent_agents": 16,
            "default_timeout": 120.0,
        }
        values.update(overrides)
        plane = ControlPlane(Settings(**values))
        await plane.start()
        app = create_app(plane=plane)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
        task = asyncio.create_task(server.serve())
        try:
            while not server.started:
                assert not task.done(), "the server did not start"
                await asyncio.sleep(0.01)
            headers = local_admin_headers(plane.settings.home)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30, headers=headers) as client:
                yield Stack(plane, app.state.teams, f"http://127.0.0.1:{port}", client, repo, models)
        finally:
            server.should_exit = True
            await task  # the lifespan stops the orchestrator
            if not leave_running:  # a restart test leaves them to the next server, which adopts them
                await stop_agents(plane)
            await plane.stop()
            for m in models.values():
                m.stop()

    return make


async def stop_agents(plane: ControlPlane) -> None:
    """Kill every agent process a test left running (a restart test's second stack calls it at the end)."""
    for agent_id in list(plane.supervisor.runs):
        await plane.kill(agent_id, actor="test", reason="test teardown")
