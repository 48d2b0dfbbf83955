"""The task queue's table: typed reads, keyset-paged listing, and state changes committed with their event.

A task's state changes in exactly one way: ``change_task`` (or ``claim_task`` for "the next one") reads the
row inside a write transaction (locked ``FOR UPDATE`` on PostgreSQL; SQLite's single writer already holds
the database), hands it to the caller's ``decide`` function, which validates the move and returns a
``TaskChange``, and then writes the row with an optimistic check of the status it read, appending the
change's event in the same transaction. A refused move (``decide`` raises) writes nothing. Events reach the
bus only after commit (``store.database``).

``claim_task`` takes the highest-priority pending task a claimer may have (oldest first among equals) and
marks it in the same transaction. On PostgreSQL the candidate row is selected ``FOR UPDATE SKIP LOCKED``,
so concurrent claimers in any number of processes each get a different task or none; on SQLite the
transaction begins IMMEDIATE and holds the database's one write lock, which gives the same guarantee.

Listing is ordered like the queue: priority descending, then oldest first, then id; the cursor is the last
row's ``(priority, created_at, id)``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from godel.core.events import Event, EventMetadata
from godel.core.models import Task
from godel.core.ports import Page
from godel.core.states import TaskStatus
from godel.errors import ConflictError, FieldError, TaskNotFoundError, ValidationError
from godel.store import rows, tables
from godel.store.host import StoreHost, WriteTx, source_of

TASKS = rows.Mapper(Task, tables.tasks)

_NOT_CHANGEABLE = frozenset({"id", "created_at"})


@dataclass(frozen=True)
class TaskQuery:
    status: Sequence[TaskStatus] = ()
    agent_id: str | None = None
    team_id: str | None = None
    min_priority: int | None = None
    max_priority: int | None = None
    limit: int = 50
    cursor: str | None = None  # opaque; from the previous Page


@dataclass(frozen=True)
class TaskChange:
    """What one state change writes: ``Task`` field changes, and the event that announces them."""

    changes: dict[str, Any]
    event: str  # "task:assigned", "task:completed" …
    payload: dict[str, Any] = field(default_factory=dict)


Decide = Callable[[Task], TaskChange]


def task_event(task: Task, type_: str, payload: dict[str, Any], *, actor: str, at: datetime) -> Event:
    source = source_of(actor, "tasks")
    return Event(
        type=type_,
        payload={"taskId": task.id, **payload, "actor": actor},
        source=source,
        metadata=EventMetadata(
            agent_id=task.agent_id,
            team_id=task.team_id,
            user_id=source.instance if source.component == "user" else None,
        ),
        timestamp=at,
    )


def encode_cursor(task: Task) -> str:
    assert task.created_at is not None
    raw = json.dumps([task.priority, task.created_at.isoformat(), task.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        priority, stamp, task_id = json.loads(raw)
        at = datetime.fromisoformat(stamp)
        if at.tzinfo is None or not isinstance(task_id, str) or type(priority) is not int:
            raise ValueError("malformed")
        return priority, at, task_id
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValidationError("invalid cursor", [FieldError("cursor", "not a cursor from a previous page")]) from exc


def _queue_order(t: sa.Table) -> tuple[sa.UnaryExpression[Any], ...]:
    return (t.c.priority.desc(), t.c.created_at.asc(), t.c.id.asc())


def list_statement(query: TaskQuery) -> sa.Select[Any]:
    if query.limit < 1:
        raise ValueError("limit must be at least 1")
    t = tables.tasks
    stmt = sa.select(t)
    if query.status:
        stmt = stmt.where(t.c.status.in_(sorted({s.value for s in query.status})))
    if query.agent_id is not None:
        stmt = stmt.where(t.c.agent_id == query.agent_id)
    if query.team_id is not None:
        stmt = stmt.where(t.c.team_id == query.team_id)
    if query.min_priority is not None:
        stmt = stmt.where(t.c.priority >= query.min_priority)
    if query.max_priority is not None:
        stmt = stmt.where(t.c.priority <= query.max_priority)
    if query.cursor:
        priority, at, last_id = decode_cursor(query.cursor)
        stmt = stmt.where(
            t.c.priority <= priority,
            sa.or_(
                t.c.priority < priority,
                t.c.created_at > at,
                sa.and_(t.c.created_at == at, t.c.id > last_id),
            ),
        )
    return stmt.order_by(*_queue_order(t)).limit(query.limit + 1)


def claim_statement(agent_id: str | None, team_id: str | None) -> sa.Select[Any]:
    """The next pending task a claimer may take: one reserved for its agent, or one for nobody in particular
    (or for its team). Without an agent, only tasks reserved for no agent."""
    c = tables.tasks.c
    open_to_team = c.team_id.is_(None) if team_id is None else sa.or_(c.team_id.is_(None), c.team_id == team_id)
    unreserved = sa.and_(c.agent_id.is_(None), open_to_team)
    eligible = unreserved if agent_id is None else sa.or_(c.agent_id == agent_id, unreserved)
    return (
        sa.select(tables.tasks)
        .where(c.status == TaskStatus.PENDING.value, eligible)
        .order_by(*_queue_order(tables.tasks))
        .limit(1)
    )


def _values(changes: dict[str, Any]) -> dict[str, Any]:
    bad = _NOT_CHANGEABLE & changes.keys()
    if bad:
        raise ValueError(f"cannot change {sorted(bad)} of a task")
    return TASKS.values(changes)


class TaskStore:
    """Mixed into ``SqlStore`` (which provides ``_write``, ``_read`` and ``_clock``)."""

    async def create_task(self: StoreHost, task: Task, *, actor: str) -> tuple[Task, Event]:
        now = self._clock.now()
        task = dataclasses.replace(task, created_at=task.created_at or now, updated_at=now)
        payload = {
            "title": task.title,
            "priority": task.priority,
            "status": task.status.value,
            "agentId": task.agent_id,
            "teamId": task.team_id,
        }
        async with self._write(events=True) as tx:
            await tx.conn.execute(tables.tasks.insert(), TASKS.to_row(task))
            (event,) = await tx.append([task_event(task, "task:created", payload, actor=actor, at=now)])
        return task, event

    async def get_task(self: StoreHost, task_id: str) -> Task:
        async with self._read() as conn:
            return await _get(conn, task_id)

    async def list_tasks(self: StoreHost, query: TaskQuery) -> Page[Task]:
        stmt = list_statement(query)
        async with self._read() as conn:
            found = TASKS.from_rows(await conn.execute(stmt))
        has_more = len(found) > query.limit
        items = found[: query.limit]
        return Page(items=items, cursor=encode_cursor(items[-1]) if has_more else None, has_more=has_more)

    async def count_tasks(self: StoreHost) -> dict[str, int]:
        """How many tasks are in each status (every status present, zero or not)."""
        t = tables.tasks
        stmt = sa.select(t.c.status, sa.func.count()).group_by(t.c.status)
        async with self._read() as conn:
            counted = {str(status): int(n) for status, n in await conn.execute(stmt)}
        return {s.value: counted.get(s.value, 0) for s in TaskStatus}

    async def team_exists(self: StoreHost, team_id: str) -> bool:
        t = tables.teams
        async with self._read() as conn:
            return (await conn.execute(sa.select(t.c.id).where(t.c.id == team_id))).first() is not None

    async def change_task(self: StoreHost, task_id: str, decide: Decide, *, actor: str) -> tuple[Task, Event]:
        """Read the task locked, let ``decide`` validate the move and say what changes, write it with its event.
        ``decide`` raising (a refused transition) leaves the row and the log as they were."""
        async with self._write(events=True) as tx:
            current = await _get(tx.conn, task_id, for_update=True)
            return await _apply(self, tx, current, decide(current), actor=actor)

    async def claim_task(
        self: StoreHost, decide: Decide, *, agent_id: str | None, team_id: str | None, actor: str
    ) -> tuple[Task, Event] | None:
        """Take the highest-priority pending task this agent (and/or team) may have and apply ``decide`` to it;
        None when there is none. Safe with any number of concurrent claimers (see the module docstring)."""
        stmt = claim_statement(agent_id, team_id)
        async with self._write(events=True) as tx:
            if tx.conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            row = (await tx.conn.execute(stmt)).first()
            if row is None:
                return None
            current = TASKS.from_row(row)
            return await _apply(self, tx, current, decide(current), actor=actor)

    async def delete_task(
        self: StoreHost, task_id: str, *, allowed: Callable[[Task], None], actor: str
    ) -> tuple[Task, Event]:
        """Delete the task if ``allowed`` (which raises to refuse) accepts it; appends ``task:deleted``."""
        async with self._write(events=True) as tx:
            current = await _get(tx.conn, task_id, for_update=True)
            allowed(current)
            await tx.conn.execute(sa.delete(tables.tasks).where(tables.tasks.c.id == task_id))
            payload = {"status": current.status.value, "title": current.title}
            event = task_event(current, "task:deleted", payload, actor=actor, at=self._clock.now())
            (stored,) = await tx.append([event])
        return current, stored


async def _get(conn: AsyncConnection, task_id: str, *, for_update: bool = False) -> Task:
    stmt = sa.select(tables.tasks).where(tables.tasks.c.id == task_id)
    if for_update and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()  # SQLite's writer already holds the database lock
    row = (await conn.execute(stmt)).first()
    if row is None:
        raise TaskNotFoundError(task_id)
    return TASKS.from_row(row)


async def _apply(host: StoreHost, tx: WriteTx, current: Task, change: TaskChange, *, actor: str) -> tuple[Task, Event]:
    now = host._clock.now()
    values = _values(change.changes) | {"updated_at": now}
    t = tables.tasks
    # The optimistic check: the row still has the status ``decide`` saw (the lock makes this hold; it is the
    # guard should a writer ever change tasks without one).
    stmt = sa.update(t).where(t.c.id == current.id, t.c.status == current.status.value).values(values).returning(*t.c)
    row = (await tx.conn.execute(stmt)).first()
    if row is None:
        raise ConflictError(
            f"task {current.id} changed meanwhile; try again",
            details={"taskId": current.id, "expectedStatus": current.status.value},
        )
    updated = TASKS.from_row(row)
    payload = {"from": current.status.value, "to": updated.status.value, **change.payload}
    (event,) = await tx.append([task_event(updated, change.event, payload, actor=actor, at=now)])
    return updated, event
