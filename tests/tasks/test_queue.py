"""``TaskQueue`` on SQLite and PostgreSQL: validation, priorities, assignment and claims, the fail → requeue →
dead-letter path with its history, retry, refused transitions, and the events each change leaves."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from godel.core.events import EventFilter
from godel.core.ids import new_id
from godel.core.ports import EventQuery
from godel.core.states import TaskStatus
from godel.errors import TaskNotFoundError, TaskTransitionError, ValidationError
from godel.store import SqlStore
from godel.tasks import TaskQuery, TaskQueue
from tests.tasks.conftest import add_agent, add_team


async def events_of(store: SqlStore, task_id: str) -> list[Any]:
    found = await store.query_events(EventQuery(filter=EventFilter(patterns=("task:*",)), limit=10_000))
    return [e for e in found if e.payload.get("taskId") == task_id]


# ------------------------------------------------------------------------------------------------ create


async def test_create_defaults(queue: TaskQueue) -> None:
    task = await queue.create("write the docs", metadata={"ticket": "GDL-1"})
    assert task.status == TaskStatus.PENDING and task.priority == 0 and task.attempts == 0
    assert task.metadata == {
        "ticket": "GDL-1",
        "maxAttempts": 3,
        "history": [],
        "reservedFor": {"agentId": None, "teamId": None},
    }
    assert await queue.get(task.id) == task


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"priority": 1001}, "priority"),
        ({"priority": -1001}, "priority"),
        ({"priority": 10**30}, "priority"),
        ({"priority": True}, "priority"),
        ({"max_attempts": 0}, "maxAttempts"),
        ({"max_attempts": 101}, "maxAttempts"),
        ({"metadata": {"history": []}}, "metadata"),
        ({"agent_id": "no-such-agent"}, "agentId"),
        ({"agent_id": "x" * 500}, "agentId"),
        ({"team_id": new_id()}, "teamId"),
    ],
)
async def test_create_refuses_bad_input_and_writes_nothing(
    queue: TaskQueue, store: SqlStore, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as err:
        await queue.create("t", **fields)
    assert field in [f.field for f in err.value.fields]
    assert (await queue.list(TaskQuery())).items == []
    assert await store.last_sequence() == 0


@pytest.mark.parametrize("title", ["", "   ", "x" * 256])
async def test_create_refuses_bad_titles(queue: TaskQueue, title: str) -> None:
    with pytest.raises(ValidationError):
        await queue.create(title)


async def test_extreme_priorities_are_kept(queue: TaskQueue) -> None:
    low = await queue.create("low", priority=-1000)
    high = await queue.create("high", priority=1000)
    assert [t.id for t in (await queue.list(TaskQuery())).items] == [high.id, low.id]


# ------------------------------------------------------------------------------------------ assign/claim


async def test_claim_follows_priority_and_records_the_attempt(queue: TaskQueue, store: SqlStore) -> None:
    agent = await add_agent(store)
    for title, priority in [("b", 1), ("a", 5), ("c", 1), ("z", -2)]:
        await queue.create(title, priority=priority)
    order = []
    while (task := await queue.claim(agent_id=agent.id)) is not None:
        assert task.status == TaskStatus.ASSIGNED and task.agent_id == agent.id
        (attempt,) = task.metadata["history"]
        assert attempt["attempt"] == 1 and attempt["agentId"] == agent.id and attempt["claimed"] is True
        assert attempt["assignedAt"] and attempt["endedAt"] is None
        order.append(task.title)
    assert order == ["a", "b", "c", "z"]


async def test_claim_needs_a_claimer_that_exists(queue: TaskQueue) -> None:
    await queue.create("t")
    with pytest.raises(ValidationError):
        await queue.claim()
    with pytest.raises(ValidationError) as err:
        await queue.claim(agent_id=new_id())
    assert err.value.fields[0].field == "agentId"
    assert (await queue.stats())["pending"] == 1


async def test_an_agent_claims_its_teams_tasks(queue: TaskQueue, store: SqlStore) -> None:
    team = await add_team(store)
    member = await add_agent(store, team_id=team.id)
    outsider = await add_agent(store)
    task = await queue.create("team work", team_id=team.id)
    assert await queue.claim(agent_id=outsider.id) is None
    claimed = await queue.claim(agent_id=member.id)
    assert claimed is not None and claimed.id == task.id and claimed.team_id == team.id


async def test_assign_to_a_team_then_hand_on_to_an_agent(queue: TaskQueue, store: SqlStore) -> None:
    team = await add_team(store)
    agent = await add_agent(store, team_id=team.id)
    task = await queue.create("review")
    held = await queue.assign(task.id, team_id=team.id)
    assert held.status == TaskStatus.ASSIGNED and held.team_id == team.id and held.agent_id is None
    handed = await queue.assign(task.id, agent_id=agent.id)
    assert handed.agent_id == agent.id and handed.team_id == team.id
    assert len(handed.metadata["history"]) == 1 and handed.metadata["history"][0]["agentId"] == agent.id
    with pytest.raises(TaskTransitionError):  # an agent holds it now
        await queue.assign(task.id, agent_id=agent.id)
    types = [e.type for e in await events_of(store, task.id)]
    assert types == ["task:created", "task:assigned", "task:assigned"]


async def test_assign_refuses_unknown_targets_and_nothing_changes(queue: TaskQueue, store: SqlStore) -> None:
    task = await queue.create("t")
    with pytest.raises(ValidationError):
        await queue.assign(task.id)
    with pytest.raises(ValidationError):
        await queue.assign(task.id, agent_id=new_id())
    with pytest.raises(ValidationError):
        await queue.assign(task.id, team_id="team-that-is-not")
    assert (await queue.get(task.id)).status == TaskStatus.PENDING
    assert len(await events_of(store, task.id)) == 1


async def test_start_records_when_work_began(queue: TaskQueue, store: SqlStore) -> None:
    team = await add_team(store)
    agent = await add_agent(store)
    task = await queue.create("t")
    with pytest.raises(TaskTransitionError):
        await queue.begin(task.id)  # pending: nobody works on it
    await queue.assign(task.id, team_id=team.id)
    started = await queue.begin(task.id, agent_id=agent.id)  # a team member takes it as it starts
    assert started.agent_id == agent.id
    assert started.metadata["history"][0]["startedAt"] is not None
    assert (await events_of(store, task.id))[-1].type == "task:started"


# -------------------------------------------------------------------------------- complete / fail / dead


async def test_complete_keeps_the_result(queue: TaskQueue, store: SqlStore) -> None:
    agent = await add_agent(store)
    task = await queue.create("t")
    await queue.assign(task.id, agent_id=agent.id)
    other = await add_agent(store)
    with pytest.raises(TaskTransitionError):  # guarded: only the agent that holds it
        await queue.complete(task.id, {"x": 1}, agent_id=other.id)
    done = await queue.complete(task.id, {"pr": 12})
    assert done.status == TaskStatus.COMPLETED and done.result == {"pr": 12} and done.completed_at is not None
    assert done.metadata["history"][0]["outcome"] == "completed"
    events = await events_of(store, task.id)
    assert events[-1].type == "task:completed" and events[-1].metadata.agent_id == agent.id
    for refused in (queue.complete(task.id), queue.fail(task.id, "x"), queue.assign(task.id, agent_id=agent.id)):
        with pytest.raises(TaskTransitionError) as err:
            await refused
        assert err.value.status_code == 409 and err.value.details["currentState"] == "completed"


async def test_fail_requeues_then_dead_letters_with_every_attempt(queue: TaskQueue, store: SqlStore) -> None:
    agents = [await add_agent(store) for _ in range(3)]
    task = await queue.create("flaky", max_attempts=3, priority=2)
    for n, agent in enumerate(agents, start=1):
        claimed = await queue.claim(agent_id=agent.id)
        assert claimed is not None and claimed.id == task.id
        failed = await queue.fail(task.id, f"boom {n}")
        assert failed.attempts == n
        if n < 3:
            assert failed.status == TaskStatus.PENDING and failed.agent_id is None  # requeued for anyone
        else:
            assert failed.status == TaskStatus.DEAD and failed.agent_id == agents[-1].id
    dead = await queue.get(task.id)
    history = dead.metadata["history"]
    assert [(a["attempt"], a["agentId"], a["outcome"], a["error"]) for a in history] == [
        (1, agents[0].id, "failed", "boom 1"),
        (2, agents[1].id, "failed", "boom 2"),
        (3, agents[2].id, "failed", "boom 3"),
    ]
    assert all(a["assignedAt"] <= a["endedAt"] for a in history)
    assert dead.metadata["lastError"] == "boom 3"
    assert [t.id for t in (await queue.dead_letters()).items] == [task.id]
    assert await queue.claim(agent_id=agents[0].id) is None  # the dead are not claimed
    types = [e.type for e in await events_of(store, task.id)]
    assert types == ["task:created", *["task:assigned", "task:failed"] * 2, "task:assigned", "task:dead"]
    assert (await queue.stats())["dead"] == 1


async def test_retry_from_the_dead_letter_list(queue: TaskQueue, store: SqlStore) -> None:
    agent = await add_agent(store)
    task = await queue.create("t", max_attempts=1)
    await queue.assign(task.id, agent_id=agent.id)
    await queue.fail(task.id, "nope")
    with pytest.raises(TaskTransitionError):
        await queue.complete(task.id)
    again = await queue.retry(task.id)
    assert again.status == TaskStatus.PENDING and again.attempts == 0 and again.agent_id is None
    assert len(again.metadata["history"]) == 1  # the dead attempt stays in the history
    claimed = await queue.claim(agent_id=agent.id)
    assert claimed is not None and claimed.metadata["history"][-1]["attempt"] == 2
    done = await queue.complete(task.id, {"ok": True})
    assert [a["outcome"] for a in done.metadata["history"]] == ["failed", "completed"]
    assert "task:requeued" in [e.type for e in await events_of(store, task.id)]
    with pytest.raises(TaskTransitionError):
        await queue.retry(task.id)  # completed is final


async def test_fail_without_retry_and_cancel_end_failed(queue: TaskQueue, store: SqlStore) -> None:
    agent = await add_agent(store)
    a = await queue.create("a")
    await queue.assign(a.id, agent_id=agent.id)
    failed = await queue.fail(a.id, "not worth retrying", retry=False)
    assert failed.status == TaskStatus.FAILED and failed.attempts == 1
    b = await queue.create("b")
    cancelled = await queue.cancel(b.id, "obsolete")
    assert cancelled.status == TaskStatus.FAILED and cancelled.metadata["lastError"] == "cancelled: obsolete"
    with pytest.raises(TaskTransitionError):
        await queue.cancel(b.id)
    assert (await queue.retry(b.id)).status == TaskStatus.PENDING


async def test_delete(queue: TaskQueue, store: SqlStore) -> None:
    agent = await add_agent(store)
    task = await queue.create("t")
    await queue.assign(task.id, agent_id=agent.id)
    with pytest.raises(TaskTransitionError):
        await queue.delete(task.id)
    await queue.delete(task.id, force=True)
    with pytest.raises(TaskNotFoundError):
        await queue.get(task.id)
    assert (await events_of(store, task.id))[-1].type == "task:deleted"  # the log keeps what happened
    for missing in (queue.complete(task.id), queue.retry(task.id), queue.delete(task.id)):
        with pytest.raises(TaskNotFoundError):
            await missing


async def test_concurrent_fails_count_every_attempt_once(queue: TaskQueue, store: SqlStore) -> None:
    """Two reports of the same attempt's failure at once: one counts, the other is refused (409)."""
    agent = await add_agent(store)
    task = await queue.create("t", max_attempts=5)
    await queue.assign(task.id, agent_id=agent.id)
    results = await asyncio.gather(queue.fail(task.id, "a"), queue.fail(task.id, "b"), return_exceptions=True)
    assert sum(isinstance(r, TaskTransitionError) for r in results) == 1
    assert (await queue.get(task.id)).attempts == 1


async def test_a_failed_task_goes_back_to_whom_it_was_for(queue: Any, store: Any) -> None:
    team = await add_team(store, "takers")
    open_task = await queue.create("for anyone")
    held = await queue.claim(team_id=team.id)  # a team takes it ...
    assert held is not None and held.id == open_task.id and held.team_id == team.id
    requeued = await queue.fail(open_task.id, "the team gave up")  # ... and fails it: anyone may have it again
    assert requeued.status == TaskStatus.PENDING and requeued.team_id is None and requeued.agent_id is None
    outsider = await add_agent(store)
    assert (await queue.claim(agent_id=outsider.id)).id == open_task.id
    reserved = await queue.create("for the team", team_id=team.id)  # a task made for the team stays the team's
    await queue.claim(team_id=team.id)
    assert (await queue.fail(reserved.id, "retry")).team_id == team.id
