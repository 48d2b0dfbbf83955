"""Gemini CLI driven end to end by Godel against the scripted model (the real CLI, in a real worktree)."""

from __future__ import annotations

import asyncio
import time

import psutil
import pytest

from godel.core.states import AgentState
from tests.agents.conftest import RigFactory, in_the_sandbox_too, model_for, proc_state, require_cli
from tests.conftest import run_git

pytestmark = pytest.mark.usefixtures("_gemini")

KIND = "gemini"
WRITE = {"tool_call": {"name": "write_file", "arguments": {"file_path": "hello.txt", "content": "hello from gemini\n"}}}
EDIT = [WRITE, {"text": "Created hello.txt."}]


@pytest.fixture
def _gemini() -> None:
    require_cli(KIND)


async def test_edit_completes_with_events_usage_transcript_and_branch(rig: RigFactory) -> None:
    async with rig(EDIT) as r:
        agent = await r.spawn(KIND, "create hello.txt", timeout=90)
        done = await r.wait_ended(agent.id, timeout=90)
        assert done.state == AgentState.COMPLETED, done.last_error
        assert done.outcome["result"] == "Created hello.txt."
        usage = done.outcome["usage"]
        # gemini reports the run's totals; they are what the scripted model counted
        assert usage["outputTokens"] == r.model.usage_reported.output_tokens == 10
        assert usage["inputTokens"] == r.model.usage_reported.input_tokens > 0
        calls = await r.events(agent.id, "agent:tool_call")
        assert [(e.payload["name"], e.payload["input"]["file_path"]) for e in calls] == [("write_file", "hello.txt")]
        results = await r.events(agent.id, "agent:tool_result")
        assert [e.payload["isError"] for e in results] == [False]
        assert run_git(r.repo, "show", f"{done.branch}:hello.txt") == "hello from gemini"
        sessions = await r.plane.store.list_sessions(agent.id)
        assert len(sessions) == 1 and sessions[0].status.value == "completed"
        kinds = [m["kind"] for m in sessions[0].context["messages"]]
        assert kinds == ["message", "tool_call", "tool_result", "message"]
        assert sessions[0].context["nativeSession"]


# Local only: in a sandbox the CLI reaches a dead provider through the gateway, which answers 502 (tests/gateway).
async def test_endpoint_down_fails_fast_with_the_reason(rig: RigFactory) -> None:
    async with rig(None) as r:
        started = time.monotonic()
        agent = await r.spawn(KIND, "create hello.txt", model=model_for(KIND, down=True), timeout=60)
        done = await r.wait_ended(agent.id, timeout=60)
        assert done.state == AgentState.FAILED
        assert "fetch failed" in (done.last_error or "")
        assert done.outcome["providerError"] is True
        assert time.monotonic() - started < 30  # general.maxAttempts=1: no 220 s of retries


async def test_scripted_failure_mid_run_fails_not_completes(rig: RigFactory) -> None:
    turns = [WRITE, {"error": {"status": 500, "message": "scripted failure mid-run"}}]
    async with rig(turns) as r:
        agent = await r.spawn(KIND, "create hello.txt", timeout=90)
        done = await r.wait_ended(agent.id, timeout=90)
        assert done.state == AgentState.FAILED
        assert "scripted failure mid-run" in (done.last_error or "")
        assert done.outcome["providerError"] is True
        assert [q.outcome for q in r.model.requests] == ["turn", "error"]  # no retry of the failed request


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


@in_the_sandbox_too
async def test_pause_resume_and_kill_a_running_gemini(rig: RigFactory) -> None:
    async with rig([{**WRITE, "delay": 30}]) as r:
        agent = await r.spawn(KIND, "create hello.txt", timeout=90)
        running = await r.wait_state(agent.id, AgentState.EXECUTING)
        assert running.pid
        deadline = time.monotonic() + 45
        while not r.model.requests:  # gemini is waiting for the scripted model's delayed reply
            assert time.monotonic() < deadline, "gemini never asked the model"
            await asyncio.sleep(0.1)
        tree = _tree(running.pid)
        assert len(tree) >= 2  # the wrapper shell and gemini's node process(es)
        paused = await r.plane.pause(agent.id, actor="test")
        assert paused.state == AgentState.PAUSED
        assert all(proc_state(p.pid) == "T" for p in tree)
        resumed = await r.plane.resume(agent.id, actor="test")
        assert resumed.state == AgentState.EXECUTING
        assert all(proc_state(p.pid) != "T" for p in tree)
        killed = await r.plane.kill(agent.id, actor="test", reason="enough")
        assert killed.state == AgentState.KILLED
        for p in tree:
            assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
        assert len(r.model.requests) == 1


@in_the_sandbox_too
async def test_follow_up_continues_the_same_gemini_session(rig: RigFactory) -> None:
    async with rig(EDIT) as r:
        agent = await r.spawn(KIND, "create hello.txt", timeout=90)
        first = await r.wait_ended(agent.id, timeout=90)
        assert first.state == AgentState.COMPLETED, first.last_error
        native = first.context["nativeSession"]
        # The follow-up request carries the earlier conversation -- exactly one tool result, since the adapter
        # drops the duplicate copy headless gemini records -- so the script's last turn answers it.
        await r.plane.continue_agent(agent.id, "thanks, anything else?")
        second = await r.wait_ended(agent.id, timeout=90)
        assert second.state == AgentState.COMPLETED, second.last_error
        assert second.outcome["result"] == "Created hello.txt."
        last = r.model.requests[-1]
        assert last.turn == 1 and last.tool_results == 1
        assert "thanks, anything else?" in str(last.body) and "create hello.txt" in str(last.body)
        sessions = await r.plane.store.list_sessions(agent.id)
        assert [s.parent_id for s in sessions] == [None, sessions[0].id]
        assert sessions[1].context["resumes"] == native
