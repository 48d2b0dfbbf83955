"""``/api/v1/tasks`` in-process: the envelope, validation (400), not found (404), refused moves (409), the
dead-letter list, pagination, claims, and a real agent whose end its task follows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from godel.core.ids import new_id
from godel.scheduler.plane import ControlPlane
from tests.api.conftest import eventually, spawn, wait_state
from tests.tasks.conftest import add_team

API = "/api/v1/tasks"


async def create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body.setdefault("title", "a task")
    r = await client.post(API, json=body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


async def post(client: httpx.AsyncClient, path: str, body: Any = None, status: int = 200) -> Any:
    r = await client.post(f"{API}{path}", json=body)
    assert r.status_code == status, r.text
    return r.json()


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and body["error"]["code"] == code
    assert body["meta"]["requestId"]
    error: dict[str, Any] = body["error"]
    return error


async def test_create_and_get_in_the_envelope(client: httpx.AsyncClient) -> None:
    r = await client.post(
        API, json={"title": "ship it", "description": "d", "priority": 10, "maxAttempts": 2, "metadata": {"k": 1}}
    )
    assert r.status_code == 201
    body = r.json()
    assert body["success"] is True
    task = body["data"]
    assert task["status"] == "pending" and task["priority"] == 10 and task["maxAttempts"] == 2
    assert task["metadata"] == {"k": 1} and task["history"] == [] and task["attempts"] == 0
    assert task["createdAt"].endswith("Z")
    got = (await client.get(f"{API}/{task['id']}")).json()
    assert got == {"success": True, "data": task}
    also = await client.get(f"/api/tasks/{task['id']}")  # the /api alias
    assert also.json()["data"]["id"] == task["id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "t", "priority": 10**40}, "priority"),
        ({"title": "t", "priority": 1001}, "priority"),
        ({"title": "t", "priority": "5"}, "priority"),
        ({"title": "t", "priority": 1.5}, "priority"),
        ({"title": "t", "maxAttempts": 0}, "maxAttempts"),
        ({"title": ""}, "title"),
        ({"title": "x" * 256}, "title"),
        ({}, "title"),
        ({"title": "t", "agentId": "nobody"}, "agentId"),
        ({"title": "t", "teamId": "00000000-0000-4000-8000-000000000000"}, "teamId"),
        ({"title": "t", "metadata": {"history": []}}, "metadata"),
        ({"title": "t", "surprise": 1}, "surprise"),
    ],
)
async def test_bad_input_is_a_400_and_stores_nothing(client: httpx.AsyncClient, body: dict, field: str) -> None:
    r = await client.post(API, json=body)
    error = assert_error(r, 400, "VALIDATION_ERROR")
    assert field in [f["field"] for f in error["details"]["fields"]]
    listed = (await client.get(API)).json()["data"]
    assert listed["items"] == []


async def test_unknown_task_is_404(client: httpx.AsyncClient) -> None:
    missing = new_id()
    assert_error(await client.get(f"{API}/{missing}"), 404, "TASK_NOT_FOUND")
    for path, body in [("/complete", {}), ("/fail", {"error": "x"}), ("/retry", None), ("/assign", {"teamId": "t"})]:
        r = await client.post(f"{API}/{missing}{path}", json=body)
        assert r.status_code in (400, 404), r.text  # assign checks its target first
    assert_error(await client.delete(f"{API}/{missing}"), 404, "TASK_NOT_FOUND")


async def test_lifecycle_conflicts_and_dead_letters(client: httpx.AsyncClient, plane: ControlPlane) -> None:
    team = await add_team(plane.store)  # type: ignore[arg-type]
    task = await create(client, title="flaky", maxAttempts=2)
    error = assert_error(await client.post(f"{API}/{task['id']}/complete", json={}), 409, "INVALID_TASK_TRANSITION")
    assert error["details"] == {"taskId": task["id"], "currentState": "pending", "trigger": "complete"}
    for n in (1, 2):
        claimed = (await post(client, "/claim", {"teamId": team.id}))["data"]
        assert claimed["id"] == task["id"] and claimed["teamId"] == team.id
        failed = (await post(client, f"/{task['id']}/fail", {"error": f"boom {n}"}))["data"]
    assert failed["status"] == "dead" and failed["lastError"] == "boom 2"
    assert [a["error"] for a in failed["history"]] == ["boom 1", "boom 2"]
    dead = (await client.get(API, params={"dead": "true"})).json()["data"]
    assert [t["id"] for t in dead["items"]] == [task["id"]]
    assert_error(await client.get(API, params={"dead": "true", "status": "pending"}), 400, "VALIDATION_ERROR")
    assert (await post(client, "/claim", {"teamId": team.id}))["data"] is None  # nothing to claim: data null
    retried = (await post(client, f"/{task['id']}/retry"))["data"]
    assert retried["status"] == "pending" and retried["attempts"] == 0 and len(retried["history"]) == 2
    assert_error(await client.post(f"{API}/{task['id']}/retry"), 409, "INVALID_TASK_TRANSITION")
    stats = (await client.get(f"{API}/stats")).json()["data"]["counts"]
    assert stats["pending"] == 1 and stats["dead"] == 0
    events = (await client.get("/api/v1/events", params={"type": "task:*", "limit": 100})).json()["data"]["items"]
    assert [e["type"] for e in events] == [
        "task:created", "task:assigned", "task:failed", "task:assigned", "task:dead", "task:requeued",
    ]  # fmt: skip


async def test_assign_to_an_agent_and_complete(client: httpx.AsyncClient, git_repo: Path) -> None:
    agent = await spawn(client, git_repo, "sleep 30")
    task = await create(client, priority=3)
    assert_error(await client.post(f"{API}/{task['id']}/assign", json={}), 400, "VALIDATION_ERROR")
    r = await client.post(f"{API}/{task['id']}/assign", json={"agentId": new_id()})
    assert assert_error(r, 400, "VALIDATION_ERROR")["details"]["fields"][0]["field"] == "agentId"
    assigned = (await post(client, f"/{task['id']}/assign", {"agentId": agent["id"]}))["data"]
    assert assigned["status"] == "assigned" and assigned["agentId"] == agent["id"]
    started = (await post(client, f"/{task['id']}/start"))["data"]
    assert started["history"][0]["startedAt"]
    listed = (await client.get(API, params={"agentId": agent["id"], "status": "assigned"})).json()["data"]
    assert [t["id"] for t in listed["items"]] == [task["id"]]
    done = (await post(client, f"/{task['id']}/complete", {"result": {"pr": 7}}))["data"]
    assert done["status"] == "completed" and done["result"] == {"pr": 7} and done["completedAt"]
    assert_error(await client.post(f"{API}/{task['id']}/fail", json={"error": "late"}), 409, "INVALID_TASK_TRANSITION")
    assert_error(await client.post(f"{API}/{task['id']}/fail", json={}), 400, "VALIDATION_ERROR")


async def test_delete_and_cancel(client: httpx.AsyncClient, plane: ControlPlane) -> None:
    team = await add_team(plane.store)  # type: ignore[arg-type]
    a = await create(client, title="a")
    await post(client, f"/{a['id']}/assign", {"teamId": team.id})
    assert_error(await client.delete(f"{API}/{a['id']}"), 409, "INVALID_TASK_TRANSITION")
    r = await client.delete(f"{API}/{a['id']}", params={"force": "true"})
    assert r.json() == {"success": True, "data": {"id": a["id"], "deleted": True}}
    assert_error(await client.get(f"{API}/{a['id']}"), 404, "TASK_NOT_FOUND")
    b = await create(client, title="b")
    cancelled = (await post(client, f"/{b['id']}/cancel", {"reason": "not needed"}))["data"]
    assert cancelled["status"] == "failed" and cancelled["lastError"] == "cancelled: not needed"


async def test_list_pages_in_queue_order(client: httpx.AsyncClient) -> None:
    made = [await create(client, title=f"t{i}", priority=i % 3) for i in range(7)]
    expected = [t["id"] for t in sorted(made, key=lambda t: -t["priority"])]  # stable: oldest first per priority
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        data = (await client.get(API, params=params)).json()["data"]
        assert data["pagination"]["limit"] == 3
        seen.extend(t["id"] for t in data["items"])
        if not data["pagination"]["hasMore"]:
            break
        cursor = data["pagination"]["cursor"]
    assert seen == expected
    assert_error(await client.get(API, params={"cursor": "garbage"}), 400, "VALIDATION_ERROR")
    assert_error(await client.get(API, params={"status": "sleeping"}), 400, "VALIDATION_ERROR")
    high = (await client.get(API, params={"minPriority": 2})).json()["data"]["items"]
    assert {t["priority"] for t in high} == {2}


async def test_a_task_follows_its_real_agent(client: httpx.AsyncClient, git_repo: Path) -> None:
    """A real agent process: when it completes, its task completes with its result; when it fails for good,
    its task goes back to the queue with the agent's error in the history."""
    # Each sleeps a moment first: the tasks are given to them while they run.
    good = await spawn(client, git_repo, "sleep 0.5; echo done > out.txt; echo finished")
    bad = await spawn(client, git_repo, "sleep 0.5; echo no; exit 3")
    t1 = await create(client, title="good", agentId=good["id"])
    t2 = await create(client, title="bad")
    await post(client, f"/{t2['id']}/assign", {"agentId": bad["id"]})
    assert (await post(client, "/claim", {"agentId": good["id"]}))["data"]["id"] == t1["id"]  # reserved for it
    await wait_state(client, good["id"], "completed")
    await wait_state(client, bad["id"], "failed")

    async def settled() -> bool:
        one = (await client.get(f"{API}/{t1['id']}")).json()["data"]
        two = (await client.get(f"{API}/{t2['id']}")).json()["data"]
        return one["status"] == "completed" and two["status"] == "pending"

    await eventually(settled)
    one = (await client.get(f"{API}/{t1['id']}")).json()["data"]
    assert one["result"]["agentId"] == good["id"] and one["result"]["branch"] == f"godel/{good['id']}"
    two = (await client.get(f"{API}/{t2['id']}")).json()["data"]
    assert two["attempts"] == 1 and two["history"][0]["agentId"] == bad["id"]
    assert two["history"][0]["error"].startswith(f"agent {bad['id']} failed")
    # An agent that has ended takes no more tasks.
    r = await client.post(f"{API}/{t2['id']}/assign", json={"agentId": good["id"]})
    assert assert_error(r, 409, "CONFLICT")["details"] == {"agentId": good["id"], "agentState": "completed"}
    assert_error(await client.post(f"{API}/claim", json={"agentId": bad["id"]}), 409, "CONFLICT")
