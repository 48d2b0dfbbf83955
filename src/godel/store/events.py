"""The event log: batched appends and filtered reads.

Appends are one ``executemany`` per batch, with rows built in one pass and each payload serialized once
(by the JSON column type). Sequence numbers come from the database: on SQLite the batch holds the write
lock and AUTOINCREMENT hands out ``max + 1`` per row, so the batch's numbers are the contiguous range ending
at the new maximum, which saves asking for them row by row; PostgreSQL returns them with ``RETURNING`` (its
multi-row ``insertmanyvalues`` path).

Reads narrow event types in SQL (exact types with ``IN``, wildcard patterns with a ``LIKE`` on their literal
prefix), then apply the exact pattern language in Python, because SQL cannot express ``*`` as "one segment"
and SQLite's ``LIKE`` ignores case. When Python filters rows out, reading continues from the last sequence
seen until the limit is met or the log is exhausted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from godel.core.events import Event, matches_any, sql_like_prefixes
from godel.core.ports import EventQuery
from godel.store.engine import is_sqlite
from godel.store.rows import EVENT_COLUMNS, event_from_row, event_to_row, event_values
from godel.store.tables import events

_RETURNING = sqlite3.sqlite_version_info >= (3, 35)  # SQLite's INSERT ... RETURNING

# Rows read per round trip when Python may discard some of them.
_FILTERED_BATCH = 500


async def insert_events(conn: AsyncConnection, batch: Sequence[Event]) -> list[Event]:
    """Insert in the caller's transaction, which must hold the events lock (``engine.lock_events``)."""
    if not batch:
        return []
    if is_sqlite(conn):
        sql, to_params = _sqlite_insert(conn.dialect)
        if len(batch) == 1 and _RETURNING:  # a transition's one event: its number in the same round trip
            row = (await conn.exec_driver_sql(sql + " RETURNING sequence", to_params(batch[0]))).first()
            assert row is not None
            return [_with_sequence(batch[0], int(row[0]))]
        await conn.exec_driver_sql(sql, [to_params(e) for e in batch])
        last = (await conn.execute(sa.select(sa.func.max(events.c.sequence)))).scalar_one()
        sequences: Sequence[int] = range(last - len(batch) + 1, last + 1)
    else:
        stmt = events.insert().returning(events.c.sequence, sort_by_parameter_order=True)
        sequences = (await conn.execute(stmt, [event_to_row(e) for e in batch])).scalars().all()
    return [_with_sequence(e, s) for e, s in zip(batch, sequences, strict=True)]


@lru_cache(maxsize=4)
def _sqlite_insert(dialect: sa.Dialect) -> tuple[str, Callable[[Event], tuple[Any, ...]]]:
    """The INSERT as driver SQL plus a function from an event to its driver parameters (SQLite).

    Going around SQLAlchemy's per-row parameter assembly removes about half the Python cost of an append.
    The values still go through the columns' own bind processors (UTC timestamps, the engine's JSON
    serializer), so the stored form is exactly what ``events.insert()`` stores.
    """
    assert EVENT_COLUMNS[2:4] == ("timestamp", "payload")
    placeholders = ", ".join("?" for _ in EVENT_COLUMNS)
    sql = f"INSERT INTO {events.name} ({', '.join(EVENT_COLUMNS)}) VALUES ({placeholders})"
    # dialect_impl: the processors SQLAlchemy itself uses on this dialect (SQLite's DATETIME text format).
    stamp = events.c.timestamp.type.dialect_impl(dialect).bind_processor(dialect)
    payload = events.c.payload.type.dialect_impl(dialect).bind_processor(dialect)
    assert stamp is not None and payload is not None

    def params(e: Event) -> tuple[Any, ...]:
        v = event_values(e)
        return (v[0], v[1], stamp(v[2]), payload(v[3]), *v[4:])

    return sql, params


def _with_sequence(e: Event, sequence: int) -> Event:
    # A frozen dataclass's __init__ (one object.__setattr__ per field) was a third of an append's CPU time;
    # copying the instance dict is the same object, built several times faster.
    copy = object.__new__(Event)
    copy.__dict__.update(e.__dict__)
    copy.__dict__["sequence"] = sequence
    return copy


def _type_condition(patterns: Sequence[str]) -> sa.ColumnElement[bool] | None:
    """A SQL superset of the types the patterns match, or None when they match everything."""
    prefixes = sql_like_prefixes(patterns)
    if prefixes is None:
        return None
    exact = [p for p in patterns if "*" not in p]
    wildcard = [prefix for p, prefix in zip(patterns, prefixes, strict=True) if "*" in p]
    if any(prefix == "" for prefix in wildcard):  # e.g. "*:start": any type may match
        return None
    conditions: list[sa.ColumnElement[bool]] = [events.c.event_type.startswith(p, autoescape=True) for p in wildcard]
    if exact:
        conditions.append(events.c.event_type.in_(exact))
    return sa.or_(*conditions)


async def query_events(conn: AsyncConnection, query: EventQuery) -> list[Event]:
    if query.limit < 1:
        return []
    c = events.c
    f = query.filter
    conditions: list[sa.ColumnElement[bool]] = []
    for column, value in ((c.agent_id, f.agent_id), (c.team_id, f.team_id), (c.workflow_id, f.workflow_id)):
        if value is not None:
            conditions.append(column == value)
    if query.since is not None:
        conditions.append(c.sequence > query.since)
    if query.until is not None:
        conditions.append(c.sequence < query.until)
    if query.after is not None:
        conditions.append(c.timestamp > query.after)
    if query.before is not None:
        conditions.append(c.timestamp < query.before)
    type_condition = _type_condition(f.patterns) if f.patterns else None
    if type_condition is not None:
        conditions.append(type_condition)
    # Python discards rows only for wildcard patterns (a lone "*" keeps everything): read bigger batches then.
    filtering = any("*" in p for p in f.patterns) and "*" not in f.patterns
    batch = max(query.limit, _FILTERED_BATCH) if filtering else query.limit
    order = c.sequence.desc() if query.descending else c.sequence.asc()

    found: list[Event] = []
    last: int | None = None
    while True:
        stmt = sa.select(events).where(*conditions).order_by(order).limit(batch)
        if last is not None:
            stmt = stmt.where(c.sequence < last if query.descending else c.sequence > last)
        rows: Sequence[Any] = (await conn.execute(stmt)).all()
        for row in rows:
            event = event_from_row(row)
            if matches_any(f.patterns, event.type):
                found.append(event)
                if len(found) == query.limit:
                    return found
        if len(rows) < batch:
            return found
        last = rows[-1].sequence
