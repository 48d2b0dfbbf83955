"""The agent queries: listing with keyset pagination, admission order, counts, and change validation.

Listing is newest first on ``(spawned_at, id)``, both descending, and pages with a keyset cursor (the last
row's pair) rather than an offset, so a page costs the same at row 100 000 as at row 0 and rows inserted
meanwhile never shift a page. The cursor condition is written as ``spawned_at <= t AND (spawned_at < t OR id
< i)``: its first half is a plain range on the leading index column, which both SQLite and PostgreSQL turn
into an index range scan.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from godel.core.ports import AgentQuery
from godel.core.states import AgentState, states_with_status
from godel.errors import FieldError, ValidationError
from godel.store import rows
from godel.store.tables import agents

# Fields only the store itself sets: the state moves through ``transition_agent`` and ids never change.
_NOT_CHANGEABLE = {"state": "change state with transition_agent", "id": "an agent's id never changes"}


def checked_changes(changes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Column values for a dict of ``Agent`` field changes; ``ValueError`` for a field that may not change."""
    if not changes:
        return {}
    for name, why in _NOT_CHANGEABLE.items():
        if name in changes:
            raise ValueError(f"cannot change {name!r}: {why}")
    return rows.AGENTS.values(changes)


def encode_cursor(spawned_at: datetime, agent_id: str) -> str:
    raw = json.dumps([spawned_at.isoformat(), agent_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, agent_id = json.loads(raw)
        at = datetime.fromisoformat(stamp)
        if at.tzinfo is None or not isinstance(agent_id, str):
            raise ValueError("malformed")
        return at, agent_id
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValidationError("invalid cursor", [FieldError("cursor", "not a cursor from a previous page")]) from exc


def _wanted_states(query: AgentQuery) -> set[AgentState] | None:
    """The states a query selects (``status`` and ``states`` both narrow), or None for all."""
    wanted: set[AgentState] | None = None
    if query.status:
        wanted = {s for status in query.status for s in states_with_status(status)}
    if query.states:
        given = set(query.states)
        wanted = given if wanted is None else wanted & given
    return wanted


def list_statement(query: AgentQuery) -> tuple[sa.Select[Any], dict[str, Any]]:
    """The page query and its parameters. The statement depends only on the query's *shape* (which filters,
    which states) and is built once per shape: building the per-state UNION ALL anew cost ~2 ms a call in
    SQLAlchemy, more than running it, and its garbage set off full collections."""
    if query.limit < 1:
        raise ValueError("limit must be at least 1")
    wanted = _wanted_states(query)
    params: dict[str, Any] = {"limit": query.limit + 1}  # one more than asked tells whether there is more
    for name in ("team_id", "label", "model", "node_id"):
        value = getattr(query, name)
        if value is not None:
            params[name] = value
    if query.owners is not None:
        params["owners"] = list(query.owners)
    if query.cursor:
        params["at"], params["last_id"] = decode_cursor(query.cursor)
    states = None if wanted is None else tuple(sorted(s.value for s in wanted))
    return _page_statement(states, frozenset(params)), params


@lru_cache(maxsize=256)
def _page_statement(states: tuple[str, ...] | None, given: frozenset[str]) -> sa.Select[Any]:
    c = agents.c
    conditions: list[sa.ColumnElement[bool]] = []  # everything but the state
    for name in ("team_id", "label", "model", "node_id"):
        if name in given:
            conditions.append(c[name] == sa.bindparam(name))
    if "owners" in given:  # a caller who may see only its own (or its team's) agents
        conditions.append(c.owner.in_(sa.bindparam("owners", expanding=True)))
    if "at" in given:
        at = sa.bindparam("at", type_=c.spawned_at.type)
        conditions.append(c.spawned_at <= at)
        conditions.append(sa.or_(c.spawned_at < at, c.id < sa.bindparam("last_id")))
    limit = sa.bindparam("limit", type_=sa.Integer)
    if states is None or len(states) < 2:
        if states is not None:
            # An empty set (say status=running with states=[pending]) renders as an always-false IN.
            conditions.append(c.lifecycle_state.in_(states))
        return sa.select(agents).where(*conditions).order_by(c.spawned_at.desc(), c.id.desc()).limit(limit)
    # Several states (status=running is executing, waiting and completing): one index range per state, each
    # cut at the page size, then merged. With ``IN (…)`` SQLite walks the spawned_at index instead and, when
    # few rows match (a handful running among 100k finished), reads the whole table for one page.
    branches = [
        sa.select(agents)
        .where(c.lifecycle_state == state, *conditions)
        .order_by(c.spawned_at.desc(), c.id.desc())
        .limit(limit)
        .subquery()
        for state in states
    ]
    merged = sa.union_all(*[sa.select(b) for b in branches]).subquery()
    return sa.select(merged).order_by(merged.c.spawned_at.desc(), merged.c.id.desc()).limit(limit)


def admission_statement(now: datetime, limit: int) -> sa.Select[Any]:
    c = agents.c
    return (
        sa.select(agents)
        .where(
            c.lifecycle_state == AgentState.PENDING.value,
            sa.or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now),
        )
        .order_by(c.priority.desc(), c.spawned_at.asc(), c.id.asc())
        .limit(limit)
    )


def count_statement(states: Sequence[AgentState], node_id: str | None) -> sa.Select[Any]:
    c = agents.c
    stmt = sa.select(sa.func.count()).select_from(agents).where(c.lifecycle_state.in_([s.value for s in states]))
    if node_id is not None:
        stmt = stmt.where(c.node_id == node_id)
    return stmt
