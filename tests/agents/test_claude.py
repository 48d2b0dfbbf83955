"""Claude Code driven end to end by Godel against the scripted model (the real CLI, in a real worktree)."""

from __future__ import annotations

import time

import pytest

from godel.core.states import AgentState
from tests.agents.conftest import (
    RigFactory,
    eventually,
    in_the_sandbox_too,
    model_for,
    proc_states,
    require_cli,
    tree_stops,
)
from tests.conftest import run_git

pytestmark = pytest.mark.usefixtures("_claude")

# Claude's Write wants an absolute path in its description, but 2.1.330 resolves a relative one against its cwd
# (the worktree, whose path the script cannot know in advance).
EDIT = [
    {"tool_call": {"name": "Write", "arguments": {"file_path": "hello.txt", "content": "hello from claude\n"}}},
    {"text": "Created hello.txt."},
]


@pytest.fixture
def _claude() -> None:
    require_cli("claude")


async def test_edit_completes_with_events_usage_transcript_and_branch(rig: RigFactory) -> None:
    async with rig(EDIT) as r:
        agent = await r.spawn("claude", "create hello.txt", timeout=60)
        done = await r.wait_ended(agent.id)
        assert done.state == AgentState.COMPLETED, done.last_error
        assert done.outcome["result"] == "Created hello.txt."
        # the scripted model's own count of what it reported is what Godel recorded (claude's run total)
        reported = r.model.usage_reported
        assert done.outcome["usage"]["inputTokens"] == reported.input_tokens > 0
        assert done.outcome["usage"]["outputTokens"] == reported.output_tokens > 0
        assert done.outcome["usage"]["costUsd"] is not None
        calls = await r.events(agent.id, "agent:tool_call")
        assert [(e.payload["name"], e.payload["input"]["file_path"]) for e in calls] == [("Write", "hello.txt")]
        results = await r.events(agent.id, "agent:tool_result")
        assert results[0].payload["isError"] is False and results[0].payload["id"] == calls[0].payload["id"]
        # the change is committed on the agent's branch
        assert run_git(r.repo, "show", f"{done.branch}:hello.txt") == "hello from claude"
        sessions = await r.plane.store.list_sessions(agent.id)
        assert len(sessions) == 1 and sessions[0].status.value == "completed"
        kinds = [m["kind"] for m in sessions[0].context["messages"]]
        # claude's stream does not echo the prompt: the parser made with the launch adds it
        assert kinds == ["message", "tool_call", "tool_result", "message"]
        assert sessions[0].context["messages"][0]["text"] == "create hello.txt"
        assert sessions[0].context["prompt"] == "create hello.txt"
        assert sessions[0].context["nativeSession"] == done.context["nativeSession"]
        # what claude sent: the Messages API, with the task
        assert {q.dialect for q in r.model.requests} == {"anthropic"}
        assert "create hello.txt" in str(r.model.requests[0].body["messages"])


# Local only: in a sandbox the CLI reaches a dead provider through the gateway, which answers 502 (tests/gateway).
async def test_endpoint_down_fails_fast_with_the_reason(rig: RigFactory) -> None:
    async with rig(None) as r:
        started = time.monotonic()
        agent = await r.spawn("claude", "create hello.txt", model=model_for("claude", down=True), timeout=60)
        done = await r.wait_ended(agent.id, timeout=30)
        assert time.monotonic() - started < 15  # bounded by agent_cli_retries=0 (measured: about 1 s)
        assert done.state == AgentState.FAILED
        assert "connection refused" in (done.last_error or "").lower()
        assert done.outcome["providerError"] is True


async def test_scripted_failure_mid_run_fails_not_completes(rig: RigFactory) -> None:
    turns = [EDIT[0], {"error": {"status": 500, "message": "scripted failure mid-run"}}]
    async with rig(turns) as r:
        agent = await r.spawn("claude", "create hello.txt", timeout=60)
        done = await r.wait_ended(agent.id)
        assert done.state == AgentState.FAILED
        assert "scripted failure mid-run" in (done.last_error or "")
        assert done.outcome["providerError"] is True
        assert [q.outcome for q in r.model.requests] == ["turn", "error"]  # no retry with agent_cli_retries=0


async def test_cli_retries_are_bounded_by_the_setting(rig: RigFactory) -> None:
    turns = [{"error": {"status": 500, "message": "always failing"}}]
    async with rig(turns, agent_cli_retries=1) as r:
        agent = await r.spawn("claude", "create hello.txt", timeout=60)
        done = await r.wait_ended(agent.id)
        assert done.state == AgentState.FAILED and "always failing" in (done.last_error or "")
        assert [q.outcome for q in r.model.requests] == ["error", "error"]  # the request and one retry
        errors = await r.events(agent.id, "agent:error")
        assert "retry 1 of 1" in errors[0].payload["message"]


