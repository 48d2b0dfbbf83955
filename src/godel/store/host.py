"""What the store's mixins (tasks, teams, workflows, gateway) are given by ``SqlStore``: its transactions and its
clock, typed as Protocols so each mixin module stands alone; and how an actor names an event's source."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from godel.core.events import Event, EventSource
from godel.core.ports import Clock


class WriteTx(Protocol):
    """An open write transaction (``store.database.Tx``): events appended are announced after commit."""

    conn: AsyncConnection

    async def append(self, batch: Sequence[Event]) -> list[Event]: ...


class StoreHost(Protocol):
    _clock: Clock

    def _write(self, *, events: bool = False) -> AbstractAsyncContextManager[WriteTx]: ...
    def _read(self) -> AbstractAsyncContextManager[AsyncConnection]: ...


def source_of(actor: str, default: str) -> EventSource:
    """``"user:alice"`` → component ``user``, instance ``alice``; a bare name is the component; empty: ``default``."""
    component, _, instance = actor.partition(":")
    return EventSource(component=component or default, instance=instance or None)
