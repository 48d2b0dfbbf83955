"""The aiosqlite connections the store's engine uses: one trip to the connection's thread per statement, and no
statement left active by a cancelled task.

**One trip per statement.** aiosqlite runs each call in the connection's own thread, and SQLAlchemy's adapter makes
up to four calls per statement: open a cursor, execute, fetch the rows, close. Each is a hop to that thread and
back through the event loop, and on a busy loop each return waits its turn. Under a burst of agents the store's
one write lock was held about 97% of the time, mostly by transactions waiting on those hops (2,406 writes of
7-12 ms at p50 in the 200-step workflow benchmark). Here a statement is executed, its rows fetched and its cursor
closed in one call. A long result (more than ``CHUNK`` rows, e.g. a streamed export) keeps its cursor open and is
fetched a chunk per trip.

**Cancel safety.** A task cancelled while one of its statements was in flight made SQLAlchemy invalidate and
close the connection. With the statement still active in its cursor, CPython's ``sqlite3_close_v2`` kept the
connection a "zombie" in its write transaction, holding the database's write lock for good: every later write failed
with "database is locked" (``tests/conformance/test_cancelled_writes.py``). A statement's call now always leaves it
finished, since it runs to the end in the thread whatever happens to its caller. A long result's open cursor is
closed in the thread right after the call in flight when its caller is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import aiosqlite
from aiosqlite.context import contextmanager  # makes ``cursor()`` awaitable and an async context, as aiosqlite's
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import URL

T = TypeVar("T")

CHUNK = 500  # rows fetched in the statement's own trip; a longer result is read in further trips of this many

_Description = tuple[tuple[Any, ...], ...] | None


class _Cursor:
    """What SQLAlchemy's aiosqlite adapter uses of ``aiosqlite.Cursor``, one trip per statement."""

    arraysize = 1

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self._open: sqlite3.Cursor | None = None  # only while a long result has rows left in it
        self._rows: deque[Any] = deque()
        self.description: _Description = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    async def _call(self, fn: Callable[[], T]) -> T:
        try:
            return await self._conn._execute(fn)
        except asyncio.CancelledError:
            # ``fn`` still runs in the thread, and may leave a long result's cursor open: close it right behind
            # ``fn`` (the thread runs its calls in order), before SQLAlchemy can close the connection.
            with contextlib.suppress(asyncio.CancelledError, sqlite3.Error, ValueError):
                await self._conn._execute(self._close_open)
            raise

    def _close_open(self) -> None:  # in the connection's thread
        cursor, self._open = self._open, None
        if cursor is not None:
            cursor.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] | None = None) -> _Cursor:
        def run() -> tuple[_Description, int, int | None, list[Any]]:
            self._close_open()  # a previous long result not read to its end
            cursor = self._conn._conn.cursor()
            try:
                cursor.execute(sql, () if parameters is None else parameters)
                rows = cursor.fetchmany(CHUNK) if cursor.description else []
                answer = (cursor.description, cursor.rowcount, cursor.lastrowid, rows)
            except BaseException:
                cursor.close()
                raise
            if len(rows) == CHUNK:
                self._open = cursor
            else:
                cursor.close()
            return answer

        self._rows.clear()
        self.description, self.rowcount, self.lastrowid, rows = await self._call(run)
        self._rows.extend(rows)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any] | dict[str, Any]]) -> _Cursor:
        def run() -> tuple[int, int | None]:
            self._close_open()
            cursor = self._conn._conn.cursor()
            try:
                cursor.executemany(sql, parameters)
                return cursor.rowcount, cursor.lastrowid
            finally:
                cursor.close()

        self._rows.clear()
        self.description = None
        self.rowcount, self.lastrowid = await self._call(run)
        return self

    async def _more(self, *, rest: bool = False) -> bool:
        """Read the next chunk of a long result (``rest``: all that is left, in the same trip); False when it has no
        rows left."""
        if self._open is None:
            return False

        def run() -> tuple[list[Any], int, int | None]:
            cursor = self._open
            if cursor is None:
                return [], self.rowcount, self.lastrowid
            rows = cursor.fetchall() if rest else cursor.fetchmany(CHUNK)
            # A RETURNING statement's rowcount is known only once it has been read to its end.
            counts = cursor.rowcount, cursor.lastrowid
            if rest or len(rows) < CHUNK:
                self._close_open()
            return rows, *counts

        rows, self.rowcount, self.lastrowid = await self._call(run)
        self._rows.extend(rows)
        return bool(rows)

    async def fetchone(self) -> Any:
        if not self._rows:
            await self._more()
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        size = self.arraysize if size is None else size
        while len(self._rows) < size:  # a chunk per trip until enough rows are here, or none are left
            if not await self._more():
                break
        return [self._rows.popleft() for _ in range(min(size, len(self._rows)))]

    async def fetchall(self) -> list[Any]:
        await self._more(rest=True)
        rows = list(self._rows)
        self._rows.clear()
        return rows

    async def close(self) -> None:
        self._rows.clear()
        if self._open is not None:
            await self._call(self._close_open)

    def __aiter__(self) -> _Cursor:
        return self

    async def __anext__(self) -> Any:
        if not self._rows and not await self._more():
            raise StopAsyncIteration
        return self._rows.popleft()

    async def __aenter__(self) -> _Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _Connection(aiosqlite.Connection):
    @contextmanager
    async def cursor(self) -> _Cursor:  # type: ignore[override]  # the subset of aiosqlite.Cursor SQLAlchemy uses
        return _Cursor(self)  # no trip: the sqlite3 cursor is made in the statement's own


def connection_creator(url: URL) -> Callable[[], Awaitable[aiosqlite.Connection]]:
    """The ``async_creator`` for ``create_async_engine``: connects with the arguments SQLAlchemy would use."""
    args, kwargs = SQLiteDialect_aiosqlite().create_connect_args(url)
    database: str = args[0]
    options: dict[str, Any] = dict(kwargs)

    async def connect() -> aiosqlite.Connection:
        conn = _Connection(lambda: sqlite3.connect(database, **options), iter_chunk_size=64)
        conn._thread.daemon = True  # as SQLAlchemy does: a connection never closed must not hold the exit
        return await conn

    return connect
