"""Assigned tasks follow their agent's end (``tasks.following``), on SQLite and PostgreSQL.

Agents are moved by ``Store.transition_agent`` exactly as the scheduler moves them; the events reach the
queue through the real bus after commit.
"""

from __future__ import annotations

import pytest

from godel.core.ports import EventQuery
from godel.core.states import TaskStatus
from godel.core.transitions import Trigger
from godel.errors import TaskTransitionError
from godel.store import SqlStore
from godel.tasks import TaskQueue
from tests.tasks.conftest import COMPLETE, ERROR, RUN, add_agent, drive, eventually


async def status_becomes(queue: TaskQueue, task_id: str, status: TaskStatus) -> None:
    async def check() -> bool:
        return (await queue.get(task_id)).status == status

    await eventually(check)


async def test_the_task_completes_with_its_agent(queue: TaskQueue, store: SqlStore) -> None:
    await queue.start()
    agent = await add_agent(store)
    task = await queue.create("t")
    await queue.assign(task.id, agent_id=agent.id)
    outcome = {"success": True, "result": "fixed it", "reason": "final message"}
    await drive(store, agent.id, COMPLETE[:-1], outcome=outcome, commits=["abc123"])
    await drive(store, agent.id, [Trigger.CLEANUP_DONE])
    await status_becomes(queue, task.id, TaskStatus.COMPLETED)
    done = await queue.get(task.id)
    assert done.result is not None and done.result["result"] == "fixed it" and done.result["commits"] == ["abc123"]
    assert done.metadata["history"][0]["outcome"] == "completed"
    types = [e.type for e in await store.query_events(EventQuery(limit=1000))]
    assert types.index("agent:complete") < types.index("task:completed")


async def test_a_final_agent_failure_requeues_the_task(queue: TaskQueue, store: SqlStore) -> None:
    await queue.start()
    agent = await add_agent(store)
    task = await queue.create("t", max_attempts=2)
    await queue.claim(agent_id=agent.id)
    await drive(store, agent.id, ERROR, last_error="exit 3")
    await status_becomes(queue, task.id, TaskStatus.PENDING)
    requeued = await queue.get(task.id)
    assert requeued.attempts == 1
    assert requeued.metadata["history"][0]["error"] == f"agent {agent.id} failed: exit 3"


async def test_an_agent_that_will_retry_keeps_its_task(queue: TaskQueue, store: SqlStore) -> None:
    await queue.start()
    agent = await add_agent(store, max_retries=1)
    task = await queue.create("t")
    await queue.assign(task.id, agent_id=agent.id)
    await drive(store, agent.id, ERROR, last_error="first try failed")  # retry_count 0 < 1: a retry is coming
    await drive(store, agent.id, [Trigger.RETRY], retry_count=1)
    await drive(store, agent.id, COMPLETE, outcome={"result": "second try"})
    await status_becomes(queue, task.id, TaskStatus.COMPLETED)
    done = await queue.get(task.id)
    assert done.attempts == 0 and done.result is not None and done.result["result"] == "second try"


async def test_killed_and_deleted_agents_fail_their_tasks(queue: TaskQueue, store: SqlStore) -> None:
    await queue.start()
    killed, deleted = await add_agent(store), await add_agent(store)
    a, b = await queue.create("a", max_attempts=1), await queue.create("b", max_attempts=1)
    await queue.assign(a.id, agent_id=killed.id)
    await queue.assign(b.id, agent_id=deleted.id)
    await drive(store, killed.id, [Trigger.KILL], last_error="stopped by ann")
    await store.delete_agent(deleted.id, actor="test")
    await status_becomes(queue, a.id, TaskStatus.DEAD)
    await status_becomes(queue, b.id, TaskStatus.DEAD)
    assert "was killed" in (await queue.get(a.id)).metadata["lastError"]
    assert "deleted" in (await queue.get(b.id)).metadata["lastError"]


async def test_a_running_agent_leaves_its_task_alone(queue: TaskQueue, store: SqlStore) -> None:
    await queue.start()
    running, finished = await add_agent(store), await add_agent(store)
    a, b = await queue.create("a"), await queue.create("b")
    await queue.assign(a.id, agent_id=running.id)
    await queue.assign(b.id, agent_id=finished.id)
    await drive(store, running.id, RUN)
    await drive(store, finished.id, COMPLETE)
    await status_becomes(queue, b.id, TaskStatus.COMPLETED)  # events are handled in order: a's were seen
    assert (await queue.get(a.id)).status == TaskStatus.ASSIGNED


async def test_the_start_sweep_settles_agents_that_ended_unheard(queue: TaskQueue, store: SqlStore) -> None:
    """The server was down when the agents ended: nobody heard the events; the next start settles the tasks."""
    done, failed, running = await add_agent(store), await add_agent(store), await add_agent(store)
    tasks = [await queue.create(name) for name in ("done", "failed", "running")]
    for task, agent in zip(tasks, (done, failed, running), strict=True):
        await queue.assign(task.id, agent_id=agent.id)
    await drive(store, done.id, COMPLETE, outcome={"result": "ok"})
    await drive(store, failed.id, ERROR, last_error="crash")
    await drive(store, running.id, RUN)
    await queue.start()
    await status_becomes(queue, tasks[0].id, TaskStatus.COMPLETED)
    await status_becomes(queue, tasks[1].id, TaskStatus.PENDING)
    assert (await queue.get(tasks[2].id)).status == TaskStatus.ASSIGNED
    await queue.stop()


async def test_a_late_event_does_not_touch_a_newer_attempt(queue: TaskQueue, store: SqlStore) -> None:
    """Settling is guarded by the attempt it saw: a stale end never fails the task's next run."""
    first, second = await add_agent(store), await add_agent(store)
    task = await queue.create("t")
    await queue.assign(task.id, agent_id=first.id)
    await queue.fail(task.id, "reported by hand")
    await queue.assign(task.id, agent_id=second.id)
    stale = await queue.get(task.id)
    await queue.fail(task.id, "again by hand")
    await queue.assign(task.id, agent_id=second.id)  # attempt 3, same agent
    with pytest.raises(TaskTransitionError):
        await queue.fail(task.id, "late", agent_id=second.id, attempt=stale.metadata["history"][-1]["attempt"])
    assert (await queue.get(task.id)).status == TaskStatus.ASSIGNED
