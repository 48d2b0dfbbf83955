"""Races on the overlapped spawn (commits 1fc6960, 608d6b6): admission in the creating transaction
(``Supervisor.create``, ``SqlStore.create_and_admit``) and the run's request, credentials and Session made while
``git worktree add`` runs (``launching._open_run``). Each test failed on that code (a hostile review's) and names
the defect; they pass since a kill, delete or restart stops a launch in flight and waits for it
(``Supervisor.stop_launch``), and a launch takes back what it made, by id.

Driven by hand, as ``test_races.py`` is: ``start(background=False)``, then ``_auto_admit`` set as the admission loop
sets it while it runs, so a spawn is admitted as it is created but no loop acts behind the test's back. Where the
moment matters, the checkout waits on an ``asyncio.Event`` (the workspace is prepared exactly as usual once it is
set), so a kill, a delete or a second launch lands inside the checkout every time, whatever the machine's load.
Real git, real processes, SQLite and PostgreSQL.

Attacks that held (not kept here, see the review's report): max_concurrent_agents under concurrent spawns, on one
server and on two servers sharing PostgreSQL; a queued higher-priority agent is not jumped by a spawn; budgetLimit
and background=False queue; agent:created / agent:initializing consecutive in one transaction; a repo deleted before
the launch; a kill during the checkout (after the session was made, and while it was being made); a hold during the
checkout; a crash between create_and_admit and the launch, and one during the checkout, both requeued with the
session closed and the credential revoked; Popen on the loop uses vfork (no cost growth with the server's RSS).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from godel.core.ids import branch_for
from godel.core.states import AgentState
from godel.core.transitions import Trigger
from godel.errors import ConflictError
from godel.scheduler.plane import ControlPlane, SpawnRequest
from godel.settings import Settings
from godel.store import tables
from godel.store.access_tables import api_keys
from tests.api.conftest import settings_for
from tests.conformance import conftest as store_suite
from tests.conftest import run_git
from tests.tasks.conftest import empty

# SQLite (a file on tmpfs) and the machine's PostgreSQL, as the store suite parametrizes them.
sqlite_dir = store_suite.sqlite_dir
postgres_url = store_suite.postgres_url
store_url = store_suite.store_url


# ------------------------------------------------------------------------------------------------ harness


async def settle(plane: ControlPlane) -> None:
    """Wait for every launch and ending in flight."""
    while plane.supervisor._work:
        await asyncio.gather(*list(plane.supervisor._work), return_exceptions=True)


def req(repo: Path, command: str = "sleep 30", **kw: Any) -> SpawnRequest:
    return SpawnRequest(task="t", repo=str(repo), command=command, **kw)


@pytest.fixture
async def db_settings(store_url: str, fast_tmp: Path) -> Settings:
    await empty(store_url)
    return settings_for(fast_tmp / "home", database_url=store_url, max_concurrent_agents=2)


@pytest.fixture
async def auto(db_settings: Settings) -> AsyncIterator[ControlPlane]:
    """A plane driven by hand that admits on creation, as one whose admission loop runs does."""
    plane = ControlPlane(db_settings)
    await plane.start(background=False)
    plane.supervisor._auto_admit = True  # what admission_loop sets; the loop itself is not started
    try:
        yield plane
    finally:
        await settle(plane)
        for agent_id in list(plane.supervisor.runs):
            await plane.kill(agent_id, actor="test")
        await settle(plane)
        await plane.stop()


class CheckoutGate:
    """Holds the first ``prepare`` (the checkout) of the plane's runtime until ``open()``; later ones run freely."""

    def __init__(self, plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = asyncio.Event()
        self._open = asyncio.Event()
        self._calls = 0
        real = plane.runtime.prepare

        async def prepare(spec: Any) -> Any:
            self._calls += 1
            if self._calls == 1:
                self.entered.set()
                await self._open.wait()
            return await real(spec)

        monkeypatch.setattr(plane.runtime, "prepare", prepare)

    def open(self) -> None:
        self._open.set()


async def live_credentials(plane: ControlPlane, agent_id: str) -> list[str]:
    async with plane.store.engine.connect() as conn:
        found = await conn.execute(
            sa.select(api_keys.c.id).where(api_keys.c.agent_id == agent_id, api_keys.c.revoked_at.is_(None))
        )
        return [r[0] for r in found]


async def open_sessions(plane: ControlPlane, agent_id: str) -> list[str]:
    s = tables.sessions
    async with plane.store.engine.connect() as conn:
        found = await conn.execute(sa.select(s.c.id).where(s.c.agent_id == agent_id, s.c.completed_at.is_(None)))
        return [r[0] for r in found]


async def launching(plane: ControlPlane, request: SpawnRequest) -> str:
    """Spawn and have the launch begun: at creation here; by an admission pass on code that admits only there."""
    agent = await plane.spawn(request)
    if (await plane.get(agent.id)).state == AgentState.PENDING:
        assert await plane.supervisor.admit_once() == 1
    return agent.id


def branches(repo: Path) -> list[str]:
    return run_git(repo, "branch", "--format=%(refname:short)").split()


# ------------------------------------------------------------------------------------------------ defects


async def test_a_kill_right_after_spawn_leaves_no_workspace_or_branch(
    auto: ControlPlane, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spawn, then kill at once: the pattern of the task queue's ``discard``, a workflow cancelled while its step
    was being spawned, the refinery giving up. Before the change the agent was still ``pending`` and the kill left
    nothing behind. Now the spawn has already admitted it and started ``git worktree add``: the launch finishes the
    checkout after the kill, ``_abandon_unstarted`` applies the cleanup policy (``manual`` by default) and a
    worktree plus a ``godel/<id>`` branch stay in the user's repo for an agent that never ran ("nothing ran; take
    the workspace back", says its docstring)."""
    gate = CheckoutGate(auto, monkeypatch)
    agent = await auto.spawn(req(git_repo))
    assert agent.state == AgentState.PENDING  # what the caller (the POST's 201) is told
    killed = await auto.kill(agent.id, actor="test")
    assert killed.state == AgentState.KILLED
    gate.open()
    await settle(auto)
    assert await live_credentials(auto, agent.id) == []  # held
    assert await open_sessions(auto, agent.id) == []  # held
    assert not (auto.settings.worktrees_dir / agent.id).exists(), "a worktree was made for a killed agent"
    assert branch_for(agent.id) not in branches(git_repo), "a branch was made for a killed agent"


async def test_a_forced_delete_right_after_spawn_leaves_no_branch(
    auto: ControlPlane, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``DELETE ?force=true`` right after the spawn: the row is gone, then the checkout the spawn started completes;
    ``_abandon_unstarted`` finds no agent and removes the directory only (``Worktrees.remove``: "the branch stays"),
    so the user's repo keeps a ``godel/<id>`` branch that no agent, API call or cleanup will ever name again."""
    gate = CheckoutGate(auto, monkeypatch)
    agent = await auto.spawn(req(git_repo))
    await auto.delete(agent.id, force=True, actor="test")
    gate.open()
    await settle(auto)
    assert await live_credentials(auto, agent.id) == []  # held
    assert not (auto.settings.worktrees_dir / agent.id).exists()  # held
    assert branch_for(agent.id) not in branches(git_repo), "the deleted agent's branch was left in the repo"


async def test_a_just_spawned_agent_can_be_deleted_without_force(
    auto: ControlPlane, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spawn answers ``pending``; a ``DELETE`` without force of a pending agent is allowed. It is now a 409
    ("is initializing; kill it first or delete with force=true"): the agent was admitted in the creating transaction
    though the caller was told it is queued. An API change every client that spawns-then-cancels meets."""
    gate = CheckoutGate(auto, monkeypatch)
    agent = await auto.spawn(req(git_repo))
    assert agent.state == AgentState.PENDING
    try:
        await auto.delete(agent.id, actor="test")
    except ConflictError as exc:
        pytest.fail(f"DELETE of the agent the spawn reported pending was refused: {exc.message}")
    finally:
        gate.open()
        await settle(auto)


async def test_a_launch_cut_off_by_a_store_error_leaves_no_live_credential(
    auto: ControlPlane, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's credential and Session are now made by a task of their own (``open run <id>``) started before the
    checkout. When the launch then dies of anything but the two errors it expects at ``worktree_created`` (here a
    store error: a lost connection, a locked database), nobody awaits that task: it goes on to issue a valid API
    credential and commit an open Session for a run that will never start, which stay so for as long as the server
    runs. Before the change the credential was made after that commit, so none existed."""
    real = auto.store.transition_agent

    async def flaky(agent_id: str, trigger: Trigger, **kw: Any) -> Any:
        if trigger == Trigger.WORKTREE_CREATED:
            raise RuntimeError("the database went away for a moment")
        return await real(agent_id, trigger, **kw)

    monkeypatch.setattr(auto.store, "transition_agent", flaky)
    agent = await auto.get(await launching(auto, req(git_repo)))
    await settle(auto)  # the launch task has died of the error (logged "supervisor task failed")
    orphans = [t for t in asyncio.all_tasks() if t.get_name() == f"open run {agent.id}"]
    await asyncio.gather(*orphans, return_exceptions=True)  # whatever it was doing, it has done it now
    assert (await auto.get(agent.id)).state == AgentState.INITIALIZING
    assert await live_credentials(auto, agent.id) == [], "a live credential for a launch that died"
    assert await open_sessions(auto, agent.id) == [], "an open session for a launch that died"


async def test_a_stale_launch_does_not_revoke_the_running_launchs_credentials(
    auto: ControlPlane, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kill during the checkout, then restart (allowed: the row says ``killed``, though its launch is still in
    flight), admit, and the new launch runs. The first launch's checkout then fails ("workspace ... already
    exists") and its ``spawn_failed`` revokes *every* credential of the agent and closes *every* open session: the
    running process keeps a revoked GODEL_API_KEY and a closed Session. The mechanism predates the change (it fails
    on ba1c7c6 with the same gate), but admission at creation makes every spawn-kill-restart hit it: the spawn is in
    its checkout before the POST returns."""
    gate = CheckoutGate(auto, monkeypatch)
    agent = await auto.get(await launching(auto, req(git_repo)))
    await gate.entered.wait()
    await auto.kill(agent.id, actor="test")
    await auto.restart(agent.id, actor="test")
    assert await auto.supervisor.admit_once() == 1
    second = [t for t in auto.supervisor._work if not t.done()]

    async def second_started() -> bool:
        return (await auto.get(agent.id)).state == AgentState.EXECUTING

    while not await second_started():  # the second launch runs freely (only the first checkout waits)
        await asyncio.wait(second, timeout=0.05)
    gate.open()
    await settle(auto)
    final = await auto.get(agent.id)
    assert final.state == AgentState.EXECUTING
    assert auto.supervisor.runs.get(agent.id) is not None
    assert len(await live_credentials(auto, agent.id)) == 1, "the running launch's credential was revoked"
    assert len(await open_sessions(auto, agent.id)) == 1, "the running launch's session was closed"


async def test_a_kill_just_after_the_checkout_takes_the_workspace_and_branch_back(
    auto: ControlPlane, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other window of a kill right after spawn: the checkout has finished, its ``spawning`` not yet committed.
    The kill cannot cancel a checkout that is over; the launch finds the row killed at ``worktree_created`` and
    takes back the workspace and the branch it made whatever the cleanup policy (``manual`` here), and the kill
    returns only once it has."""
    real = auto.store.transition_agent
    at_record = asyncio.Event()
    go_on = asyncio.Event()

    async def held(agent_id: str, trigger: Trigger, **kw: Any) -> Any:
        if trigger == Trigger.WORKTREE_CREATED:
            at_record.set()
            await go_on.wait()
        return await real(agent_id, trigger, **kw)

    monkeypatch.setattr(auto.store, "transition_agent", held)
    agent = await auto.get(await launching(auto, req(git_repo)))
    await at_record.wait()
    assert (auto.settings.worktrees_dir / agent.id).exists()  # the checkout is done
    kill = asyncio.create_task(auto.kill(agent.id, actor="test"))
    launch = auto.supervisor.launches[agent.id]
    while not launch.stopped:  # set once the kill is committed, as it goes on to wait for the launch
        await asyncio.wait({kill}, timeout=0.01)
    assert (await auto.get(agent.id)).state == AgentState.KILLED
    assert not kill.done()  # it waits for the launch
    go_on.set()
    assert (await kill).state == AgentState.KILLED
    assert not (auto.settings.worktrees_dir / agent.id).exists()
    assert branch_for(agent.id) not in branches(git_repo)
    assert await live_credentials(auto, agent.id) == []
    assert await open_sessions(auto, agent.id) == []
    assert (await auto.get(agent.id)).worktree is None
