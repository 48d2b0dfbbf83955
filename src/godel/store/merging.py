"""Reads the merge queue needs that the ``Store`` port has no method for: a workflow's agents, and one merge
run's events. Plain functions over a ``SqlStore``'s read connection (no mixin, no new table): the queue only
reads, and what it writes are ordinary events."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from godel.core.events import Event
from godel.store import tables
from godel.store.rows import event_from_row


class Readable(Protocol):
    def _read(self) -> AbstractAsyncContextManager[AsyncConnection]: ...


async def workflow_agent_ids(store: Readable, workflow_id: str) -> list[str]:
    """The agents of a workflow, oldest first: those its steps name (``workflow_steps.agent_id``) and those
    spawned with ``metadata.workflowId`` set to it (what the workflow engine records on the agents it starts)."""
    a, steps = tables.agents, tables.workflow_steps
    stepped = sa.select(steps.c.agent_id).where(steps.c.workflow_id == workflow_id, steps.c.agent_id.is_not(None))
    tagged: Any = a.c.metadata["workflowId"].as_string() == workflow_id
    stmt = sa.select(a.c.id).where(sa.or_(a.c.id.in_(stepped), tagged)).order_by(a.c.spawned_at, a.c.id)
    async with store._read() as conn:
        return [str(row[0]) for row in await conn.execute(stmt)]


async def merge_events(store: Readable, merge_id: str) -> list[Event]:
    """Every ``merge:*`` event of one run (they carry its id as their correlation id), in order."""
    e = tables.events
    stmt = (
        sa.select(e)
        .where(e.c.correlation_id == merge_id, e.c.event_type.startswith("merge:", autoescape=True))
        .order_by(e.c.sequence)
    )
    async with store._read() as conn:
        return [event_from_row(row) for row in await conn.execute(stmt)]
