"""Races and edge cases around the end of a run, driven by hand (no background loops) so each interleaving is
deterministic: big output, a failed commit, pause vs exit, kill vs timeout, restart, crash mid-spawn, delete
mid-launch, shutdown with a delayed cleanup pending."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from godel.core.events import EventFilter
from godel.core.ports import EventQuery
from godel.core.states import AgentState
from godel.scheduler.plane import ControlPlane, SpawnRequest
from godel.settings import Settings
from tests.api.conftest import settings_for
from tests.conftest import run_git


async def settle(plane: ControlPlane) -> None:
    """Wait for every launch and ending in flight."""
    while plane.supervisor._work:
        await asyncio.gather(*list(plane.supervisor._work), return_exceptions=True)


async def launched(plane: ControlPlane, req: SpawnRequest) -> str:
    agent = await plane.spawn(req)
    assert await plane.supervisor.admit_once() == 1
    await settle(plane)
    assert (await plane.get(agent.id)).state == AgentState.EXECUTING
    return agent.id


async def lines(plane: ControlPlane, agent_id: str) -> list[str]:
    out: list[str] = []
    since = 0
    while True:
        page = await plane.store.query_events(
            EventQuery(filter=EventFilter(patterns=("agent:log",), agent_id=agent_id), since=since, limit=1000)
        )
        out += [e.payload["line"] for e in page]
        if len(page) < 1000:
            return out
        since = page[-1].sequence or 0


async def until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)  # polling an observable condition


def admitted(plane: ControlPlane) -> Any:
    async def check() -> bool:
        return await plane.supervisor.admit_once() == 1

    return check


def exited(plane: ControlPlane, agent_id: str) -> Any:
    async def check() -> bool:
        w = plane.supervisor.runs[agent_id]
        return (await plane.runtime.status(w.handle)).state.value == "exited"

    return check


@pytest.fixture
def manual_settings(fast_tmp: Path) -> Settings:
    return settings_for(fast_tmp / "home")


@pytest.fixture
async def manual(manual_settings: Settings) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(manual_settings)
    await plane.start(background=False)
    try:
        yield plane
    finally:
        for agent_id in list(plane.supervisor.runs):
            await plane.kill(agent_id, actor="test")
        await plane.stop()


def req(repo: Path, command: str, **kw: Any) -> SpawnRequest:
    return SpawnRequest(task="t", repo=str(repo), command=command, **kw)


async def test_output_beyond_one_read_is_ingested_completely(manual: ControlPlane, git_repo: Path) -> None:
    # 8,000 lines of 408 bytes: 3.3 MB, several times what the runtime returns in one read of a stream.
    command = "awk 'BEGIN { for (i = 1; i <= 8000; i++) printf \"%06d %0400d\\n\", i, 0 }'"
    agent_id = await launched(manual, req(git_repo, command))
    await until(exited(manual, agent_id))
    await manual.supervisor.tick()
    await settle(manual)
    assert (await manual.get(agent_id)).state == AgentState.COMPLETED
    got = await lines(manual, agent_id)
    assert [int(line.split()[0]) for line in got] == list(range(1, 8001))


async def test_a_failed_commit_loses_no_line(
    manual: ControlPlane, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent_id = await launched(manual, req(git_repo, "echo one; echo two; sleep 30"))
    await until(lambda: _grown(manual, agent_id))
    real = manual.store.append_events
    calls = {"n": 0}

    async def failing_once(*a: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database went away for a moment")
        return await real(*a, **kw)

    monkeypatch.setattr(manual.store, "append_events", failing_once)
    await manual.supervisor.tick()  # the commit fails: nothing may be marked as read
    await manual.supervisor.tick()
    assert await lines(manual, agent_id) == ["one", "two"]


async def _grown(plane: ControlPlane, agent_id: str) -> bool:
    w = plane.supervisor.runs[agent_id]
    out, _ = await plane.runtime.read_output(w.handle, {})
    return len(out) >= 2


async def test_exit_racing_a_pause_still_completes(manual: ControlPlane, git_repo: Path) -> None:
    agent_id = await launched(manual, req(git_repo, "echo done"))
    await until(exited(manual, agent_id))
    paused = await manual.pause(agent_id)  # the process is already gone; the pause is recorded anyway
    assert paused.state == AgentState.PAUSED
    await manual.supervisor.tick()
    await settle(manual)
    final = await manual.get(agent_id)
    assert final.state == AgentState.COMPLETED and final.exit_code == 0
    assert await manual.store.count_agents([AgentState.PAUSED]) == 0


async def test_kill_during_a_timeout_grace_records_each_line_once(manual: ControlPlane, git_repo: Path) -> None:
    command = "trap 'echo got-term; sleep 0.3; echo late; exit 1' TERM; echo start; while true; do sleep 0.05; done"
    agent_id = await launched(manual, req(git_repo, command, timeout=0.3))
    await until(lambda: _grown_one(manual, agent_id))
    await asyncio.sleep(0.35)  # let the 0.3 s timeout pass
    await manual.supervisor.tick()  # claims the run for the timeout and starts ending it
    killed = await manual.kill(agent_id)  # loses the claim, waits for the ending, then acts on what it left
    await settle(manual)
    got = await lines(manual, agent_id)
    assert got.count("start") == 1 and got.count("got-term") == 1 and got.count("late") == 1, got
    # Timed out → failed (no retries left) → the kill is legal from failed and has the last word.
    moves = [(t.trigger, t.to_state.value) for t in await manual.transitions(agent_id)]
    assert moves[-2:] == [("timeout", "failed"), ("kill", "killed")] and killed.state == AgentState.KILLED


async def _grown_one(plane: ControlPlane, agent_id: str) -> bool:
    w = plane.supervisor.runs[agent_id]
    out, _ = await plane.runtime.read_output(w.handle, {})
    return len(out) >= 1


async def test_restart_keeps_the_stopped_runs_last_output(manual: ControlPlane, git_repo: Path) -> None:
    agent_id = await launched(
        manual, req(git_repo, "trap 'echo bye; exit 0' TERM; echo hello; while :; do sleep 0.05; done")
    )
    await until(lambda: _grown_one(manual, agent_id))
    restarted = await manual.restart(agent_id)
    assert restarted.state == AgentState.PENDING and restarted.exit_code is not None
    got = await lines(manual, agent_id)
    assert got[:2] == ["hello", "bye"] and got.count("bye") == 1  # (the shell may add "Terminated")


async def die(plane: ControlPlane) -> None:
    """The server dies here: its work stops where it is (nothing graceful is recorded), its connections close."""
    for task in [*plane.supervisor._work, *plane.supervisor._timers]:
        task.cancel()
    await asyncio.gather(*plane.supervisor._work, *plane.supervisor._timers, return_exceptions=True)
    await plane.waiter.stop()  # listeners only: they record nothing
    await plane.task_queue.stop()
    await plane.store.close()


async def _crash_at(plane: ControlPlane, monkeypatch: pytest.MonkeyPatch, trigger: str) -> None:
    """From now on the server 'dies' (its task is cancelled) the moment it would record ``trigger``."""
    real = plane.store.transition_agent

    async def crash(agent_id: str, t: Any, **kw: Any) -> Any:
        if t.value == trigger:
            raise asyncio.CancelledError
        return await real(agent_id, t, **kw)

    monkeypatch.setattr(plane.store, "transition_agent", crash)


async def test_crash_after_the_launch_adopts_the_unrecorded_process(
    manual_settings: Settings, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = ControlPlane(manual_settings)
    await plane.start(background=False)
    gate = manual_settings.home / "gate"
    agent = await plane.spawn(req(git_repo, f"echo one; while [ ! -e {gate} ]; do sleep 0.02; done; echo two"))
    await _crash_at(plane, monkeypatch, "session_started")  # launched, the pid not yet in the store
    await plane.supervisor.admit_once()
    await settle(plane)
    pid_file = manual_settings.logs_dir / agent.id / "pid"

    async def recorded() -> bool:  # the wrapper writes it as its first act
        return pid_file.exists()

    await until(recorded)
    pid = int(pid_file.read_text().split()[0])
    assert psutil.pid_exists(pid) and (await plane.store.get_agent(agent.id)).state == AgentState.SPAWNING
    await die(plane)

    second = ControlPlane(manual_settings)  # the restarted server
    await second.start(background=False)
    try:
        running = await second.get(agent.id)
        assert running.state == AgentState.EXECUTING and running.pid == pid  # the same process, adopted
        gate.touch()
        await until(exited(second, agent.id))
        await second.supervisor.tick()
        await settle(second)
        after = await second.get(agent.id)
        assert after.state == AgentState.COMPLETED and after.exit_code == 0, after.last_error
        assert await lines(second, agent.id) == ["one", "two"]  # every line once
        sessions = await second.store.list_sessions(agent.id)
        assert [s.status.value for s in sessions] == ["completed"]  # the launch's own session, not a second one
    finally:
        await second.stop()


async def test_crash_before_the_launch_queues_the_agent_again(
    manual_settings: Settings, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = ControlPlane(manual_settings)
    await plane.start(background=False)
    agent = await plane.spawn(req(git_repo, "echo ran"))

    async def die_before_start(*a: Any, **kw: Any) -> Any:
        raise asyncio.CancelledError  # the server dies with the session committed, nothing started

    monkeypatch.setattr(plane.runtime, "start", die_before_start)
    await plane.supervisor.admit_once()
    await settle(plane)
    assert (await plane.store.get_agent(agent.id)).state == AgentState.SPAWNING
    assert not (manual_settings.logs_dir / agent.id / "pid").exists()  # nothing was launched
    await die(plane)

    second = ControlPlane(manual_settings)
    await second.start(background=False)
    try:
        queued = await second.get(agent.id)
        assert queued.state == AgentState.PENDING and queued.retry_count == 0  # nothing ran: no attempt spent
        issued = [k for k in await second.store.list_api_keys(kind="agent", revoked=True) if k["agent_id"] == agent.id]
        live = [k for k in await second.store.list_api_keys(kind="agent") if k["agent_id"] == agent.id]
        assert issued and not live  # the credential made for the launch that never started no longer works
        assert [t.trigger for t in await second.transitions(agent.id)][-1] == "requeue"
        assert await second.supervisor.admit_once() == 1
        await settle(second)
        await until(exited(second, agent.id))
        await second.supervisor.tick()
        await settle(second)
        after = await second.get(agent.id)
        assert after.state == AgentState.COMPLETED, after.last_error
        assert await lines(second, agent.id) == ["ran"]
        statuses = [s.status.value for s in await second.store.list_sessions(agent.id)]
        assert statuses == ["failed", "completed"]  # the launch that never started is closed, with its reason
    finally:
        await second.stop()


async def test_force_delete_while_initializing_leaves_no_worktree(manual: ControlPlane, git_repo: Path) -> None:
    agent = await manual.spawn(req(git_repo, "true", setup="sleep 0.5"))
    await manual.supervisor.admit_once()
    await until(lambda: _state_is(manual, agent.id, AgentState.INITIALIZING))
    await manual.delete(agent.id, force=True)
    await settle(manual)
    assert not (manual.settings.worktrees_dir / agent.id).exists()
    assert str(manual.settings.worktrees_dir / agent.id) not in run_git(git_repo, "worktree", "list")


async def _state_is(plane: ControlPlane, agent_id: str, state: AgentState) -> bool:
    return (await plane.get(agent_id)).state == state


async def test_stop_does_not_wait_for_a_delayed_cleanup(manual_settings: Settings, git_repo: Path) -> None:
    plane = ControlPlane(manual_settings)
    await plane.start(background=False)
    agent_id = await launched(plane, req(git_repo, "true", cleanup="delayed", cleanup_delay=3600))
    await until(exited(plane, agent_id))
    await plane.supervisor.tick()
    await settle(plane)
    assert (await plane.get(agent_id)).state == AgentState.COMPLETED
    started = time.monotonic()
    await plane.stop()
    assert time.monotonic() - started < 5


class _FaultyParser:
    """Raises on ``BOOM``; ``USAGE n`` is a usage signal of n output tokens; otherwise the command protocol."""

    def __init__(self) -> None:
        from godel.agents.command import CommandParser

        self.inner = CommandParser()
        self.seen = 0  # parser state that a failed commit must roll back

    def feed(self, stream: str, line: str) -> list[Any]:
        from godel.core.ports import AgentSignal, SignalKind

        self.seen += 1
        if line == "BOOM":
            raise ValueError("unexpected line")
        if line.startswith("USAGE "):
            return [AgentSignal(SignalKind.USAGE, {"outputTokens": int(line.split()[1]), "seen": self.seen})]
        return self.inner.feed(stream, line)

    def finish(self) -> list[Any]:
        return []


class FaultyAdapter:
    """The command agent with a parser that fails on some lines (registered by the tests below)."""

    def __new__(cls) -> Any:
        from godel.agents.command import CommandAdapter

        adapter = CommandAdapter()
        adapter.parser = _FaultyParser  # type: ignore[method-assign,assignment]
        return adapter


@pytest.fixture
def faulty(monkeypatch: pytest.MonkeyPatch) -> None:
    import godel.agents as agents

    monkeypatch.setitem(agents._ADAPTERS, "command", "tests.api.test_races:FaultyAdapter")


@pytest.mark.usefixtures("faulty")
async def test_a_parser_that_raises_does_not_stop_supervision(manual: ControlPlane, git_repo: Path) -> None:
    broken = await launched(manual, req(git_repo, "echo BOOM; echo 'GODEL_RESULT: still fine'"))
    other = await launched(manual, req(git_repo, "echo hello"))
    await until(exited(manual, broken))
    await until(exited(manual, other))
    for _ in range(3):
        await manual.supervisor.tick()
        await settle(manual)
    assert (await manual.get(other)).state == AgentState.COMPLETED
    done = await manual.get(broken)
    assert done.state == AgentState.COMPLETED and done.outcome["result"] == "still fine"
    errors = await manual.events(EventQuery(filter=EventFilter(patterns=("agent:error",), agent_id=broken)))
    assert [e.payload["source"] for e in errors] == ["godel"]
    assert "ValueError: unexpected line" in errors[0].payload["message"]
    assert await lines(manual, broken) == ["BOOM", "GODEL_RESULT: still fine"]  # every line kept


@pytest.mark.usefixtures("faulty")
async def test_a_failed_commit_counts_usage_once_and_rolls_the_parser_back(
    manual: ControlPlane, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent_id = await launched(manual, req(git_repo, "echo 'USAGE 5'; echo 'USAGE 7'; sleep 30"))
    await until(lambda: _grown(manual, agent_id))
    real = manual.store.append_events
    calls = {"n": 0}

    async def failing_once(*a: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database went away for a moment")
        return await real(*a, **kw)

    monkeypatch.setattr(manual.store, "append_events", failing_once)
    await manual.supervisor.tick()  # ingested, commit failed: usage and parser state go back
    await manual.supervisor.tick()
    w = manual.supervisor.runs[agent_id]
    assert w.usage["outputTokens"] == 12 and w.usage["calls"] == 2
    usage = await manual.events(EventQuery(filter=EventFilter(patterns=("agent:usage",), agent_id=agent_id)))
    assert [e.payload["seen"] for e in usage] == [1, 2]  # the parser was rolled back, not fed twice
    assert (await manual.get(agent_id)).outcome["usage"]["outputTokens"] == 12


async def test_a_crash_between_a_failure_and_its_retry_still_retries(
    manual_settings: Settings, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = ControlPlane(manual_settings)
    await plane.start(background=False)
    marker = manual_settings.home / "tried-once"
    agent = await plane.spawn(req(git_repo, f"[ -e {marker} ] && echo second || {{ touch {marker}; exit 1; }}",
                                  max_retries=1))  # fmt: skip
    await _crash_at(plane, monkeypatch, "retry")  # the failure is committed, its retry never is
    await plane.supervisor.admit_once()
    await settle(plane)
    await until(exited(plane, agent.id))
    await plane.supervisor.tick()
    await settle(plane)
    failed = await plane.store.get_agent(agent.id)
    assert failed.state == AgentState.FAILED and failed.retry_count == 0
    await die(plane)

    second = ControlPlane(manual_settings)
    await second.start(background=False)
    try:
        assert second.reconcile_report["retried"] == 1
        await until(admitted(second))  # once its retry's backoff is over
        await settle(second)
        await until(exited(second, agent.id))
        await second.supervisor.tick()
        await settle(second)
        after = await second.get(agent.id)
        assert (after.state, after.retry_count) == (AgentState.COMPLETED, 1), after.last_error
    finally:
        await second.stop()


async def test_an_agent_that_removes_its_git_link_is_still_retried(manual: ControlPlane, git_repo: Path) -> None:
    marker = manual.settings.home / "broke-it"
    command = f"if [ -e {marker} ]; then echo again; else touch {marker}; rm -f .git; exit 1; fi"
    agent = await manual.spawn(req(git_repo, command, max_retries=1))
    for _ in range(2):  # the first attempt, then its retry (which must clean the broken workspace up first)
        await until(admitted(manual))  # the retry once its backoff is over
        await settle(manual)
        await until(exited(manual, agent.id))
        await manual.supervisor.tick()
        await settle(manual)
    after = await manual.get(agent.id)
    assert (after.state, after.retry_count) == (AgentState.COMPLETED, 1), after.last_error
    assert (await lines(manual, agent.id))[-1] == "again"


async def test_a_kill_while_the_start_is_recorded_closes_the_runs_session(
    manual: ControlPlane, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = await manual.spawn(req(git_repo, "sleep 60"))
    real = manual.store.transition_agent

    pids: list[int] = []

    async def killed_first(agent_id: str, trigger: Any, **kw: Any) -> Any:
        if trigger.value == "session_started":
            pids.append(manual.supervisor.runs[agent_id].handle.pid or 0)
            await manual.kill(agent_id, reason="killed as it starts")  # claims the registered, starting run
        return await real(agent_id, trigger, **kw)

    monkeypatch.setattr(manual.store, "transition_agent", killed_first)
    await manual.supervisor.admit_once()
    await settle(manual)
    after = await manual.store.get_agent(agent.id)
    assert after.state == AgentState.KILLED
    sessions = await manual.store.list_sessions(agent.id)
    assert sessions and all(s.completed_at is not None for s in sessions), [s.status for s in sessions]
    (pid,) = pids
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_credentials_and_spawn_secrets_never_reach_the_log(manual: ControlPlane, git_repo: Path) -> None:
    secret = "s3cret-value-of-the-user"
    command = 'echo "key=$GODEL_API_KEY"; echo "mine=$MY_SECRET"; echo "typed=godel_vk_AbCdEfGh1234567890"'
    agent_id = await launched(manual, req(git_repo, command, env={"MY_SECRET": secret}))
    await until(exited(manual, agent_id))
    await manual.supervisor.tick()
    await settle(manual)
    got = await lines(manual, agent_id)
    assert got == ["key=[redacted]", "mine=[redacted]", "typed=[redacted]"], got


async def test_a_hold_on_a_queued_agent_pauses_it_the_moment_it_starts(manual: ControlPlane, git_repo: Path) -> None:
    gate = manual.settings.home / "go"
    agent = await manual.spawn(req(git_repo, f"echo started; while [ ! -e {gate} ]; do sleep 0.02; done; echo done"))
    await manual.hold(agent.id, by="team:t1", reason="team paused")  # still pending: nothing to pause yet
    assert (await manual.get(agent.id)).state == AgentState.PENDING
    assert await manual.supervisor.admit_once() == 1
    await settle(manual)  # the launch: its start is committed, then the hold applied
    held = await manual.get(agent.id)
    assert (held.state, held.paused_by) == (AgentState.PAUSED, "team:t1")
    await manual.release(agent.id, by="someone-else", reason="not theirs")  # another's release changes nothing
    assert (await manual.get(agent.id)).state == AgentState.PAUSED
    await manual.release(agent.id, by="team:t1", reason="team resumed")
    resumed = await manual.get(agent.id)
    assert resumed.state == AgentState.EXECUTING and "godel:hold" not in resumed.metadata
    gate.touch()
    await until(exited(manual, agent.id))
    await manual.supervisor.tick()
    await settle(manual)
    assert (await manual.get(agent.id)).state == AgentState.COMPLETED
    assert await lines(manual, agent.id) == ["started", "done"]