@in_the_sandbox_too
async def test_pause_resume_and_kill_a_running_claude(rig: RigFactory) -> None:
    turns = [{"delay": 30, "text": "never seen"}]
    async with rig(turns) as r:
        agent = await r.spawn("claude", "wait for the model", timeout=60)
        running = await r.wait_state(agent.id, AgentState.EXECUTING)
        assert running.pid
        await eventually(lambda: r.model.requests, "claude to reach the model")
        paused = await r.plane.pause(agent.id)
        assert paused.state == AgentState.PAUSED
        # claude runs short-lived helpers (git, which…): one that exited just before the stop stays a zombie, as
        # its stopped parent cannot reap it. A process in uninterruptible I/O (D) when the stop came stops as soon
        # as that I/O ends (under load, a moment later).
        await tree_stops(running.pid)
        resumed = await r.plane.resume(agent.id)
        assert resumed.state == AgentState.EXECUTING and "T" not in proc_states(running.pid)
        killed = await r.plane.kill(agent.id)
        assert killed.state == AgentState.KILLED
        assert proc_states(running.pid) <= {"Z"}  # gone (or a zombie awaiting its reaper)


@in_the_sandbox_too
async def test_follow_up_continues_the_same_claude_session(rig: RigFactory) -> None:
    async with rig(EDIT) as r:
        agent = await r.spawn("claude", "create hello.txt", timeout=60)
        first = await r.wait_ended(agent.id)
        assert first.state == AgentState.COMPLETED, first.last_error
        native = first.context["nativeSession"]
        assert native
        # The follow-up request carries the earlier conversation (the Write result), so the script's last turn
        # answers it: proof that claude resumed its session rather than starting a new one.
        await r.plane.continue_agent(agent.id, "thanks, anything else?")
        second = await r.wait_ended(agent.id)
        assert second.state == AgentState.COMPLETED, second.last_error
        last = r.model.requests[-1]
        assert last.turn == 1 and last.tool_results == 1 and "thanks, anything else?" in str(last.body["messages"])
        assert "create hello.txt" in str(last.body["messages"])
        assert second.context["nativeSession"] == native  # claude keeps the session id on --resume
        sessions = await r.plane.store.list_sessions(agent.id)
        assert [s.parent_id for s in sessions] == [None, sessions[0].id]
        assert sessions[1].context["resumes"] == native


# Local only: in a sandbox the gateway serves the route's fallback within the request (tests/gateway).
async def test_provider_failure_falls_back_to_the_next_model(rig: RigFactory) -> None:
    down, up = model_for("claude", down=True), model_for("claude")
    async with rig(EDIT, fallbacks={down: [up]}) as r:
        agent = await r.spawn("claude", "create hello.txt", model=down, timeout=60)
        # FAILED is passed through on the way to the fallback attempt, so it is not an end here
        done = await r.wait_state(agent.id, AgentState.COMPLETED, AgentState.KILLED, timeout=30)
        assert done.state == AgentState.COMPLETED, done.last_error
        starts = await r.events(agent.id, "agent:start")
        assert [e.payload["model"] for e in starts] == [down, up]


async def test_tools_option_limits_what_claude_offers(rig: RigFactory) -> None:
    async with rig(EDIT) as r:
        agent = await r.spawn("claude", "create hello.txt", config={"tools": ["Read"]}, timeout=60)
        done = await r.wait_ended(agent.id)
        tools = {t["name"] for t in r.model.requests[0].body["tools"]}
        assert "Read" in tools and "Write" not in tools and "Bash" not in tools
        results = await r.events(agent.id, "agent:tool_result")
        assert results[0].payload["isError"] is True  # the scripted Write was refused
        assert done.outcome["changedFiles"] == 0


# Local only: a sandboxed CLI never holds the provider's key (tests/gateway/test_agents_through_gateway.py).
async def test_the_provider_key_is_never_stored_in_events_or_transcripts(
    rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk-test-0123456789abcdef"
    monkeypatch.setenv("SCRIPTED_KEY", key)
    leak = [
        {"tool_call": {"name": "Bash", "arguments": {"command": "printenv ANTHROPIC_API_KEY", "description": "x"}}},
        {"text": f"The key is {key}."},
    ]
    async with rig(leak) as r:
        providers = dict(r.plane.settings.providers)
        providers["scripted-anthropic"] = providers["scripted-anthropic"].model_copy(
            update={"api_key_env": "SCRIPTED_KEY"}
        )
        r.plane.settings.providers = providers
        agent = await r.spawn("claude", "show me the key")
        done = await r.wait_ended(agent.id)
        assert r.model.requests and key in str(r.model.requests[-1].body)  # it did reach the model (and back)
        events = await r.events(agent.id)
        assert events and all(key not in str(e.payload) for e in events)
        assert any("[redacted]" in str(e.payload) for e in events if e.type == "agent:tool_result")
        (session,) = await r.plane.store.list_sessions(agent.id)
        assert key not in str(session.context) and key not in str(done.outcome)
