"""``SqlStore``: the ``godel.core.ports.Store`` over SQLAlchemy Core, one code path for SQLite and PostgreSQL.

Each method is one transaction from ``store.database`` (which owns the writer, lock and listener rules).
The one rule that lives here: a state change, its transition record and its event commit together or not
at all. ``transition_agent`` reads the row (locked on PostgreSQL), validates the move with
``core.transitions.plan``, updates the row, appends the event and records the transition in one
transaction, so a refused or failed transition leaves row, history and log exactly as they were.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from godel.core.clock import SystemClock
from godel.core.events import Event, EventMetadata
from godel.core.models import Agent, Node, Session, Snapshot, TransitionRecord
from godel.core.ports import AgentQuery, Clock, CommitListener, EventQuery, Page
from godel.core.states import ACTIVE, AgentState
from godel.core.transitions import ENDING, Trigger, event_type_for, plan
from godel.core.urgency import urgent
from godel.errors import AgentNotFoundError, EventNotFoundError, NotFoundError, SnapshotNotFoundError
from godel.store import agents as agent_queries
from godel.store import migrations, rows, tables
from godel.store.auth import AuthQueries
from godel.store.database import Database
from godel.store.engine import (
    MIGRATIONS_LOCK_KEY,
    SqliteSynchronous,
    create_engine,
    insert_with_upsert,
    translate_errors,
)
from godel.store.events import query_events
from godel.store.gateway import BudgetQueries, GatewayQueries
from godel.store.host import WriteTx, source_of
from godel.store.tasks import TaskStore
from godel.store.teams import TeamStore
from godel.store.webhooks import WebhookQueries
from godel.store.workflows import WorkflowStore


class SqlStore(GatewayQueries, BudgetQueries, TaskStore, WorkflowStore, TeamStore, WebhookQueries, AuthQueries):
    def __init__(self, engine: AsyncEngine, *, clock: Clock | None = None) -> None:
        self._db = Database(engine)
        self._read = self._db.read
        self._write = self._db.write
        self._clock: Clock = clock or SystemClock()

    @property
    def engine(self) -> AsyncEngine:
        return self._db.engine

    @property
    def dialect(self) -> str:
        return self._db.engine.dialect.name

    def set_commit_listener(self, listener: CommitListener | None) -> None:
        self._db.listener = listener

    async def migrate(self) -> None:
        async with self._write() as tx:
            if not self._db.sqlite:
                # Two servers starting together must not both create the schema.
                await tx.conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATIONS_LOCK_KEY)))
            await tx.conn.run_sync(migrations.upgrade)

    async def ping(self) -> None:
        async with self._read() as conn:
            await conn.execute(sa.select(1))

    async def close(self) -> None:
        await self._db.close()

    def _event(self, type_: str, payload: dict[str, Any], *, actor: str, agent: Agent, at: datetime) -> Event:
        source = source_of(actor, "scheduler")
        return Event(
            type=type_,
            payload=payload,
            source=source,
            metadata=EventMetadata(
                agent_id=agent.id,
                team_id=agent.team_id,
                user_id=source.instance if source.component == "user" else None,
            ),
            timestamp=at,
        )

    # -------------------------------------------------------------------------------------------- agents

    async def create_agent(self, agent: Agent, *, actor: str) -> tuple[Agent, Event]:
        async with self._write(events=True) as tx:
            return await self._insert_agent(tx, agent, actor)

    async def create_and_admit(
        self, agent: Agent, *, actor: str, node_id: str, slots: int, reason: str, changes: dict[str, Any]
    ) -> tuple[Agent, Agent | None]:
        """Insert ``agent`` (``pending``) and, in the same transaction, admit it (``admit``, with ``changes``) when
        fewer than ``slots`` agents are active on ``node_id`` and no queued agent goes before it: the decision the
        admission pass would make, without its round trip. Returns the agent as created, and as admitted (None:
        it stays queued)."""
        values = agent_queries.checked_changes(changes)
        async with self._write(events=True) as tx:
            created, _ = await self._insert_agent(tx, agent, actor)
            busy = agent_queries.count_statement(sorted(ACTIVE), node_id).scalar_subquery()
            first = agent_queries.admission_statement(self._clock.now(), 1).with_only_columns(tables.agents.c.id)
            row = (await tx.conn.execute(sa.select(busy, first.scalar_subquery()))).one()  # one round trip
            if int(row[0]) >= slots or row[1] != agent.id:  # full, or a queued agent goes first (or a backoff)
                return created, None
            admitted, _ = await self._transition_in(tx, agent.id, Trigger.ADMIT, actor="scheduler", reason=reason,
                                                    values=values, payload=None)  # fmt: skip
        return created, admitted

    async def _insert_agent(self, tx: WriteTx, agent: Agent, actor: str) -> tuple[Agent, Event]:
        now = self._clock.now()
        agent = dataclasses.replace(agent, spawned_at=agent.spawned_at or now, updated_at=now)
        payload = {
            "agentId": agent.id,
            "task": agent.task,
            "label": agent.label,
            "kind": agent.kind,
            "repo": agent.repo,
            "baseRef": agent.base_ref,
        }
        created = self._event("agent:created", payload, actor=actor, agent=agent, at=now)
        await tx.conn.execute(tables.agents.insert(), rows.AGENTS.to_row(agent))
        (event,) = await tx.append([created])
        return agent, event

    async def get_agent(self, agent_id: str) -> Agent:
        async with self._read() as conn:
            return await self._get_agent(conn, agent_id)

    async def _get_agent(self, conn: AsyncConnection, agent_id: str, *, for_update: bool = False) -> Agent:
        stmt = sa.select(tables.agents).where(tables.agents.c.id == agent_id)
        if for_update:
            stmt = stmt.with_for_update()  # PostgreSQL; SQLite's writer already holds the database lock
        row = (await conn.execute(stmt)).first()
        if row is None:
            raise AgentNotFoundError(agent_id)
        return rows.AGENTS.from_row(row)

    async def list_agents(self, query: AgentQuery) -> Page[Agent]:
        stmt, params = agent_queries.list_statement(query)
        async with self._read() as conn:
            found = rows.AGENTS.from_rows(await conn.execute(stmt, params))
        has_more = len(found) > query.limit
        items = found[: query.limit]
        last = items[-1] if has_more else None
        cursor = agent_queries.encode_cursor(last.spawned_at, last.id) if last and last.spawned_at else None
        return Page(items=items, cursor=cursor, has_more=has_more)

    async def count_agents(self, states: Sequence[AgentState], node_id: str | None = None) -> int:
        async with self._read() as conn:
            return int((await conn.execute(agent_queries.count_statement(states, node_id))).scalar_one())

    async def admissible_agents(self, now: datetime, limit: int) -> list[Agent]:
        async with self._read() as conn:
            return rows.AGENTS.from_rows(await conn.execute(agent_queries.admission_statement(now, limit)))

    async def transition_agent(
        self,
        agent_id: str,
        trigger: Trigger,
        *,
        actor: str,
        reason: str | None = None,
        changes: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
    ) -> tuple[Agent, Event]:
        values = agent_queries.checked_changes(changes)  # before the transaction: a bad call writes nothing
        with urgent() if trigger in ENDING else contextlib.nullcontext():  # a run's end goes first (core.urgency)
            async with self._write(events=True) as tx:
                return await self._transition_in(
                    tx, agent_id, trigger, actor=actor, reason=reason, values=values, payload=payload
                )

    async def _transition_in(
        self,
        tx: WriteTx,
        agent_id: str,
        trigger: Trigger,
        *,
        actor: str,
        reason: str | None,
        values: dict[str, Any],
        payload: dict[str, Any] | None,
    ) -> tuple[Agent, Event]:
        """The move, its event and its transition record, inside the caller's write transaction."""
        current = await self._get_agent(tx.conn, agent_id, for_update=True)
        move = plan(agent_id, current.state, trigger)
        now = self._clock.now()
        values = values | {"lifecycle_state": move.to_state.value, "updated_at": now}
        updated = await self._update_agent_row(tx.conn, agent_id, values)
        body = {
            "agentId": agent_id,
            "from": move.from_state.value,
            "to": move.to_state.value,
            "trigger": move.trigger.value,
            "reason": reason,
            "actor": actor,
            **(payload or {}),
        }
        (event,) = await tx.append([self._event(event_type_for(move), body, actor=actor, agent=updated, at=now)])
        record = TransitionRecord(
            agent_id=agent_id,
            from_state=move.from_state,
            to_state=move.to_state,
            trigger=move.trigger.value,
            actor=actor,
            reason=reason,
            at=now,
            event_sequence=event.sequence,
        )
        row = rows.TRANSITIONS.to_row(record)
        del row["id"]  # assigned by the database
        await tx.conn.execute(tables.agent_transitions.insert(), row)
        return updated, event

    async def _update_agent_row(self, conn: AsyncConnection, agent_id: str, values: dict[str, Any]) -> Agent:
        stmt = sa.update(tables.agents).where(tables.agents.c.id == agent_id).values(values).returning(*tables.agents.c)
        row = (await conn.execute(stmt)).first()
        if row is None:
            raise AgentNotFoundError(agent_id)
        return rows.AGENTS.from_row(row)

    async def update_agent(self, agent_id: str, changes: dict[str, Any]) -> Agent:
        values = {"updated_at": self._clock.now()} | agent_queries.checked_changes(changes)
        async with self._write() as tx:
            return await self._update_agent_row(tx.conn, agent_id, values)

    async def delete_agent(self, agent_id: str, *, actor: str) -> Event:
        async with self._write(events=True) as tx:
            agent = await self._get_agent(tx.conn, agent_id, for_update=True)
            for table in (tables.sessions, tables.snapshots, tables.agent_transitions):
                await tx.conn.execute(sa.delete(table).where(table.c.agent_id == agent_id))
            await tx.conn.execute(sa.delete(tables.agents).where(tables.agents.c.id == agent_id))
            payload = {"agentId": agent_id, "actor": actor, "state": agent.state.value}
            deleted = self._event("agent:deleted", payload, actor=actor, agent=agent, at=self._clock.now())
            (event,) = await tx.append([deleted])
        return event

    async def transitions(self, agent_id: str) -> list[TransitionRecord]:
        t = tables.agent_transitions
        async with self._read() as conn:
            found = rows.TRANSITIONS.from_rows(
                await conn.execute(sa.select(t).where(t.c.agent_id == agent_id).order_by(t.c.id))
            )
            if not found:
                await self._get_agent(conn, agent_id)  # an unknown agent is an error, a new one has none
        return found

    # ---------------------------------------------------------------------------------------------- events

    async def append_events(
        self, events: Sequence[Event], *, agent_changes: dict[str, dict[str, Any]] | None = None
    ) -> list[Event]:
        updates = {agent_id: agent_queries.checked_changes(c) for agent_id, c in (agent_changes or {}).items()}
        updates = {agent_id: values for agent_id, values in updates.items() if values}
        if not events and not updates:
            return []
        async with self._write(events=bool(events)) as tx:
            stored = await tx.append(events)
            now = self._clock.now()
            for agent_id, values in updates.items():
                # An agent deleted meanwhile has no row left to update; its events are still worth keeping.
                await tx.conn.execute(
                    sa.update(tables.agents).where(tables.agents.c.id == agent_id).values(values | {"updated_at": now})
                )
        return stored

    async def get_event(self, event_id: str) -> Event:
        async with self._read() as conn:
            row = (await conn.execute(sa.select(tables.events).where(tables.events.c.id == event_id))).first()
        if row is None:
            raise EventNotFoundError(event_id)
        return rows.event_from_row(row)

    async def query_events(self, query: EventQuery) -> list[Event]:
        async with self._read() as conn:
            return await query_events(conn, query)

    async def last_sequence(self) -> int:
        async with self._read() as conn:
            last = (await conn.execute(sa.select(sa.func.max(tables.events.c.sequence)))).scalar_one()
        return int(last or 0)

    # ---------------------------------------------------------------------------- snapshots, sessions, nodes

    async def add_snapshot(self, snapshot: Snapshot) -> Snapshot:
        snapshot = dataclasses.replace(snapshot, created_at=snapshot.created_at or self._clock.now())
        async with self._write() as tx:
            await self._get_agent(tx.conn, snapshot.agent_id)
            await tx.conn.execute(tables.snapshots.insert(), rows.SNAPSHOTS.to_row(snapshot))
        return snapshot

    async def get_snapshot(self, snapshot_id: str) -> Snapshot:
        t = tables.snapshots
        async with self._read() as conn:
            row = (await conn.execute(sa.select(t).where(t.c.id == snapshot_id))).first()
        if row is None:
            raise SnapshotNotFoundError(snapshot_id)
        return rows.SNAPSHOTS.from_row(row)

    async def list_snapshots(self, agent_id: str) -> list[Snapshot]:
        t = tables.snapshots
        stmt = sa.select(t).where(t.c.agent_id == agent_id).order_by(t.c.created_at, t.c.id)
        async with self._read() as conn:
            return rows.SNAPSHOTS.from_rows(await conn.execute(stmt))

    async def delete_snapshot(self, snapshot_id: str) -> None:
        t = tables.snapshots
        async with self._write() as tx:
            result = await tx.conn.execute(sa.delete(t).where(t.c.id == snapshot_id))
            if result.rowcount == 0:
                raise SnapshotNotFoundError(snapshot_id)

    async def create_session(self, session: Session) -> Session:
        now = self._clock.now()
        session = dataclasses.replace(session, created_at=session.created_at or now, updated_at=now)
        async with self._write() as tx:
            await self._get_agent(tx.conn, session.agent_id)
            await tx.conn.execute(tables.sessions.insert(), rows.SESSIONS.to_row(session))
        return session

    async def get_session(self, session_id: str) -> Session:
        t = tables.sessions
        async with self._read() as conn:
            row = (await conn.execute(sa.select(t).where(t.c.id == session_id))).first()
        if row is None:
            raise NotFoundError(f"session {session_id!r} not found", details={"sessionId": session_id})
        return rows.SESSIONS.from_row(row)

    async def update_session(self, session_id: str, changes: dict[str, Any]) -> Session:
        t = tables.sessions
        values = rows.SESSIONS.values({**changes, "updated_at": self._clock.now()})
        async with self._write() as tx:
            result = await tx.conn.execute(sa.update(t).where(t.c.id == session_id).values(values))
            if result.rowcount == 0:
                raise NotFoundError(f"session {session_id!r} not found", details={"sessionId": session_id})
        return await self.get_session(session_id)

    async def list_sessions(self, agent_id: str) -> list[Session]:
        t = tables.sessions
        stmt = sa.select(t).where(t.c.agent_id == agent_id).order_by(t.c.created_at, t.c.id)
        async with self._read() as conn:
            return rows.SESSIONS.from_rows(await conn.execute(stmt))

    async def upsert_node(self, node: Node) -> Node:
        values = rows.NODES.to_row(node)
        changed = {k: v for k, v in values.items() if k != "id"}
        async with self._write() as tx:
            stmt = insert_with_upsert(tx.conn, tables.nodes).values(values)
            await tx.conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=changed))
        return node

    async def list_nodes(self) -> list[Node]:
        t = tables.nodes
        async with self._read() as conn:
            return rows.NODES.from_rows(await conn.execute(sa.select(t).order_by(t.c.name, t.c.id)))


def open_store(url: str, *, sqlite_synchronous: SqliteSynchronous = "NORMAL", clock: Clock | None = None) -> SqlStore:
    """A store on ``url`` (``sqlite:///path`` or ``postgresql://…``; the async driver is chosen here).

    Nothing connects until first use; call ``migrate()`` before anything else.
    """
    with translate_errors():  # creating the SQLite file's directory can fail
        engine = create_engine(url, sqlite_synchronous=sqlite_synchronous)
    return SqlStore(engine, clock=clock)
