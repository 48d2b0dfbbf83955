"""The store's transactions, and the rules every write obeys.

1. One writer. On SQLite every write transaction holds an in-process lock (and begins IMMEDIATE); on
   PostgreSQL the transactions that append events hold it and the database's advisory lock
   (``engine.lock_events``), taken first, before any row lock, so the two kinds of lock never wait on each
   other. Reads never take the lock and run on other pooled connections. The lock is handed over in order,
   except that a write marked urgent (``core.urgency``: one that records an end) goes before ordinary ones.
2. Events are announced to the commit listener (the event bus) only after their transaction commits, never
   for one that rolled back, and in commit order: a write takes a number as it commits, under the write lock,
   and announces when every earlier number has (``Announcements``). It waits for that turn after letting the
   write lock go, so the next writer can commit meanwhile, and a listener that writes is never left waiting on
   a writer that waits on it.
3. A listener that fails is logged, never allowed to fail a write that has already committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from godel.core.events import Event
from godel.core.ports import CommitListener
from godel.core.urgency import is_urgent
from godel.store.engine import WRITE_OPTION, is_sqlite, lock_events, translate_errors
from godel.store.events import insert_events

logger = logging.getLogger(__name__)

CLOSE_ANNOUNCING_SECONDS = 5.0  # how long ``close`` waits for announcements still going

# Set while a commit listener runs. A write made from inside a listener must not wait for its turn to announce:
# the turn of the announcement that runs the listener comes first. It announces straight away instead (still
# after the outer events, and after commit).
_in_listener: ContextVar[bool] = ContextVar("godel_store_in_listener", default=False)


class WriteTurns:
    """The one-writer lock: handed over first come, first served, urgent writes before ordinary ones."""

    def __init__(self) -> None:
        self._held = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._ordinary: deque[asyncio.Future[None]] = deque()

    async def acquire(self, *, urgent: bool = False) -> None:
        if not self._held and not self._urgent and not self._ordinary:
            self._held = True
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._urgent if urgent else self._ordinary
        queue.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed the lock as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    queue.remove(turn)
            raise

    @property
    def waiting(self) -> tuple[int, int]:
        """How many urgent and ordinary writes wait for the lock (a cancelled one may count until it wakes)."""
        return len(self._urgent), len(self._ordinary)

    def release(self) -> None:
        if not self._held:
            raise RuntimeError("the store's write lock was released while not held")
        for queue in (self._urgent, self._ordinary):
            while queue:
                turn = queue.popleft()
                if not turn.done():  # a waiter cancelled meanwhile is skipped
                    turn.set_result(None)  # the lock passes to it: still held
                    return
        self._held = False


class Announcements:
    """Turns to announce committed events in commit order: ``number`` under the write lock, ``turn`` after it."""

    def __init__(self) -> None:
        self._issued = 0
        self._next = 1
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._abandoned: set[int] = set()  # cancelled before their turn: skipped when it comes

    def number(self) -> int:
        self._issued += 1
        return self._issued

    async def turn(self, number: int) -> None:
        if number == self._next:
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[number] = turn
        try:
            await turn
        except asyncio.CancelledError:
            self._waiting.pop(number, None)
            # Decided by the count, not by the future: the turn may have come after the future was cancelled
            # and before this runs, and then nobody else would ever move the count on.
            if self._next == number:
                self.done(number)
            else:
                self._abandoned.add(number)
            raise

    def done(self, number: int) -> None:
        if number != self._next:
            raise RuntimeError(f"announcement {number} ended out of turn (next is {self._next})")
        self._next += 1
        while self._next in self._abandoned:
            self._abandoned.discard(self._next)
            self._next += 1
        turn = self._waiting.pop(self._next, None)
        if turn is not None and not turn.done():
            turn.set_result(None)


@dataclass
class Tx:
    """An open write transaction; events appended through it are announced after it commits."""

    conn: AsyncConnection
    events: list[Event] = field(default_factory=list)

    async def append(self, batch: Sequence[Event]) -> list[Event]:
        stored = await insert_events(self.conn, batch)
        self.events.extend(stored)
        return stored


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sqlite = is_sqlite(engine)
        self.listener: CommitListener | None = None
        self._writer = engine.execution_options(**{WRITE_OPTION: True})
        self._write_lock = WriteTurns()
        self._announcements = Announcements()
        self._announcing: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        with translate_errors():
            async with self.engine.connect() as conn:
                yield conn

    @asynccontextmanager
    async def write(self, *, events: bool = False) -> AsyncIterator[Tx]:
        """A write transaction; ``events=True`` when it may append events (takes the events lock)."""
        serialized = self.sqlite or events
        dispatch: list[Event] = []
        number: int | None = None  # None: announced at once (a listener's own write), or nothing to announce
        if serialized:
            await self._write_lock.acquire(urgent=is_urgent())
        try:
            with translate_errors():
                async with self._writer.begin() as conn:
                    if events:
                        await lock_events(conn)
                    tx = Tx(conn)
                    yield tx
            if tx.events and self.listener is not None:
                dispatch = tx.events
                if not _in_listener.get():
                    number = self._announcements.number()  # under the write lock: the commit order
        finally:
            if serialized:
                self._write_lock.release()
        if not dispatch:
            return
        if number is None:
            await self._notify(dispatch)  # a listener's own write: heard inside the announcement that made it
        else:
            # In a task of its own, shielded: the events are committed, so they are announced in their turn even
            # if this write's caller is cancelled now (a live subscriber, the bus, would never hear them again).
            task = asyncio.get_running_loop().create_task(self._announce(number, dispatch), name="store-announce")
            self._announcing.add(task)
            task.add_done_callback(self._announcing.discard)
            await asyncio.shield(task)

    async def _announce(self, number: int, events: list[Event]) -> None:
        await self._announcements.turn(number)  # not cancelled but by ``close``, which gives up on the listener
        try:
            await self._notify(events)
        finally:
            self._announcements.done(number)

    async def _notify(self, events: list[Event]) -> None:
        listener = self.listener
        if listener is None:
            return
        token = _in_listener.set(True)
        try:
            await listener(events)
        except Exception:
            logger.exception("commit listener failed on %d committed event(s)", len(events))
        finally:
            _in_listener.reset(token)

    async def close(self) -> None:
        # Announcements of writes whose callers were cancelled may still be going: let them end, briefly.
        if self._announcing:
            _, late = await asyncio.wait(list(self._announcing), timeout=CLOSE_ANNOUNCING_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self.engine.dispose()
