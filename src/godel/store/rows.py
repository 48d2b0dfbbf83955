"""Row ↔ dataclass mapping, in one place.

A ``Mapper`` is derived from a dataclass's type hints once, at import: field names map to column names
(with explicit renames such as ``Agent.state`` → ``lifecycle_state``), enums are written as their values and
read back as members. It checks at import that the dataclass and the table have the same fields, so a field
added to ``core.models`` without a column (or the reverse) fails loudly instead of being silently dropped.
Timestamps need nothing here: ``tables.UTCDateTime`` already stores UTC and reads back aware values.

Events are mapped by hand: they are nested (source, metadata) and on the hot path.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from enum import Enum
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from godel.core.events import Event, EventMetadata, EventSource
from godel.core.models import Agent, Budget, Node, Session, Snapshot, Team, TransitionRecord, UsageRecord, VirtualKey
from godel.store import tables

T = TypeVar("T")


def _enum_of(hint: Any) -> type[Enum] | None:
    candidates = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for c in candidates:
        if isinstance(c, type) and issubclass(c, Enum):
            return c
    return None


class Mapper(Generic[T]):
    def __init__(self, cls: type[T], table: sa.Table, renames: Mapping[str, str] | None = None) -> None:
        self.cls = cls
        self.table = table
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        renames = dict(renames or {})
        self.column_of = {name: renames.get(name, name) for name in names}
        self.field_of = {col: name for name, col in self.column_of.items()}
        self.enums = {name: e for name in names if (e := _enum_of(hints[name])) is not None}
        missing = set(self.column_of.values()) ^ set(table.c.keys())
        if missing:
            raise RuntimeError(f"{cls.__name__} and table {table.name} disagree on columns: {sorted(missing)}")

    def to_row(self, obj: T) -> dict[str, Any]:
        return self.values({name: getattr(obj, name) for name in self.column_of})

    def values(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Column values for a dict of field changes; unknown fields are a programming error."""
        out: dict[str, Any] = {}
        for name, value in changes.items():
            column = self.column_of.get(name)
            if column is None:
                raise ValueError(f"{self.cls.__name__} has no field {name!r}")
            out[column] = value.value if isinstance(value, Enum) else value
        return out

    def from_row(self, row: sa.Row[Any] | Mapping[str, Any]) -> T:
        data = row._mapping if isinstance(row, sa.Row) else row
        kwargs: dict[str, Any] = {}
        for column, value in data.items():
            name = self.field_of[column]
            enum = self.enums.get(name)
            kwargs[name] = enum(value) if enum is not None and value is not None else value
        return self.cls(**kwargs)

    def from_rows(self, result: sa.Result[Any] | sa.CursorResult[Any]) -> list[T]:
        """Map a whole result with one plan (field name and enum per column position), not per row: listing
        50 agents is dominated by this mapping otherwise."""
        keys = list(result.keys())
        names = [self.field_of[k] for k in keys]
        enums = [(i, e) for i, name in enumerate(names) if (e := self.enums.get(name)) is not None]
        out: list[T] = []
        for row in result:
            values = list(row)
            for i, enum in enums:
                if values[i] is not None:
                    values[i] = enum(values[i])
            out.append(self.cls(**dict(zip(names, values, strict=True))))
        return out


AGENTS = Mapper(Agent, tables.agents, renames={"state": "lifecycle_state"})
TEAMS = Mapper(Team, tables.teams)
TRANSITIONS = Mapper(TransitionRecord, tables.agent_transitions)
SNAPSHOTS = Mapper(Snapshot, tables.snapshots)
SESSIONS = Mapper(Session, tables.sessions)
NODES = Mapper(Node, tables.nodes)
VIRTUAL_KEYS = Mapper(VirtualKey, tables.virtual_keys)
USAGE = Mapper(UsageRecord, tables.usage_records)
BUDGETS = Mapper(Budget, tables.budgets)


# The events columns ``event_values`` fills, in its order (the sequence is the database's).
EVENT_COLUMNS = (
    "id",
    "event_type",
    "timestamp",
    "payload",
    "source_component",
    "source_instance",
    "source_version",
    "correlation_id",
    "causation_id",
    "trace_id",
    "agent_id",
    "team_id",
    "workflow_id",
    "user_id",
    "partition_key",
)


def event_values(e: Event) -> tuple[Any, ...]:
    src, md = e.source, e.metadata
    return (
        e.id,
        e.type,
        e.timestamp,
        e.payload,
        src.component,
        src.instance,
        src.version,
        md.correlation_id,
        md.causation_id,
        md.trace_id,
        md.agent_id,
        md.team_id,
        md.workflow_id,
        md.user_id,
        e.partition,
    )


def event_to_row(e: Event) -> dict[str, Any]:
    return dict(zip(EVENT_COLUMNS, event_values(e), strict=True))


def event_from_row(row: sa.Row[Any]) -> Event:
    r = row._mapping
    return Event(
        type=r["event_type"],
        payload=r["payload"],
        source=EventSource(r["source_component"], r["source_instance"], r["source_version"]),
        metadata=EventMetadata(
            correlation_id=r["correlation_id"],
            causation_id=r["causation_id"],
            user_id=r["user_id"],
            agent_id=r["agent_id"],
            team_id=r["team_id"],
            workflow_id=r["workflow_id"],
            trace_id=r["trace_id"],
        ),
        id=r["id"],
        timestamp=r["timestamp"],
        sequence=r["sequence"],
        partition=r["partition_key"],
    )
