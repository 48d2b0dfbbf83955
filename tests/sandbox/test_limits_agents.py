"""Resource limits end to end: from a spawn request, a team's defaults and the server's settings to the agent's
record (its end reason, the accounting in its JSON), with sandboxed agents in the machine's real cgroups."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from godel.api.schemas import agent_json
from godel.core.ids import new_id
from godel.core.models import Team
from godel.core.states import AgentState
from godel.scheduler.plane import ControlPlane
from godel.scheduler.requests import SpawnRequest
from tests.api.conftest import kill_runs, settings_for
from tests.conftest import make_repo
from tests.sandbox.test_limits import require_cgroups

HOG = "python3 -c 'b = b\"x\" * (256 << 20); print(len(b))'"
Planes = Callable[..., AbstractAsyncContextManager[ControlPlane]]


@pytest.fixture
def planes(fast_tmp: Path) -> Planes:
    require_cgroups()

    @asynccontextmanager
    async def make(**settings: Any) -> AsyncIterator[ControlPlane]:
        plane = ControlPlane(settings_for(fast_tmp / "home", runtime="sandbox", use_gateway=False, **settings))
        await plane.start()
        try:
            yield plane
        finally:
            await kill_runs(plane)
            await plane.stop()

    return make


async def test_an_agent_killed_for_memory_ends_failed_with_the_reason_memory_limit(
    planes: Planes, fast_tmp: Path
) -> None:
    repo = make_repo(fast_tmp / "repo")
    async with planes() as plane:
        spawn = SpawnRequest(task="hog", repo=str(repo), command=HOG, config={"sandbox": {"limits": {"memoryMb": 96}}})
        agent = await plane.wait_for_end((await plane.spawn(spawn)).id, timeout=60)
    assert agent.state is AgentState.FAILED
    assert agent.last_error == "memory limit"
    assert agent.outcome["reason"] == "memory limit" and agent.exit_code == 137
    shown = agent_json(agent)
    assert shown["resources"]["limits"] == {"memoryMb": 96}
    usage = shown["resources"]["usage"]
    assert usage["oomKills"] >= 1 and 0 < usage["peakMemoryBytes"] <= 96 << 20 and usage["cpuSeconds"] > 0
    assert shown["config"]["sandbox"]["limits"] == {"memoryMb": 96}  # what was asked, as the spec's AgentConfig


async def test_server_defaults_apply_and_the_spawn_wins_over_them(planes: Planes, fast_tmp: Path) -> None:
    repo = make_repo(fast_tmp / "repo")
    async with planes(agent_memory_mb=96, agent_pids=64) as plane:
        held = await plane.wait_for_end((await plane.spawn(SpawnRequest("hog", str(repo), command=HOG))).id, timeout=60)
        roomy = SpawnRequest("hog", str(repo), command=HOG, config={"sandbox": {"limits": {"memoryMb": 1024}}})
        freed = await plane.wait_for_end((await plane.spawn(roomy)).id, timeout=60)
    assert held.state is AgentState.FAILED and held.last_error == "memory limit"
    assert held.metadata["resourceLimits"] == {"memoryMb": 96, "pids": 64}
    assert freed.state is AgentState.COMPLETED, freed.last_error
    assert freed.metadata["resourceLimits"] == {"memoryMb": 1024, "pids": 64}
    assert freed.outcome["resources"]["peakMemoryBytes"] > 256 << 20


async def test_a_teams_resource_limits_are_its_agents_defaults(planes: Planes, fast_tmp: Path) -> None:
    repo = make_repo(fast_tmp / "repo")
    async with planes() as plane:
        team, _ = await plane.store.add_team(
            Team(id=new_id(), name="limited", config={"strategy": "parallel", "resourceLimits": {"memoryMb": 96}}),
            actor="test",
        )
        req = SpawnRequest("hog", str(repo), command=HOG, team_id=team.id)
        agent = await plane.wait_for_end((await plane.spawn(req)).id, timeout=60)
    assert agent.metadata["resourceLimits"] == {"memoryMb": 96}
    assert agent.state is AgentState.FAILED and agent.last_error == "memory limit"
