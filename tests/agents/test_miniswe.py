"""mini-swe-agent driven end to end by Godel against the scripted model (the real CLI, in a real worktree)."""

from __future__ import annotations

import asyncio
import time

import psutil
import pytest

from godel.core.states import AgentState
from godel.errors import ConflictError
from tests.agents.conftest import RigFactory, in_the_sandbox_too, proc_state, require_cli
from tests.conftest import run_git

pytestmark = pytest.mark.usefixtures("_mini")

KIND = "mini-swe-agent"
WRITE = {"tool_call": {"name": "bash", "arguments": {"command": "printf 'hello from mini\\n' > hello.txt"}}}
SUBMIT = {"tool_call": {"name": "bash", "arguments": {"command": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT; "
                                                                 "echo Created hello.txt."}}}  # fmt: skip
EDIT = [WRITE, SUBMIT]


@pytest.fixture
def _mini() -> None:
    require_cli(KIND)


@pytest.mark.parametrize("provider", ["scripted", "scripted-anthropic"])
async def test_edit_completes_with_events_usage_transcript_and_branch(rig: RigFactory, provider: str) -> None:
    async with rig(EDIT) as r:
        agent = await r.spawn(KIND, "create hello.txt", model=f"{provider}/scripted-model")
        done = await r.wait_ended(agent.id)
        assert done.state == AgentState.COMPLETED, done.last_error
        assert done.outcome["result"] == "Created hello.txt."
        assert done.outcome["exitCode"] == 0
        # the scripted model's own count of what it reported is what Godel recorded, call by call
        reported = r.model.usage_reported
        assert reported.output_tokens > 0
        assert done.outcome["usage"]["inputTokens"] == reported.input_tokens
        assert done.outcome["usage"]["outputTokens"] == reported.output_tokens
        assert done.outcome["usage"]["calls"] == 2
        assert {q.dialect for q in r.model.requests} == {"openai-chat" if provider == "scripted" else "anthropic"}
        calls = await r.events(agent.id, "agent:tool_call")
        assert [(e.payload["name"], e.payload["input"]["command"][:6]) for e in calls] == [
            ("bash", "printf"),
            ("bash", "echo C"),
        ]
        results = await r.events(agent.id, "agent:tool_result")
        assert [e.payload["isError"] for e in results] == [False, False]
        # the change is committed on the agent's branch
        assert run_git(r.repo, "show", f"{done.branch}:hello.txt") == "hello from mini"
        sessions = await r.plane.store.list_sessions(agent.id)
        assert len(sessions) == 1 and sessions[0].status.value == "completed"
        kinds = [m["kind"] for m in sessions[0].context["messages"]]
        assert kinds == ["message", "tool_call", "tool_result", "tool_call", "tool_result"]
        # mini has no session to continue
        with pytest.raises(ConflictError):
            await r.plane.continue_agent(agent.id, "and now?")


# Local only: in a sandbox the CLI reaches a dead provider through the gateway, which answers 502 (tests/gateway).
async def test_endpoint_down_fails_with_the_reason(rig: RigFactory) -> None:
    async with rig(None) as r:
        agent = await r.spawn(KIND, "create hello.txt", model="down-scripted/scripted-model", timeout=90)
        done = await r.wait_ended(agent.id, timeout=90)
        # it failed by itself (one refused attempt with agent_cli_retries=0), not by Godel's timeout
        assert done.state == AgentState.FAILED and done.outcome["exitCode"] == 1
        assert "connection error" in (done.last_error or "").lower()
        assert done.outcome["providerError"] is True


async def test_scripted_failure_mid_run_fails_not_completes(rig: RigFactory) -> None:
    turns = [WRITE, {"error": {"status": 500, "message": "scripted failure mid-run"}}]
    async with rig(turns) as r:
        agent = await r.spawn(KIND, "create hello.txt")
        done = await r.wait_ended(agent.id)
        assert done.state == AgentState.FAILED
        assert "scripted failure mid-run" in (done.last_error or "")
        assert done.outcome["providerError"] is True
        # bounded retries: the failing turn was asked exactly once (no litellm/OpenAI-client retries on top)
        assert [q.outcome for q in r.model.requests] == ["turn", "error"]


async def test_text_replies_fail_although_mini_exits_0(rig: RigFactory) -> None:
    async with rig([{"text": "I think the task is done."}]) as r:
        agent = await r.spawn(KIND, "create hello.txt")
        done = await r.wait_ended(agent.id)
        assert done.state == AgentState.FAILED
        assert done.outcome["exitCode"] == 0
        assert "RepeatedFormatError" in (done.last_error or "")
        assert done.outcome["providerError"] is False


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


@in_the_sandbox_too
async def test_pause_resume_and_kill_a_running_mini(rig: RigFactory) -> None:
    async with rig([{**WRITE, "delay": 30}]) as r:
        agent = await r.spawn(KIND, "create hello.txt", timeout=90)
        running = await r.wait_state(agent.id, AgentState.EXECUTING)
        assert running.pid
        deadline = time.monotonic() + 45
        while not r.model.requests:  # mini is waiting for the scripted model's delayed reply
            assert time.monotonic() < deadline, "mini never asked the model"
            await asyncio.sleep(0.1)
        tree = _tree(running.pid)
        assert len(tree) >= 2  # the wrapper shell and mini's python
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
        assert len(r.model.requests) == 1  # it never got to a second model call
