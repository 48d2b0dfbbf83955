"""The store reads of the merge queue (``godel.store.merging``) on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from godel.core.events import make_event
from godel.core.ids import new_id
from godel.core.models import Agent
from godel.store import SqlStore, tables
from godel.store.merging import merge_events, workflow_agent_ids


async def test_workflow_agents_from_steps_and_metadata(store: SqlStore) -> None:
    workflow, other = new_id(), new_id()
    now = datetime.now(UTC)

    async def agent(minutes: int, **metadata: str) -> str:
        a = Agent(id=new_id(), task="t", metadata=metadata, spawned_at=now + timedelta(minutes=minutes))
        await store.create_agent(a, actor="test")
        return a.id

    tagged = await agent(3, workflowId=workflow)
    stepped = await agent(1)
    both = await agent(2, workflowId=workflow)
    await agent(0, workflowId=other)
    await agent(4)
    async with store.engine.begin() as conn:
        await conn.execute(sa.insert(tables.workflows).values(id=workflow, name="wf", definition={}))
        for step, agent_id in (("a", stepped), ("b", both), ("c", None)):
            await conn.execute(
                sa.insert(tables.workflow_steps).values(
                    id=new_id(), workflow_id=workflow, step_id=step, name=step, task="t", agent_id=agent_id
                )
            )
    assert await workflow_agent_ids(store, workflow) == [stepped, both, tagged]
    assert await workflow_agent_ids(store, new_id()) == []


async def test_merge_events_by_correlation_id(store: SqlStore) -> None:
    run, other = new_id(), new_id()
    events = [
        make_event("merge:started", {"n": 1}, component="merging", correlation_id=run),
        make_event("merge:started", {"n": 2}, component="merging", correlation_id=other),
        make_event("agent:start", {"n": 3}, component="x", correlation_id=run),
        make_event("merge:branch", {"n": 4}, component="merging", correlation_id=run),
        make_event("merge:completed", {"n": 5}, component="merging", correlation_id=run),
    ]
    await store.append_events(events)
    assert [e.payload["n"] for e in await merge_events(store, run)] == [1, 4, 5]
    assert await merge_events(store, new_id()) == []
