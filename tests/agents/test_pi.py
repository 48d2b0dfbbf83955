"""pi driven end to end by Godel against the scripted model (the real CLI, in a real worktree)."""

from __future__ import annotations

import pytest

from godel.core.states import AgentState
from tests.agents.conftest import RigFactory, eventually, in_the_sandbox_too, proc_states, require_cli, tree_stops
from tests.conftest import run_git

pytestmark = pytest.mark.usefixtures("_pi")

EDIT = [
    {"tool_call": {"name": "write", "arguments": {"path": "hello.txt", "content": "hello from pi\n"}}},
    {"text": "Created hello.txt."},
]


@pytest.fixture
def _pi() -> None:
    require_cli("pi")


async def test_edit_completes_with_events_usage_transcript_and_branch(rig: RigFactory) -> None:
    async with rig(EDIT) as r:
        agent = await r.spawn("pi", "create hello.txt")
        done = await r.wait_ended(agent.id)
        assert done.state == AgentState.COMPLETED, done.last_error
        assert done.outcome["result"] == "Created hello.txt."
        assert done.outcome["usage"]["inputTokens"] > 0 and done.outcome["usage"]["outputTokens"] > 0
        # the scripted model's own count of what it reported is what Godel recorded
        assert done.outcome["usage"]["outputTokens"] == r.model.usage_reported.output_tokens
        calls = await r.events(agent.id, "agent:tool_call")
        assert [(e.payload["name"], e.payload["input"]["path"]) for e in calls] == [("write", "hello.txt")]
        results = await r.events(agent.id, "agent:tool_result")
        assert results[0].payload["isError"] is False
        # the change is committed on the agent's branch
        assert run_git(r.repo, "show", f"{done.branch}:hello.txt") == "hello from pi"
        sessions = await r.plane.store.list_sessions(agent.id)
        assert len(sessions) == 1 and sessions[0].status.value == "completed"
        kinds = [m["kind"] for m in sessions[0].context["messages"]]
        assert kinds == ["message", "tool_call", "tool_result", "message"]
        assert sessions[0].context["nativeSession"]


# Local only: in a sandbox the CLI reaches a dead provider through the gateway, which answers 502 (tests/gateway).
async def test_endpoint_down_fails_with_the_reason(rig: RigFactory) -> None:
    async with rig(None) as r:
        agent = await r.spawn("pi", "create hello.txt", model="down-scripted/scripted-model", timeout=60)
        done = await r.wait_ended(agent.id)
        assert done.state == AgentState.FAILED
        assert "connection" in (done.last_error or "").lower()
        assert done.outcome["providerError"] is True


async def test_scripted_failure_mid_run_fails_not_completes(rig: RigFactory) -> None:
    turns = [EDIT[0], {"error": {"status": 500, "message": "scripted failure mid-run"}}]
    async with rig(turns) as r:
        agent = await r.spawn("pi", "create hello.txt")
        done = await r.wait_ended(agent.id)
        assert done.state == AgentState.FAILED
        assert "scripted failure mid-run" in (done.last_error or "")


@in_the_sandbox_too
async def test_follow_up_continues_the_same_pi_session(rig: RigFactory) -> None:
    turns = [
        EDIT[0],
        {"text": "Created hello.txt."},
    ]
    async with rig(turns) as r:
        agent = await r.spawn("pi", "create hello.txt")
        first = await r.wait_ended(agent.id)
        assert first.state == AgentState.COMPLETED, first.last_error
        native = first.context["nativeSession"]
        # The follow-up request carries the earlier conversation (one tool result), so the script's last turn
        # answers it: proof that pi resumed its session rather than starting a new one.
        await r.plane.continue_agent(agent.id, "thanks, anything else?")
        second = await r.wait_ended(agent.id)
        assert second.state == AgentState.COMPLETED, second.last_error
        assert second.outcome["result"] == "Created hello.txt."
        last = r.model.requests[-1]
        assert last.turn == 1 and "thanks, anything else?" in str(last.body)
        sessions = await r.plane.store.list_sessions(agent.id)
        assert [s.parent_id for s in sessions] == [None, sessions[0].id]
        assert sessions[1].context["resumes"] == native


@in_the_sandbox_too
async def test_pause_resume_and_kill_a_running_pi(rig: RigFactory) -> None:
    turns = [{"delay": 30, "text": "never seen"}]
    async with rig(turns) as r:
        agent = await r.spawn("pi", "wait for the model")
        running = await r.wait_state(agent.id, AgentState.EXECUTING)
        assert running.pid
        await eventually(lambda: r.model.requests, "pi to reach the model")
        paused = await r.plane.pause(agent.id)
        assert paused.state == AgentState.PAUSED
        # every process stopped (a helper that exited just before the stop may linger as a zombie; one in
        # uninterruptible I/O when the stop came stops once that I/O ends)
        await tree_stops(running.pid)
        resumed = await r.plane.resume(agent.id)
        assert resumed.state == AgentState.EXECUTING and "T" not in proc_states(running.pid)
        killed = await r.plane.kill(agent.id)
        assert killed.state == AgentState.KILLED
        assert proc_states(running.pid) <= {"Z"}  # gone (or a zombie awaiting its reaper)


# Local only: in a sandbox the gateway serves the route's fallback within the request (tests/gateway).
async def test_provider_failure_falls_back_to_the_next_model(rig: RigFactory) -> None:
    async with rig(EDIT, fallbacks={"down-scripted/scripted-model": ["scripted/scripted-model"]}) as r:
        agent = await r.spawn("pi", "create hello.txt", model="down-scripted/scripted-model")
        done = await r.wait_state(agent.id, AgentState.COMPLETED, AgentState.KILLED)
        assert done.state == AgentState.COMPLETED, done.last_error
        assert done.context["routeIndex"] == 1 and done.retry_count == 0
        retries = await r.events(agent.id, "agent:retry")
        assert retries[0].payload["fallback"] == "scripted/scripted-model"
        starts = await r.events(agent.id, "agent:start")
        assert [e.payload["model"] for e in starts] == ["down-scripted/scripted-model", "scripted/scripted-model"]
        # A restart starts from the primary again (it may be back); it falls back once more.
        await r.plane.restart(agent.id)
        again = await r.wait_state(agent.id, AgentState.COMPLETED, AgentState.KILLED)
        assert again.state == AgentState.COMPLETED and again.context["routeIndex"] == 1
        starts = await r.events(agent.id, "agent:start")
        assert [e.payload["model"] for e in starts][2:] == ["down-scripted/scripted-model", "scripted/scripted-model"]
