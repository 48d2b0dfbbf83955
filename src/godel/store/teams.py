"""The teams table: typed reads, newest-first keyset listing, and changes committed with their ``team:*`` event.

A team changes in one way: ``change_team`` reads the row inside a write transaction (``FOR UPDATE`` on
PostgreSQL; SQLite's single writer already holds the database), hands it to the caller's ``decide``, which
validates the move and returns a ``TeamChange`` (or raises to refuse it, writing nothing), then writes the row
and appends the change's event, if any, in the same transaction. ``metadata`` changes are merged key by key
into the row's metadata as read in that transaction, so two writers (the orchestrator recording progress, a
user scaling the team) never undo each other's keys.

Listing is newest first; the cursor is the last row's ``(created_at, id)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from godel.core.events import Event, EventMetadata
from godel.core.models import Team
from godel.core.ports import Page
from godel.core.states import TeamStatus
from godel.errors import TeamNotFoundError
from godel.store import rows, tables
from godel.store.agents import decode_cursor, encode_cursor
from godel.store.host import StoreHost, source_of

_NOT_CHANGEABLE = frozenset({"id", "created_at"})


@dataclass(frozen=True)
class TeamChange:
    """What one change writes: column changes, metadata keys merged in, and the event announcing it (if any)."""

    changes: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    event: str | None = None  # "team:started", "team:scaled" …
    payload: dict[str, Any] = field(default_factory=dict)


DecideTeam = Callable[[Team], TeamChange]


def team_event(team: Team, type_: str, payload: dict[str, Any], *, actor: str, at: datetime) -> Event:
    source = source_of(actor, "teams")
    return Event(
        type=type_,
        payload={"teamId": team.id, **payload, "actor": actor},
        source=source,
        metadata=EventMetadata(team_id=team.id, user_id=source.instance if source.component == "user" else None),
        timestamp=at,
    )


class TeamStore:
    """Mixed into ``SqlStore`` (which provides ``_write``, ``_read`` and ``_clock``)."""

    async def add_team(self: StoreHost, team: Team, *, actor: str) -> tuple[Team, Event]:
        now = self._clock.now()
        team = dataclasses.replace(team, created_at=team.created_at or now, updated_at=now)
        payload = {
            "name": team.name,
            "strategy": team.execution_strategy,
            "status": team.status.value,
            "size": team.config.get("size"),
        }
        async with self._write(events=True) as tx:
            await tx.conn.execute(tables.teams.insert(), rows.TEAMS.to_row(team))
            (event,) = await tx.append([team_event(team, "team:created", payload, actor=actor, at=now)])
        return team, event

    async def read_team(self: StoreHost, team_id: str) -> Team:
        async with self._read() as conn:
            return await _get(conn, team_id)

    async def list_teams(
        self: StoreHost, *, status: Sequence[TeamStatus] = (), limit: int = 50, cursor: str | None = None
    ) -> Page[Team]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        t = tables.teams
        stmt = sa.select(t)
        if status:
            stmt = stmt.where(t.c.status.in_(sorted({s.value for s in status})))
        if cursor:
            at, last_id = decode_cursor(cursor)
            stmt = stmt.where(sa.or_(t.c.created_at < at, sa.and_(t.c.created_at == at, t.c.id < last_id)))
        stmt = stmt.order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit + 1)
        async with self._read() as conn:
            found = rows.TEAMS.from_rows(await conn.execute(stmt))
        has_more = len(found) > limit
        items = found[:limit]
        last = items[-1] if has_more else None
        next_cursor = encode_cursor(last.created_at, last.id) if last and last.created_at else None
        return Page(items=items, cursor=next_cursor, has_more=has_more)

    async def change_team(
        self: StoreHost, team_id: str, decide: DecideTeam, *, actor: str
    ) -> tuple[Team, Event | None]:
        """Read the team locked, let ``decide`` validate the move and say what changes, write it with its event.
        ``decide`` raising leaves the row and the log as they were."""
        async with self._write(events=True) as tx:
            current = await _get(tx.conn, team_id, for_update=True)
            change = decide(current)
            bad = _NOT_CHANGEABLE & change.changes.keys()
            if bad:
                raise ValueError(f"cannot change {sorted(bad)} of a team")
            now = self._clock.now()
            values = dict(change.changes)
            if change.metadata:
                values["metadata"] = {**current.metadata, **change.metadata}
            values = rows.TEAMS.values(values) | {"updated_at": now}
            t = tables.teams
            row = (await tx.conn.execute(sa.update(t).where(t.c.id == team_id).values(values).returning(*t.c))).first()
            assert row is not None  # the row is locked (or the database is) since it was read
            updated = rows.TEAMS.from_row(row)
            event = None
            if change.event:
                (event,) = await tx.append([team_event(updated, change.event, change.payload, actor=actor, at=now)])
        return updated, event

    async def remove_team(self: StoreHost, team_id: str, *, allowed: Callable[[Team], None], actor: str) -> Event:
        """Delete the team if ``allowed`` (which raises to refuse) accepts it; its agents are kept, with no team
        (the foreign key's ``ON DELETE SET NULL``). Appends ``team:deleted``."""
        async with self._write(events=True) as tx:
            current = await _get(tx.conn, team_id, for_update=True)
            allowed(current)
            await tx.conn.execute(sa.delete(tables.teams).where(tables.teams.c.id == team_id))
            payload = {"name": current.name, "status": current.status.value}
            (event,) = await tx.append(
                [team_event(current, "team:deleted", payload, actor=actor, at=self._clock.now())]
            )
        return event

    async def team_usage(self: StoreHost, team_id: str) -> dict[str, Any]:
        """Requests, tokens and cost the gateway metered for the team (every key that carried its id)."""
        t = tables.usage_records
        stmt = sa.select(
            sa.func.count().label("requests"),
            *(sa.func.coalesce(sa.func.sum(t.c[c]), 0).label(c) for c in ("input_tokens", "output_tokens",
                                                                          "cached_tokens")),
            sa.func.sum(t.c.cost_usd).label("cost_usd"),
        ).where(t.c.team_id == team_id)  # fmt: skip
        async with self._read() as conn:
            row = (await conn.execute(stmt)).one()
        return dict(row._mapping)


async def _get(conn: AsyncConnection, team_id: str, *, for_update: bool = False) -> Team:
    stmt = sa.select(tables.teams).where(tables.teams.c.id == team_id)
    if for_update and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()  # SQLite's writer already holds the database lock
    row = (await conn.execute(stmt)).first()
    if row is None:
        raise TeamNotFoundError(team_id)
    return rows.TEAMS.from_row(row)
