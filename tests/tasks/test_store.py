"""``store.tasks.TaskStore`` on SQLite and PostgreSQL: round trip, queue order, keyset pages, claims under
concurrency, and every change committed together with its event (or not at all)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from godel.core.events import EventFilter
from godel.core.ids import new_id
from godel.core.models import Task
from godel.core.ports import EventQuery
from godel.core.states import TaskStatus
from godel.errors import ConflictError, StoreError, TaskNotFoundError, TaskTransitionError, ValidationError
from godel.store import SqlStore, open_store
from godel.store.database import Tx
from godel.store.tasks import TaskChange, TaskQuery

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def new_task(title: str = "t", **fields: Any) -> Task:
    return Task(id=new_id(), title=title, **fields)


def assign_to(agent_id: str | None) -> Any:
    def decide(task: Task) -> TaskChange:
        if task.status != TaskStatus.PENDING:
            raise TaskTransitionError(task.id, task.status.value, "claim")
        return TaskChange({"status": TaskStatus.ASSIGNED, "agent_id": agent_id}, "task:assigned", {"agentId": agent_id})

    return decide


async def task_events(store: SqlStore) -> list[Any]:
    return await store.query_events(EventQuery(filter=EventFilter(patterns=("task:*",)), limit=10_000))


async def test_round_trip_and_created_event(store: SqlStore) -> None:
    task = new_task("write docs", description="all of them", priority=7, metadata={"k": [1, 2]}, created_at=T0)
    created, event = await store.create_task(task, actor="user:ann")
    got = await store.get_task(task.id)
    assert got == created
    assert got.status == TaskStatus.PENDING and got.created_at == T0 and got.updated_at is not None
    assert got.metadata == {"k": [1, 2]}
    assert event.type == "task:created" and event.sequence is not None
    assert event.payload["taskId"] == task.id and event.payload["priority"] == 7
    assert event.source.component == "user" and event.metadata.user_id == "ann"
    stored = await store.get_event(event.id)
    assert stored.sequence == event.sequence
    with pytest.raises(TaskNotFoundError):
        await store.get_task(new_id())


async def test_list_is_in_queue_order_and_pages_cover_every_task_once(store: SqlStore) -> None:
    expected = []
    for i in range(23):
        # Several tasks share a priority and a creation time: the id breaks those ties.
        task = new_task(f"t{i}", priority=i % 4, created_at=T0 + timedelta(seconds=i // 5))
        await store.create_task(task, actor="test")
        expected.append(task)
    expected.sort(key=lambda t: (-t.priority, t.created_at, t.id))
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list_tasks(TaskQuery(limit=4, cursor=cursor))
        seen.extend(t.id for t in page.items)
        if not page.has_more:
            assert page.cursor is None
            break
        cursor = page.cursor
    assert seen == [t.id for t in expected]


async def test_list_filters(store: SqlStore) -> None:
    a = await store.create_task(new_task("a", priority=5), actor="t")
    b = await store.create_task(new_task("b", priority=-5), actor="t")
    await store.change_task(b[0].id, assign_to(None), actor="t")
    assert [t.title for t in (await store.list_tasks(TaskQuery(status=(TaskStatus.ASSIGNED,)))).items] == ["b"]
    assert [t.title for t in (await store.list_tasks(TaskQuery(min_priority=0))).items] == ["a"]
    assert [t.title for t in (await store.list_tasks(TaskQuery(max_priority=0))).items] == ["b"]
    assert (await store.list_tasks(TaskQuery(agent_id=new_id()))).items == []
    assert (await store.list_tasks(TaskQuery(team_id=new_id()))).items == []
    counts = await store.count_tasks()
    assert counts == {"pending": 1, "assigned": 1, "completed": 0, "failed": 0, "dead": 0}
    assert a[0].id != b[0].id
    with pytest.raises(ValidationError):
        await store.list_tasks(TaskQuery(cursor="not-a-cursor"))


async def test_change_commits_row_and_event_together(store: SqlStore) -> None:
    task, _ = await store.create_task(new_task(), actor="t")
    updated, event = await store.change_task(task.id, assign_to(None), actor="t")
    assert updated.status == TaskStatus.ASSIGNED
    assert event.payload == {"taskId": task.id, "from": "pending", "to": "assigned", "agentId": None, "actor": "t"}
    assert [e.type for e in await task_events(store)] == ["task:created", "task:assigned"]


async def test_a_refused_change_writes_nothing(store: SqlStore) -> None:
    task, _ = await store.create_task(new_task(), actor="t")
    await store.change_task(task.id, assign_to(None), actor="t")
    before = await store.get_task(task.id)
    with pytest.raises(TaskTransitionError):
        await store.change_task(task.id, assign_to(None), actor="t")
    assert await store.get_task(task.id) == before
    assert len(await task_events(store)) == 2


async def test_a_failed_event_append_rolls_the_row_back(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The row change and its event are one transaction: if the event cannot be written, neither is the row."""
    task, _ = await store.create_task(new_task(), actor="t")

    async def broken(self: Tx, batch: Any) -> Any:
        raise StoreError("disk full")

    monkeypatch.setattr(Tx, "append", broken)
    with pytest.raises(StoreError):
        await store.change_task(task.id, assign_to(None), actor="t")
    monkeypatch.undo()
    assert (await store.get_task(task.id)).status == TaskStatus.PENDING
    assert [e.type for e in await task_events(store)] == ["task:created"]


