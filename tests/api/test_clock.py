"""Time that the tests move: a ``ManualClock`` injected into a real control plane (real processes, real git, real
SQLite), so an hour-long timeout, backoff or cleanup delay is checked in milliseconds and on both sides of its
edge. The loops are driven by hand (``tick``, ``admit_once``), as in ``test_races``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from godel.core.clock import ManualClock
from godel.core.states import AgentState
from godel.scheduler.plane import ControlPlane
from godel.settings import Settings
from tests.api.conftest import kill_runs, settings_for
from tests.api.test_races import exited, launched, req, settle, until

HOUR = 3600.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC))


@pytest.fixture
def hour_settings(fast_tmp: Path) -> Settings:
    return settings_for(fast_tmp / "home", retry_backoff=HOUR, retry_backoff_max=4 * HOUR)


@pytest.fixture
async def plane(hour_settings: Settings, clock: ManualClock) -> AsyncIterator[ControlPlane]:
    p = ControlPlane(hour_settings, clock=clock)
    await p.start(background=False)
    try:
        yield p
    finally:
        await kill_runs(p)
        await settle(p)
        await p.stop()


async def test_a_delayed_cleanup_waits_for_its_hour_on_the_clock(
    plane: ControlPlane, clock: ManualClock, git_repo: Path
) -> None:
    agent_id = await launched(plane, req(git_repo, "echo done > out.txt", cleanup="delayed", cleanup_delay=HOUR))
    await until(exited(plane, agent_id))
    await plane.supervisor.tick()
    await settle(plane)
    agent = await plane.get(agent_id)
    assert agent.state == AgentState.COMPLETED
    workspace = Path(agent.worktree or "")
    await until(lambda: _is(clock.sleepers == 1))  # the timer is armed
    clock.advance(HOUR - 1)
    await asyncio.sleep(0)
    assert workspace.is_dir() and clock.sleepers == 1, "cleaned up before its delay"
    clock.advance(1)
    await until(lambda: _is(not workspace.exists()))
    assert clock.sleepers == 0
    # Once its delay is over the cleanup is work in flight, not a timer: it is waited for (here and at shutdown)
    # and recorded, never cancelled halfway through.
    await settle(plane)
    assert (await plane.get(agent_id)).worktree is None


async def test_a_timeout_of_an_hour_ends_the_run_when_the_clock_passes_it(
    plane: ControlPlane, clock: ManualClock, git_repo: Path
) -> None:
    agent_id = await launched(plane, req(git_repo, "sleep 600", timeout=HOUR))
    clock.advance(HOUR - 1)
    await plane.supervisor.tick()
    await settle(plane)
    assert (await plane.get(agent_id)).state == AgentState.EXECUTING, "ended before its timeout"
    clock.advance(2)
    await plane.supervisor.tick()
    await settle(plane)
    agent = await plane.get(agent_id)
    assert agent.state == AgentState.FAILED
    assert "timed out after 3600s" in (agent.last_error or "")


async def test_a_retry_waits_out_its_backoff_on_the_clock(
    plane: ControlPlane, clock: ManualClock, git_repo: Path
) -> None:
    agent_id = await launched(plane, req(git_repo, "exit 3", max_retries=1))
    await until(exited(plane, agent_id))
    await plane.supervisor.tick()
    await settle(plane)
    agent = await plane.get(agent_id)
    assert agent.state == AgentState.PENDING and agent.retry_count == 1
    clock.advance(HOUR - 1)  # the first retry's backoff is the base: an hour
    assert await plane.supervisor.admit_once() == 0, "admitted before its backoff ran out"
    clock.advance(2)
    assert await plane.supervisor.admit_once() == 1
    await settle(plane)
    assert (await plane.get(agent_id)).state in (AgentState.EXECUTING, AgentState.FAILED)


async def _is(value: bool) -> bool:
    return value
