"""The engine against the moments users actually hit: a cancel or pause while a step's agent is being spawned or
is still queued, a run that overruns its timeout while a step runs, a fatal failure while another step waits out
its backoff."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from godel.core.models import Agent
from godel.core.ports import AgentQuery
from godel.scheduler.plane import ControlPlane
from godel.scheduler.requests import SpawnRequest
from tests.workflow.conftest import steps_by_id, submit, wait_finished

SLOW = "name: slow\nsteps:\n  - id: a\n    command: sleep 30\n"


@pytest.fixture
def held_spawns(plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[asyncio.Event, asyncio.Event]]:
    """Spawns wait for ``release`` once they have begun (``entered``): a spawn takes its time in real life."""
    entered, release = asyncio.Event(), asyncio.Event()
    real = plane.spawn

    async def spawn(request: SpawnRequest, **kw: Any) -> Agent:
        entered.set()
        await release.wait()
        return await real(request, **kw)

    monkeypatch.setattr(plane, "spawn", spawn)
    yield entered, release
    release.set()


async def agents_of(plane: ControlPlane, workflow_id: str) -> list[Agent]:
    page = await plane.list_agents(AgentQuery(limit=100))
    return [a for a in page.items if a.metadata.get("workflowId") == workflow_id]


async def settled(plane: ControlPlane, workflow_id: str, states: set[str]) -> list[Agent]:
    for _ in range(200):
        agents = await agents_of(plane, workflow_id)
        if agents and all(a.state.value in states for a in agents):
            return agents
        await asyncio.sleep(0.05)  # waiting for the agent to reach its state
    raise AssertionError([(a.id, a.state.value) for a in await agents_of(plane, workflow_id)])


async def test_cancel_while_a_step_is_being_spawned_leaves_no_agent_running(
    client: httpx.AsyncClient, git_repo: Path, plane: ControlPlane, held_spawns: tuple[asyncio.Event, asyncio.Event]
) -> None:
    entered, release = held_spawns
    wf = await submit(client, SLOW, git_repo)
    await asyncio.wait_for(entered.wait(), 10)
    assert (await client.post(f"/api/v1/workflows/{wf['id']}/cancel")).json()["data"]["status"] == "cancelled"
    release.set()
    (agent,) = await settled(plane, wf["id"], {"killed"})  # spawned after the cancel, and killed at once
    assert agent.metadata["stepId"] == "a"


async def test_pause_while_a_step_is_being_spawned_pauses_its_agent(
    client: httpx.AsyncClient, git_repo: Path, plane: ControlPlane, held_spawns: tuple[asyncio.Event, asyncio.Event]
) -> None:
    entered, release = held_spawns
    wf = await submit(client, SLOW, git_repo)
    await asyncio.wait_for(entered.wait(), 10)
    assert (await client.post(f"/api/v1/workflows/{wf['id']}/pause")).json()["data"]["status"] == "paused"
    release.set()
    await settled(plane, wf["id"], {"paused"})
    await client.post(f"/api/v1/workflows/{wf['id']}/resume")
    await settled(plane, wf["id"], {"executing"})
    await client.post(f"/api/v1/workflows/{wf['id']}/cancel")


async def test_pause_holds_a_step_whose_agent_is_still_queued(
    client: httpx.AsyncClient, git_repo: Path, plane: ControlPlane
) -> None:
    # Every slot taken until the test opens the gate (not for a fixed time: on a loaded machine a second can pass
    # before the step's agent is even created, and it would then start at once instead of queueing).
    gate = git_repo.parent / "busy-gate"
    busy = [await plane.spawn(SpawnRequest(task="busy", repo=str(git_repo),
                                           command=f"while [ ! -e {gate} ]; do sleep 0.02; done"))
            for _ in range(plane.settings.max_concurrent_agents)]  # fmt: skip
    wf = await submit(client, SLOW, git_repo)
    (queued,) = await settled(plane, wf["id"], {"pending"})
    assert (await client.post(f"/api/v1/workflows/{wf['id']}/pause")).json()["data"]["status"] == "paused"
    gate.touch()
    for agent in busy:
        await plane.wait_for_end(agent.id, timeout=10)  # the slots free up: the queued agent starts ...
    await settled(plane, wf["id"], {"paused"})  # ... and is paused as soon as it does
    assert (await plane.get(queued.id)).state.value == "paused"
    await client.post(f"/api/v1/workflows/{wf['id']}/cancel")


async def test_a_run_over_its_timeout_is_cancelled_while_a_step_runs(client: httpx.AsyncClient, git_repo: Path) -> None:
    started = time.monotonic()
    wf = await submit(client, "name: late\ntimeout: 1s\nsteps:\n  - id: a\n    command: sleep 20\n", git_repo)
    done = await wait_finished(client, wf["id"], timeout=15)
    assert done["status"] == "cancelled" and time.monotonic() - started < 5
    assert steps_by_id(done)["a"]["status"] == "cancelled", done["steps"]


async def test_a_fatal_failure_ends_the_backoff_of_other_steps(client: httpx.AsyncClient, git_repo: Path) -> None:
    source = (
        "name: fatal\nsteps:\n  - id: a\n    command: sleep 0.5; exit 1\n"
        "  - id: b\n    command: exit 1\n    retries: 3\n    backoff: 2s\n"
    )
    done = await wait_finished(client, (await submit(client, source, git_repo))["id"], timeout=20)
    steps = steps_by_id(done)
    assert done["status"] == "failed" and steps["a"]["status"] == "failed"
    assert steps["b"]["status"] == "cancelled" and len(steps["b"]["attempts"]) == 1  # no try after a failed
