"""The queue is durable: a plane restart, and a ``kill -9`` of a real server, lose nothing (SQLite and
PostgreSQL); bad input in between writes nothing."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from godel.core.events import EventFilter
from godel.core.models import Task
from godel.core.ports import EventQuery
from godel.core.states import TaskStatus
from godel.errors import ValidationError
from godel.scheduler.plane import ControlPlane
from godel.settings import Settings
from godel.store import SqlStore, open_store
from godel.tasks import TaskQuery
from tests.e2e.serverproc import ServerProcess
from tests.tasks.conftest import add_agent, add_team, empty


async def all_tasks(plane: ControlPlane) -> dict[str, Task]:
    page = await plane.task_queue.list(TaskQuery(limit=500))
    return {t.id: t for t in page.items}


async def test_a_plane_restart_loses_nothing(plane_settings: Settings) -> None:
    first = ControlPlane(plane_settings)
    await first.start(background=False)  # no admission: the test's agents stay queued
    try:
        q = first.task_queue
        store: SqlStore = first.store  # type: ignore[assignment]
        agent = await add_agent(store)
        team = await add_team(store)
        dead = await q.create("flaky", priority=9, max_attempts=2, metadata={"origin": "ci"})
        for n in (1, 2):
            assert (await q.claim(agent_id=agent.id)) is not None
            await q.fail(dead.id, f"boom {n}")
        done = await q.create("done", priority=5)
        await q.assign(done.id, team_id=team.id)
        await q.complete(done.id, {"summary": "ok"})
        held = await q.create("held", priority=1)
        await q.assign(held.id, agent_id=agent.id)
        await q.begin(held.id)
        waiting = await q.create("waiting", priority=-1, description="later")
        with pytest.raises(ValidationError):  # bad input in between: nothing written
            await q.create("bad", priority=5000)
        before = await all_tasks(first)
        log_before = await store.query_events(EventQuery(filter=EventFilter(patterns=("task:*",)), limit=1000))
    finally:
        await first.stop()

    second = ControlPlane(plane_settings)
    await second.start(background=False)
    try:
        after = await all_tasks(second)
        assert after == before
        assert len(after) == 4
        assert after[dead.id].status == TaskStatus.DEAD
        assert [a["error"] for a in after[dead.id].metadata["history"]] == ["boom 1", "boom 2"]
        assert after[dead.id].metadata["origin"] == "ci"
        assert after[done.id].result == {"summary": "ok"}
        assert after[held.id].status == TaskStatus.ASSIGNED and after[held.id].metadata["history"][0]["startedAt"]
        log_after = await second.store.query_events(EventQuery(filter=EventFilter(patterns=("task:*",)), limit=1000))
        assert [(e.id, e.sequence) for e in log_after] == [(e.id, e.sequence) for e in log_before]
        # The queue carries on where it stopped.
        nxt = await second.task_queue.claim(agent_id=agent.id)
        assert nxt is not None and nxt.id == waiting.id
        assert [t.id for t in (await second.task_queue.dead_letters()).items] == [dead.id]
    finally:
        await second.stop()


async def test_tasks_of_agents_that_ended_while_the_plane_was_down_are_settled(plane_settings: Settings) -> None:
    """Agents end while no plane listens (another process moved them); the next start settles their tasks."""
    from tests.tasks.conftest import COMPLETE, ERROR, drive

    first = ControlPlane(plane_settings)
    await first.start(background=False)
    try:
        store: SqlStore = first.store  # type: ignore[assignment]
        ok_agent, bad_agent = await add_agent(store), await add_agent(store)
        t1 = await first.task_queue.create("ok")
        t2 = await first.task_queue.create("bad")
        await first.task_queue.assign(t1.id, agent_id=ok_agent.id)
        await first.task_queue.assign(t2.id, agent_id=bad_agent.id)
    finally:
        await first.stop()
    other = open_store(plane_settings.resolved_database_url)
    try:
        await drive(other, ok_agent.id, COMPLETE, outcome={"result": "shipped"})
        await drive(other, bad_agent.id, ERROR, last_error="exit 1")
    finally:
        await other.close()
    second = ControlPlane(plane_settings)
    await second.start(background=False)
    try:
        for _ in range(500):
            tasks = await all_tasks(second)
            if tasks[t1.id].status == TaskStatus.COMPLETED and tasks[t2.id].status == TaskStatus.PENDING:
                break
            await asyncio.sleep(0.01)  # the start sweep runs in the background
        assert tasks[t1.id].status == TaskStatus.COMPLETED and tasks[t1.id].result is not None
        assert tasks[t1.id].result["result"] == "shipped"
        assert tasks[t2.id].status == TaskStatus.PENDING and tasks[t2.id].attempts == 1
    finally:
        await second.stop()


def api(srv: ServerProcess, method: str, path: str, status: int = 200, **kw: Any) -> Any:
    r = httpx.request(method, f"{srv.url}{path}", timeout=15, headers=srv.headers, **kw)
    assert r.status_code == status, r.text
    return r.json().get("data")


def test_a_killed_server_loses_no_task(store_url: str, fast_tmp: Path) -> None:
    """``kill -9`` the real server mid-work: after a restart every task, attempt and event is there."""
    asyncio.run(empty(store_url))
    env = {"GODEL_DATABASE_URL": store_url}
    srv = ServerProcess(fast_tmp / "home", **env).start()
    try:
        team = asyncio.run(_make_team(store_url))
        ids = [api(srv, "POST", "/api/v1/tasks", 201, json={"title": f"t{i}", "priority": i, "maxAttempts": 2})["id"]
               for i in range(5)]  # fmt: skip
        for body in ({"title": "x", "priority": 10**12}, {"title": ""}, {"title": "x", "agentId": "nope"}):
            api(srv, "POST", "/api/v1/tasks", 400, json=body)
        first = api(srv, "POST", "/api/v1/tasks/claim", json={"teamId": team})
        assert first["id"] == ids[4]
        api(srv, "POST", f"/api/v1/tasks/{ids[4]}/fail", json={"error": "crashed"})
        api(srv, "POST", "/api/v1/tasks/claim", json={"teamId": team})
        api(srv, "POST", f"/api/v1/tasks/{ids[4]}/fail", json={"error": "crashed again"})
        second = api(srv, "POST", "/api/v1/tasks/claim", json={"teamId": team})
        api(srv, "POST", f"/api/v1/tasks/{second['id']}/complete", json={"result": {"n": 1}})
        api(srv, "POST", "/api/v1/tasks/claim", json={"teamId": team})
        before = api(srv, "GET", "/api/v1/tasks", params={"limit": 100})["items"]
        events_before = api(srv, "GET", "/api/v1/events", params={"type": "task:*", "limit": 1000})["items"]
        srv.kill9()
        srv.start()
        after = api(srv, "GET", "/api/v1/tasks", params={"limit": 100})["items"]
        assert after == before
        assert {t["status"] for t in after} == {"dead", "completed", "assigned", "pending"}
        dead = api(srv, "GET", "/api/v1/tasks", params={"dead": "true"})["items"]
        assert [t["id"] for t in dead] == [ids[4]]
        assert [a["error"] for a in dead[0]["history"]] == ["crashed", "crashed again"]
        events_after = api(srv, "GET", "/api/v1/events", params={"type": "task:*", "limit": 1000})["items"]
        assert events_after == events_before
        assert len(events_after) == 5 + 7  # 5 created; assigned, failed, assigned, dead, assigned, completed, assigned
        assert api(srv, "POST", f"/api/v1/tasks/{ids[4]}/retry")["status"] == "pending"
    finally:
        srv.stop(signal.SIGTERM)


async def _make_team(url: str) -> str:
    s = open_store(url)
    try:
        await s.migrate()
        return (await add_team(s)).id
    finally:
        await s.close()
