"""aiosqlite connections that a cancelled task cannot leave holding SQLite's write lock.

Why: a task cancelled while one of its statements is in flight (a timer cancelled at shutdown, a loop stopped
mid-write) makes SQLAlchemy invalidate and close the connection. The statement, though, is still active in its
sqlite3 cursor (executed, its rows not yet fetched), and the aiosqlite cursor that holds it stays referenced. CPython
closes a connection with ``sqlite3_close_v2``, which leaves it a "zombie" until every statement is finalized, and a
zombie in a write transaction keeps the database's write lock for good: every later write failed with "database is
locked" (reproduced in ``tests/conformance/test_cancelled_writes.py``).

So a cursor whose caller was cancelled is closed (its statement reset) in the connection's thread right after the
call that was in flight, before anything else runs there. Closing the connection then rolls the transaction back and
releases the lock at once. Nothing is added to a call that is not cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiosqlite
from aiosqlite.context import contextmanager  # makes ``cursor()`` awaitable and an async context, as aiosqlite's
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import URL

T = TypeVar("T")


class _Cursor(aiosqlite.Cursor):
    async def _execute(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await self._conn._execute(fn, *args, **kwargs)
        except asyncio.CancelledError:
            # ``fn`` still runs in the connection's thread. The close is queued behind it before anything else can
            # be (the thread runs its calls in order, and ``_execute`` queues before it first waits), so whatever
            # SQLAlchemy does next on this connection finds the statement reset, even if this wait is cancelled too.
            with contextlib.suppress(asyncio.CancelledError, sqlite3.Error, ValueError):
                await self._conn._execute(self._cursor.close)
            raise


class _Connection(aiosqlite.Connection):
    @contextmanager
    async def cursor(self) -> aiosqlite.Cursor:
        return _Cursor(self, await self._execute(self._conn.cursor))


def cancel_safe_creator(url: URL) -> Callable[[], Awaitable[aiosqlite.Connection]]:
    """The ``async_creator`` for ``create_async_engine``: connects with the arguments SQLAlchemy would use."""
    args, kwargs = SQLiteDialect_aiosqlite().create_connect_args(url)
    database: str = args[0]
    options: dict[str, Any] = dict(kwargs)

    async def connect() -> aiosqlite.Connection:
        conn = _Connection(lambda: sqlite3.connect(database, **options), iter_chunk_size=64)
        conn._thread.daemon = True  # as SQLAlchemy does: a connection never closed must not hold the exit
        return await conn

    return connect