async def test_listener_hears_task_events_only_after_commit(store: SqlStore) -> None:
    heard: list[tuple[str, TaskStatus]] = []

    async def listener(events: list[Any]) -> None:
        for e in events:  # committed: the change is readable from another connection
            heard.append((e.type, (await store.get_task(e.payload["taskId"])).status))

    store.set_commit_listener(listener)
    task, _ = await store.create_task(new_task(), actor="t")
    await store.change_task(task.id, assign_to(None), actor="t")
    assert heard == [("task:created", TaskStatus.PENDING), ("task:assigned", TaskStatus.ASSIGNED)]


async def test_fields_that_never_change_are_refused(store: SqlStore) -> None:
    task, _ = await store.create_task(new_task(), actor="t")
    with pytest.raises(ValueError):
        await store.change_task(task.id, lambda t: TaskChange({"id": new_id()}, "task:x"), actor="t")


async def test_claim_takes_the_highest_priority_then_the_oldest(store: SqlStore) -> None:
    titles = [("low", 0, 0), ("high-new", 9, 2), ("high-old", 9, 1), ("mid", 5, 0)]
    for title, priority, age in titles:
        await store.create_task(new_task(title, priority=priority, created_at=T0 + timedelta(seconds=age)), actor="t")
    order = []
    while (claimed := await store.claim_task(assign_to(None), agent_id=None, team_id=None, actor="t")) is not None:
        order.append(claimed[0].title)
    assert order == ["high-old", "high-new", "mid", "low"]


async def test_claim_eligibility(store: SqlStore) -> None:
    from tests.tasks.conftest import add_agent, add_team

    team = await add_team(store)
    other_team = await add_team(store, "other")
    agent = await add_agent(store)
    other = await add_agent(store)
    await store.create_task(new_task("for-other", priority=9, agent_id=other.id), actor="t")
    await store.create_task(new_task("for-other-team", priority=8, team_id=other_team.id), actor="t")
    await store.create_task(new_task("for-team", priority=7, team_id=team.id), actor="t")
    await store.create_task(new_task("mine", priority=6, agent_id=agent.id), actor="t")
    await store.create_task(new_task("anyone", priority=5), actor="t")

    async def claim(agent_id: str | None, team_id: str | None) -> str | None:
        got = await store.claim_task(assign_to(agent_id), agent_id=agent_id, team_id=team_id, actor="t")
        return got[0].title if got else None

    assert await claim(agent.id, team.id) == "for-team"
    assert await claim(agent.id, None) == "mine"
    assert await claim(None, team.id) == "anyone"
    assert await claim(agent.id, team.id) is None  # what is left is another agent's and another team's
    assert await claim(None, other_team.id) == "for-other-team"
    assert await claim(other.id, None) == "for-other"


