"""The SQLite driver the store uses (``store/sqlite_driver``): one trip to the connection's thread per statement,
long results read a chunk per trip, and no statement left active by a cancelled reader (an active statement in a
connection SQLAlchemy then closes keeps the database locked; ``test_cancelled_writes`` covers writes)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import sqlalchemy as sa

from godel.core.models import Node
from godel.store import SqlStore, open_store
from godel.store.sqlite_driver import CHUNK

ROWS = CHUNK * 2 + 17  # three trips: two full chunks and a short one
ROUNDS = 12
NUMBERS = sa.text(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) SELECT i FROM n")


async def _store(sqlite_dir: Path) -> SqlStore:
    store = open_store(f"sqlite+aiosqlite:///{sqlite_dir / secrets.token_hex(6)}.db")
    await store.migrate()
    return store


async def test_a_long_result_arrives_whole_and_in_order(sqlite_dir: Path) -> None:
    store = await _store(sqlite_dir)
    try:
        async with store.engine.connect() as conn:
            assert [r.i for r in await conn.execute(NUMBERS)] == list(range(1, ROWS + 1))
            streamed = [r.i async for r in await conn.stream(NUMBERS)]
            assert streamed == list(range(1, ROWS + 1))
            partial = await conn.stream(NUMBERS)  # part read, then left: the next statement still runs
            assert [r.i for r in await partial.fetchmany(3)] == [1, 2, 3]
            assert (await conn.execute(sa.text("SELECT 41 + 1"))).scalar() == 42
    finally:
        await store.close()


async def test_rowcount_and_lastrowid_come_back_with_the_statement(sqlite_dir: Path) -> None:
    store = await _store(sqlite_dir)
    try:
        async with store.engine.begin() as conn:
            await conn.execute(sa.text("CREATE TEMP TABLE t (id INTEGER PRIMARY KEY, v INTEGER)"))
            many = await conn.execute(sa.text("INSERT INTO t (v) VALUES (:v)"), [{"v": v} for v in range(5)])
            assert many.rowcount == 5
            one = await conn.execute(sa.text("INSERT INTO t (v) VALUES (9)"))
            assert one.lastrowid == 6
            assert (await conn.execute(sa.text("UPDATE t SET v = v + 1 WHERE v < 3"))).rowcount == 3
            returned = await conn.execute(sa.text("UPDATE t SET v = 0 WHERE id > 4 RETURNING id"))
            assert sorted(r.id for r in returned) == [5, 6]
            # Past one chunk, a RETURNING statement's count is known only once read to its end.
            await conn.execute(sa.text("INSERT INTO t (v) " + NUMBERS.text))
            long = await conn.execute(sa.text("UPDATE t SET v = -v WHERE v > 10 RETURNING id"))
            assert len(long.all()) == ROWS - 10
            assert long.rowcount == ROWS - 10
    finally:
        await store.close()


async def test_a_reader_cancelled_mid_stream_leaves_the_database_writable(sqlite_dir: Path) -> None:
    store = await _store(sqlite_dir)
    node = Node(id="node-1", name="node-1")
    await store.upsert_node(node)
    try:
        for turns in range(ROUNDS):
            started = asyncio.Event()

            async def reader(started: asyncio.Event = started) -> None:
                async with store._write() as tx:  # a write transaction: a statement left active keeps its lock
                    result = await tx.conn.stream(NUMBERS)
                    while await result.fetchmany(CHUNK):  # a trip to the thread each: the cancel lands in one
                        started.set()

            task = asyncio.create_task(reader())
            await started.wait()
            for _ in range(turns):  # cancelled at a different point of the stream each round
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            node.current_agents = turns
            async with asyncio.timeout(4):  # below SQLite's busy timeout: a lock left held fails here
                await store.upsert_node(node)
        assert [n.current_agents for n in await store.list_nodes()] == [ROUNDS - 1]
    finally:
        await store.close()
