"""codex driven end to end by Godel against the scripted model (the real CLI, in a real worktree)."""

from __future__ import annotations

import time

import pytest

from godel.core.states import AgentState
from tests.agents.conftest import RigFactory, eventually, in_the_sandbox_too, proc_states, require_cli, tree_stops
from tests.conftest import run_git

pytestmark = pytest.mark.usefixtures("_codex")

# codex's shell tool; its apply_patch is a freeform (custom) tool the scripted model cannot emit
EDIT = [
    {"tool_call": {"name": "exec_command", "arguments": {"cmd": "printf 'hello from codex\\n' > hello.txt"}}},
    {"text": "Created hello.txt."},
]


@pytest.fixture
def _codex() -> None:
    require_cli("codex")


async def test_edit_completes_with_events_usage_transcript_and_branch(rig: RigFactory) -> None:
    async with rig(EDIT) as r:
        agent = await r.spawn("codex", "create hello.txt", timeout=60)
        done = await r.wait_ended(agent.id)
        assert done.state == AgentState.COMPLETED, done.last_error
        assert done.outcome["result"] == "Created hello.txt."
        # the scripted model's own count of what it reported is what Godel recorded
        assert done.outcome["usage"]["outputTokens"] == r.model.usage_reported.output_tokens == 10
        assert done.outcome["usage"]["inputTokens"] == r.model.usage_reported.input_tokens
        calls = await r.events(agent.id, "agent:tool_call")
        assert [e.payload["name"] for e in calls] == ["command_execution"]
        assert "hello.txt" in calls[0].payload["input"]["command"]
        results = await r.events(agent.id, "agent:tool_result")
        assert results[0].payload["isError"] is False
        assert run_git(r.repo, "show", f"{done.branch}:hello.txt") == "hello from codex"
        sessions = await r.plane.store.list_sessions(agent.id)
        assert len(sessions) == 1 and sessions[0].status.value == "completed"
        kinds = [m["kind"] for m in sessions[0].context["messages"]]
        assert kinds == ["message", "tool_call", "tool_result", "message"]
        assert sessions[0].context["messages"][0]["text"] == "create hello.txt"
        assert sessions[0].context["nativeSession"] == done.context["nativeSession"]


# Local only: in a sandbox the CLI reaches a dead provider through the gateway, which answers 502 (tests/gateway).
async def test_endpoint_down_fails_fast_with_the_reason(rig: RigFactory) -> None:
    async with rig(None) as r:
        started = time.monotonic()
        agent = await r.spawn("codex", "create hello.txt", model="down-scripted-responses/scripted-model", timeout=60)
        done = await r.wait_ended(agent.id, timeout=30)
        # without unbounded_connection_retries=false codex would wait for the network forever
        assert time.monotonic() - started < 20
        assert done.state == AgentState.FAILED
        assert "connection failed" in (done.last_error or "").lower()
        assert done.outcome["providerError"] is True


async def test_scripted_failure_mid_run_fails_not_completes(rig: RigFactory) -> None:
    turns = [EDIT[0], {"error": {"status": 500, "message": "scripted failure mid-run"}}]
    async with rig(turns) as r:
        agent = await r.spawn("codex", "create hello.txt", timeout=60)
        done = await r.wait_ended(agent.id)
        assert done.state == AgentState.FAILED
        # codex replaces a 500's body with its own "high demand" text
        assert "codex turn failed" in (done.last_error or "")
        assert done.outcome["providerError"] is True
        assert [req.outcome for req in r.model.requests] == ["turn", "error"]  # agent_cli_retries=0: no retry


@in_the_sandbox_too
async def test_follow_up_continues_the_same_codex_thread(rig: RigFactory) -> None:
    async with rig(EDIT) as r:
        agent = await r.spawn("codex", "create hello.txt", timeout=60)
        first = await r.wait_ended(agent.id)
        assert first.state == AgentState.COMPLETED, first.last_error
        native = first.context["nativeSession"]
        used = dict(first.outcome["usage"])
        # The follow-up request carries the earlier tool result, so the script's last turn answers it: proof
        # that codex resumed its thread rather than starting a new one.
        await r.plane.continue_agent(agent.id, "thanks, anything else?")
        second = await r.wait_ended(agent.id)
        assert second.state == AgentState.COMPLETED, second.last_error
        last = r.model.requests[-1]
        assert last.turn == 1 and last.tool_results == 1 and "thanks, anything else?" in str(last.body)
        assert second.context["nativeSession"] == native
        # the run's own usage (one model call), not the thread's running total that codex reports
        assert second.outcome["usage"]["outputTokens"] == last.usage.output_tokens == 5
        assert second.outcome["usage"]["inputTokens"] == last.usage.input_tokens
        assert used["outputTokens"] == 10
        sessions = await r.plane.store.list_sessions(agent.id)
        assert [s.parent_id for s in sessions] == [None, sessions[0].id]
        assert sessions[1].context["resumes"] == native
        assert sessions[1].context["usage"]["outputTokens"] == 5


@in_the_sandbox_too
async def test_pause_resume_and_kill_a_running_codex(rig: RigFactory) -> None:
    async with rig([{"delay": 30, "text": "never seen"}]) as r:
        agent = await r.spawn("codex", "wait for the model", timeout=90)
        running = await r.wait_state(agent.id, AgentState.EXECUTING)
        assert running.pid
        await eventually(lambda: r.model.requests, "codex to reach the model")
        paused = await r.plane.pause(agent.id)
        assert paused.state == AgentState.PAUSED
        # every process of the tree is stopped; a helper that had just exited stays a zombie until its parent runs,
        # and one in uninterruptible I/O (D) when the stop came stops once that I/O ends (under load, a moment later)
        await tree_stops(running.pid)
        resumed = await r.plane.resume(agent.id)
        assert resumed.state == AgentState.EXECUTING and "T" not in proc_states(running.pid)
        killed = await r.plane.kill(agent.id)
        assert killed.state == AgentState.KILLED
        assert proc_states(running.pid) <= {"Z"}  # gone (or a zombie awaiting its reaper)
