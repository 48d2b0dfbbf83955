"""The client's typed results: attributes over the API's JSON, and still the JSON itself (dict access, json.dumps).

``httpx.MockTransport`` only feeds the client exact bytes here; docs/client.md's examples run against a real
server (test_docs_examples.py)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from godel.client import Agent, AsyncGodelClient, Event, GodelClient, Page, Task, Workflow
from godel.client.models import optional

AGENT = {
    "id": "a1", "state": "failed", "status": "failed", "task": "t", "exitCode": 3, "retryCount": 1, "maxRetries": 2,
    "completedAt": "2026-12-06T10:00:00+00:00", "branch": "godel/a1", "futureField": {"x": 1},
}  # fmt: skip


def answering(data: Any) -> GodelClient:
    return GodelClient("http://godel.test", transport=httpx.MockTransport(lambda r: httpx.Response(
        200, json={"success": True, "data": data})))  # fmt: skip


def test_an_agent_reads_as_attributes_and_stays_the_json() -> None:
    agent = answering(AGENT).get_agent("a1")
    assert isinstance(agent, Agent)
    assert (agent.id, agent.state, agent.exit_code, agent.branch) == ("a1", "failed", 3, "godel/a1")
    assert agent.completed_at == datetime(2026, 12, 6, 10, tzinfo=UTC)
    assert agent.started_at is None and agent.pid is None and agent.commits == []  # left out: the default
    assert agent["exitCode"] == 3 and agent == AGENT and json.loads(json.dumps(agent)) == AGENT
    assert agent["futureField"] == {"x": 1}  # a field this client does not name yet is still there
    assert not agent.ended  # failed with a retry left
    assert Agent({**AGENT, "retryCount": 2}).ended and Agent({"state": "completed"}).ended


def test_a_page_types_its_items_and_keeps_its_shape() -> None:
    raw = {"items": [{"id": "t1", "title": "x", "priority": 5}], "pagination": {"cursor": "c", "hasMore": True}}
    page = answering(raw).list_tasks()
    assert isinstance(page, Page) and [type(t) for t in page.results] == [Task]
    assert (page.results[0].title, page.results[0].priority, page.cursor, page.has_more) == ("x", 5, "c", True)
    assert page["items"][0]["id"] == "t1" and json.loads(json.dumps(page)) == raw


def test_events_workflows_and_empty_answers() -> None:
    event = Event({"type": "agent:log", "sequence": 9, "timestamp": 1_765_015_200_000, "payload": {"line": "hi"},
                   "metadata": {"agentId": "a1"}})  # fmt: skip
    assert (event.sequence, event.agent_id, event.team_id, event.payload["line"]) == (9, "a1", None, "hi")
    assert event.timestamp == datetime(2025, 12, 6, 10, tzinfo=UTC)
    flow = Workflow({"name": "w", "steps": [{"id": "plan", "status": "completed", "dependsOn": []}]})
    assert [(s.id, s.status, s.depends_on) for s in flow.steps] == [("plan", "completed", [])]
    assert Workflow({"name": "w"}).steps == []
    assert optional(Task)(None) is None and answering(None).claim_task(agent_id="a1") is None
    assert Agent.parse("not an object") == {}


def test_the_async_client_returns_the_same_types() -> None:
    async def run() -> tuple[Agent, Page[Agent]]:
        transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"success": True, "data": (
            AGENT if r.url.path.endswith("/a1") else {"items": [AGENT], "pagination": {}})}))  # fmt: skip
        async with AsyncGodelClient("http://godel.test", transport=transport) as godel:
            return await godel.get_agent("a1"), await godel.list_agents()

    agent, page = asyncio.run(run())
    assert isinstance(agent, Agent) and agent.exit_code == 3
    assert [a.id for a in page.results] == ["a1"] and not page.has_more and page.cursor is None


def test_no_client_module_is_over_500_lines() -> None:
    package = Path(__file__).resolve().parents[2] / "src" / "godel" / "client"
    sizes = {p.name: len(p.read_text().splitlines()) for p in package.glob("*.py")}
    assert max(sizes.values()) <= 500, sizes
