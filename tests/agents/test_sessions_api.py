"""Sessions, follow-ups, forks from a session point and model routing, through the REST API (with pi, the
quickest real CLI)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from godel.api.app import create_app
from godel.core.states import AgentState
from tests.agents.conftest import Rig, RigFactory, require_cli
from tests.agents.test_pi import EDIT
from tests.conftest import admin_headers, run_git

pytestmark = pytest.mark.usefixtures("_pi")


@pytest.fixture
def _pi() -> None:
    require_cli("pi")


@asynccontextmanager
async def api(rig: RigFactory, turns: Any, **overrides: Any) -> AsyncIterator[tuple[Rig, httpx.AsyncClient]]:
    async with rig(turns, **overrides) as r:
        transport = httpx.ASGITransport(app=create_app(plane=r.plane))
        headers = await admin_headers(r.plane)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers) as c:
            yield r, c


async def spawn(c: httpx.AsyncClient, r: Rig, **body: Any) -> httpx.Response:
    return await c.post("/api/v1/agents", json={"task": "create hello.txt", "repo": str(r.repo), **body})


async def test_sessions_follow_up_and_fork_from_a_session_point(rig: RigFactory) -> None:
    async with api(rig, EDIT) as (r, c):
        created = await spawn(c, r, agent="pi", model="scripted/scripted-model")
        assert created.status_code == 201, created.text
        agent_id = created.json()["data"]["id"]
        done = await r.wait_ended(agent_id)
        assert done.state == AgentState.COMPLETED, done.last_error

        sessions = (await c.get(f"/api/v1/agents/{agent_id}/sessions")).json()["data"]["items"]
        assert len(sessions) == 1
        s = sessions[0]
        assert s["status"] == "completed" and s["model"] == "scripted/scripted-model"
        assert s["usage"]["outputTokens"] == r.model.usage_reported.output_tokens
        assert [m["kind"] for m in s["messages"]] == ["message", "tool_call", "tool_result", "message"]
        assert s["messages"][0] == {**s["messages"][0], "role": "user", "text": "create hello.txt"}
        shown = (await c.get(f"/api/v1/agents/{agent_id}")).json()["data"]
        assert shown["context"]["nativeSession"] == s["nativeSession"] and shown["context"]["route"]

        # A follow-up continues the ended agent's pi session.
        r1 = await c.post(f"/api/v1/agents/{agent_id}/resume", json={"message": "and now?"})
        assert r1.status_code == 200, r1.text
        assert r1.json()["data"]["state"] == "pending" and r1.json()["data"]["context"]["followUp"] == "and now?"
        again = await r.wait_ended(agent_id)
        assert again.state == AgentState.COMPLETED, again.last_error
        sessions = (await c.get(f"/api/v1/agents/{agent_id}/sessions")).json()["data"]["items"]
        assert [x["parentId"] for x in sessions] == [None, sessions[0]["id"]]
        assert sessions[1]["prompt"] == "and now?"
        assert sessions[1]["messages"][0]["text"] == "and now?"

        # A fork from session point 2 (the prompt and the tool call) starts from a snapshot, with that context.
        before = len(r.model.requests)
        forked = await c.post(f"/api/v1/agents/{agent_id}/fork", json={"sessionPoint": 2, "task": "carry on"})
        assert forked.status_code == 201, forked.text
        child = await r.wait_ended(forked.json()["data"]["id"])
        assert child.state == AgentState.COMPLETED, child.last_error
        first_request = str(r.model.requests[before].body)
        assert "[tool call write]" in first_request and "carry on" in first_request
        assert "Created hello.txt." not in first_request.split("carry on")[0]  # entries after the point are left out
        assert run_git(r.repo, "show", f"{child.branch}:hello.txt") == "hello from pi"


async def test_bad_requests_are_refused_before_anything_is_created(rig: RigFactory) -> None:
    async with api(rig, EDIT) as (r, c):
        cases = {
            "scripted-model": "PROVIDER/MODEL",
            "nope/scripted-model": "unknown provider 'nope'",
            "scripted/other-model": "does not list model 'other-model'",
            "scripted-gemini/scripted-model": "speaks gemini, pi speaks openai-chat / openai-responses / anthropic",
        }
        for model, message in cases.items():
            bad = await spawn(c, r, agent="pi", model=model)
            assert bad.status_code == 400, bad.text
            assert message in bad.json()["error"]["message"], bad.json()
            assert bad.json()["error"]["details"]["fields"][0]["field"] == "model"
        missing = await spawn(c, r, agent="pi")
        assert missing.status_code == 400 and "needs a model" in missing.json()["error"]["message"]
        no_cli = await spawn(c, r, agent="pi", model="scripted/scripted-model", config={"binary": "/nonexistent/pi"})
        assert no_cli.status_code == 503 and "does not exist" in no_cli.json()["error"]["message"]
        bad_option = await spawn(c, r, agent="pi", model="scripted/scripted-model", config={"tols": ["read"]})
        assert bad_option.status_code == 400 and bad_option.json()["error"]["details"]["fields"][0]["field"] == (
            "config.tols"
        )
        listed = (await c.get("/api/v1/agents")).json()["data"]["items"]
        assert listed == []

        # Follow-ups: only for ended agents of a CLI that can continue, with a session to continue.
        cmd = await spawn(c, r, agent="command", command="true")
        cmd_id = cmd.json()["data"]["id"]
        await r.wait_ended(cmd_id)
        refused = await c.post(f"/api/v1/agents/{cmd_id}/resume", json={"message": "more"})
        assert refused.status_code == 409 and "cannot continue a session" in refused.json()["error"]["message"]
        empty = await c.post(f"/api/v1/agents/{cmd_id}/resume", json={"message": ""})
        assert empty.status_code == 400

        ok = await spawn(c, r, agent="pi", model="scripted/scripted-model")
        agent_id = ok.json()["data"]["id"]
        await r.wait_ended(agent_id)
        snapshots_before = (await c.get(f"/api/v1/agents/{agent_id}/snapshots")).json()["data"]["items"]
        past = await c.post(f"/api/v1/agents/{agent_id}/fork", json={"sessionPoint": 99})
        assert past.status_code == 400 and "outside the transcript" in past.json()["error"]["message"]
        wrong_kind = await c.post(f"/api/v1/agents/{agent_id}/fork", json={"agent": "claude"})  # pi's model
        assert wrong_kind.status_code == 400 and "cannot talk to" in wrong_kind.json()["error"]["message"]
        # no snapshot was taken for the refused forks
        assert (await c.get(f"/api/v1/agents/{agent_id}/snapshots")).json()["data"]["items"] == snapshots_before


async def test_a_fork_to_another_agent_kind_leaves_the_source_options_behind(rig: RigFactory) -> None:
    async with api(rig, EDIT) as (r, c):
        created = await spawn(c, r, agent="pi", model="scripted/scripted-model", config={"thinking": "off"})
        agent_id = created.json()["data"]["id"]
        await r.wait_ended(agent_id)
        forked = await c.post(
            f"/api/v1/agents/{agent_id}/fork",
            json={"agent": "claude", "model": "scripted-anthropic/scripted-model", "task": "look around"},
        )
        assert forked.status_code == 201, forked.text  # pi's `thinking` option is not claude's
        fork = forked.json()["data"]
        # The CLI's options stay behind; where it runs (config.sandbox) is not the CLI's and goes with it.
        assert fork["kind"] == "claude" and set(fork["config"]) == {"sandbox"}
        await r.plane.kill(forked.json()["data"]["id"])