@pytest.mark.parametrize("stores", [1, 4])
async def test_concurrent_claimers_each_take_a_different_task(store: SqlStore, store_url: str, stores: int) -> None:
    """20 claimers over 10 tasks, on one store or on four (four engines on one database act like four server
    processes): every task is claimed exactly once and ten claimers get nothing."""
    ids = set()
    for i in range(10):
        task, _ = await store.create_task(new_task(f"t{i}", priority=i % 3), actor="t")
        ids.add(task.id)
    others = [open_store(store_url) for _ in range(stores - 1)]
    pool = [store, *others]
    try:

        async def claimer(n: int) -> str | None:
            s = pool[n % len(pool)]
            got = await s.claim_task(assign_to(None), agent_id=None, team_id=None, actor=f"claimer:{n}")
            return got[0].id if got else None

        results = await asyncio.gather(*(claimer(n) for n in range(20)))
    finally:
        for s in others:
            await s.close()
    claimed = [r for r in results if r is not None]
    assert sorted(claimed) == sorted(ids)  # each exactly once
    assert results.count(None) == 10
    assigned = [e for e in await task_events(store) if e.type == "task:assigned"]
    assert sorted(e.payload["taskId"] for e in assigned) == sorted(ids)
    assert (await store.count_tasks())["assigned"] == 10


@pytest.mark.postgres
async def test_postgres_claim_skips_a_row_another_transaction_holds(store: SqlStore, store_url: str) -> None:
    """FOR UPDATE SKIP LOCKED: a claimer passes over a task another transaction has locked, instead of waiting
    for it or taking it too."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite admits one writer at a time; there is no row lock to skip")
    first, _ = await store.create_task(new_task("first", priority=9), actor="t")
    second, _ = await store.create_task(new_task("second", priority=1), actor="t")
    import sqlalchemy as sa

    from godel.store import tables

    holder = open_store(store_url)
    try:
        async with holder.engine.connect() as conn:
            tx = await conn.begin()
            t = tables.tasks
            await conn.execute(sa.select(t.c.id).where(t.c.id == first.id).with_for_update())
            got = await asyncio.wait_for(
                store.claim_task(assign_to(None), agent_id=None, team_id=None, actor="t"), timeout=10
            )
            await tx.rollback()
    finally:
        await holder.close()
    assert got is not None and got[0].id == second.id
    assert (await store.get_task(first.id)).status == TaskStatus.PENDING


async def test_delete_checks_then_deletes_with_an_event(store: SqlStore) -> None:
    task, _ = await store.create_task(new_task(), actor="t")

    def refuse(t: Task) -> None:
        raise TaskTransitionError(t.id, t.status.value, "delete")

    with pytest.raises(TaskTransitionError):
        await store.delete_task(task.id, allowed=refuse, actor="t")
    deleted, event = await store.delete_task(task.id, allowed=lambda t: None, actor="t")
    assert deleted.id == task.id and event.type == "task:deleted"
    with pytest.raises(TaskNotFoundError):
        await store.get_task(task.id)
    with pytest.raises(TaskNotFoundError):
        await store.delete_task(task.id, allowed=lambda t: None, actor="t")


async def test_deleting_an_agent_clears_it_from_its_tasks(store: SqlStore) -> None:
    from tests.tasks.conftest import add_agent

    agent = await add_agent(store)
    task, _ = await store.create_task(new_task(agent_id=agent.id), actor="t")
    await store.delete_agent(agent.id, actor="t")
    assert (await store.get_task(task.id)).agent_id is None


async def test_a_task_for_an_unknown_agent_is_a_conflict(store: SqlStore) -> None:
    with pytest.raises(ConflictError):
        await store.create_task(new_task(agent_id=new_id()), actor="t")
    assert (await store.list_tasks(TaskQuery())).items == []


async def test_mapper_keeps_every_field(store: SqlStore) -> None:
    task = new_task(
        "all fields", description="d", priority=-3, status=TaskStatus.DEAD, attempts=4, result={"r": 1},
        completed_at=T0, metadata={"history": [{"attempt": 1}]}, created_at=T0,
    )  # fmt: skip
    created, _ = await store.create_task(task, actor="t")
    assert await store.get_task(task.id) == dataclasses.replace(task, updated_at=created.updated_at)
