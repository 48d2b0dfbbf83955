"""aider driven end to end by Godel against the scripted model (the real CLI, in a real worktree).

aider has no tools: its edit is a whole-file listing in a text turn, applied and committed by aider itself (the
commit message comes from a side call the scripted model answers outside the script)."""

from __future__ import annotations

import asyncio
import os

import pytest

from godel.core.states import AgentState
from tests.agents.conftest import RigFactory, in_the_sandbox_too, proc_state, require_cli
from tests.conftest import run_git

pytestmark = pytest.mark.usefixtures("_aider")

REPLY = "hello.txt\n```\nhello from aider\n```"
EDIT = [{"text": REPLY + "\n", "output_tokens": 12}]


@pytest.fixture
def _aider() -> None:
    require_cli("aider")


async def test_edit_completes_with_events_usage_transcript_and_branch(rig: RigFactory) -> None:
    async with rig({"turns": EDIT, "commit_message": "Add hello.txt"}) as r:
        agent = await r.spawn("aider", "create hello.txt", timeout=90)
        done = await r.wait_ended(agent.id, timeout=90)
        assert done.state == AgentState.COMPLETED, done.last_error
        assert done.outcome["result"] == REPLY
        # aider reports the main requests' usage, not its commit-message side call's
        turns = [q for q in r.model.requests if q.outcome == "turn"]
        assert done.outcome["usage"]["inputTokens"] == sum(q.usage.input_tokens for q in turns if q.usage) == 80
        assert done.outcome["usage"]["outputTokens"] == sum(q.usage.output_tokens for q in turns if q.usage) == 12
        calls = await r.events(agent.id, "agent:tool_call")
        assert [(e.payload["name"], e.payload["input"]["path"]) for e in calls] == [("edit", "hello.txt")]
        results = await r.events(agent.id, "agent:tool_result")
        assert results[0].payload == {"id": "edit-1", "output": "Applied edit to hello.txt", "isError": False}
        # aider committed the change itself, on the agent's branch; no .aider* files or .gitignore in the tree
        assert run_git(r.repo, "show", f"{done.branch}:hello.txt") == "hello from aider"
        assert run_git(r.repo, "log", "-1", "--format=%s", done.branch) == "Add hello.txt"
        tree = run_git(r.repo, "ls-tree", "-r", "--name-only", done.branch).split()
        assert sorted(tree) == ["README.md", "hello.txt", "src/app.py"]
        sessions = await r.plane.store.list_sessions(agent.id)
        assert len(sessions) == 1 and sessions[0].status.value == "completed"
        kinds = [m["kind"] for m in sessions[0].context["messages"]]
        assert kinds == ["message", "message", "tool_call", "tool_result"]
        assert sessions[0].context["messages"][0]["text"] == "create hello.txt"
        assert sessions[0].context["nativeSession"].endswith(".md")


# Local only: in a sandbox the CLI reaches a dead provider through the gateway, which answers 502 (tests/gateway).
async def test_endpoint_down_fails_with_the_reason(rig: RigFactory) -> None:
    async with rig(None) as r:
        agent = await r.spawn("aider", "create hello.txt", model="down-scripted/scripted-model", timeout=60)
        done = await r.wait_ended(agent.id, timeout=60)
        assert done.state == AgentState.FAILED
        assert "connection error" in (done.last_error or "").lower()
        assert done.outcome["providerError"] is True


async def test_scripted_failure_fails_not_completes(rig: RigFactory) -> None:
    turns = [{"error": {"status": 500, "message": "scripted failure mid-run"}, "delay": 0.5}]
    async with rig(turns) as r:
        agent = await r.spawn("aider", "create hello.txt", timeout=60)
        done = await r.wait_ended(agent.id, timeout=60)
        assert done.state == AgentState.FAILED
        assert "scripted failure mid-run" in (done.last_error or "")
        assert done.outcome["providerError"] is True


def _group_states(pgid: int) -> set[str]:
    """States (R/S/T/Z…) of the processes in a process group (the runtime starts each agent in its own)."""
    states = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
        except OSError:
            continue
        if int(fields[2]) == pgid and (state := proc_state(int(entry))) is not None:
            states.add(state)
    return states


@in_the_sandbox_too
async def test_pause_resume_and_kill_a_running_aider(rig: RigFactory) -> None:
    async with rig([{"text": REPLY, "delay": 30}]) as r:
        agent = await r.spawn("aider", "create hello.txt", timeout=90)
        running = await r.wait_state(agent.id, AgentState.EXECUTING, timeout=30)
        assert running.pid
        for _ in range(600):  # aider takes seconds to start (tens on a busy machine); wait until it asks the model
            if r.model.requests:
                break
            await asyncio.sleep(0.1)
        assert r.model.requests, "aider never reached the model"
        assert len(_group_states(running.pid)) >= 1
        paused = await r.plane.pause(agent.id)
        assert paused.state == AgentState.PAUSED
        for _ in range(200):  # a process in uninterruptible I/O (D) when the stop came stops once that I/O ends
            if _group_states(running.pid) <= {"T", "t"}:
                break
            await asyncio.sleep(0.05)  # polling the processes' states
        assert _group_states(running.pid) <= {"T", "t"}
        resumed = await r.plane.resume(agent.id)
        assert resumed.state == AgentState.EXECUTING and "T" not in _group_states(running.pid)
        killed = await r.plane.kill(agent.id)
        assert killed.state == AgentState.KILLED
        assert _group_states(running.pid) <= {"Z"}  # gone (or a zombie awaiting its reaper)


@in_the_sandbox_too
async def test_follow_up_continues_the_same_aider_conversation(rig: RigFactory) -> None:
    async with rig(EDIT) as r:
        agent = await r.spawn("aider", "create hello.txt", timeout=90)
        first = await r.wait_ended(agent.id, timeout=90)
        assert first.state == AgentState.COMPLETED, first.last_error
        native = first.context["nativeSession"]
        seen = len(r.model.requests)
        await r.plane.continue_agent(agent.id, "thanks, anything else?")
        second = await r.wait_ended(agent.id, timeout=90)
        assert second.state == AgentState.COMPLETED, second.last_error
        # the follow-up request carries the earlier conversation: the first task and aider's own reply to it
        follow = next(q for q in r.model.requests[seen:] if q.outcome == "turn")
        texts = [str(m.get("content")) for m in follow.body["messages"]]
        assert any(t.startswith("create hello.txt") for t in texts)
        assert any("hello from aider" in t for t in texts[:-1])
        assert "thanks, anything else?" in texts[-1]
        sessions = await r.plane.store.list_sessions(agent.id)
        assert [s.parent_id for s in sessions] == [None, sessions[0].id]
        assert sessions[1].context["resumes"] == native
        assert sessions[1].context["messages"][0]["text"] == "thanks, anything else?"


async def test_edit_through_the_anthropic_wire_api(rig: RigFactory) -> None:
    async with rig(EDIT) as r:
        agent = await r.spawn("aider", "create hello.txt", model="scripted-anthropic/scripted-model", timeout=90)
        done = await r.wait_ended(agent.id, timeout=90)
        assert done.state == AgentState.COMPLETED, done.last_error
        assert {q.dialect for q in r.model.requests} == {"anthropic"}
        assert run_git(r.repo, "show", f"{done.branch}:hello.txt") == "hello from aider"
