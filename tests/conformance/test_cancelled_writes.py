"""A task cancelled in the middle of a write (a timer cancelled at shutdown, a loop stopped mid-write) must leave
the database writable. On SQLite it did not: the connection was closed with a statement still active, stayed a
zombie in its write transaction, and every later write failed with "database is locked" (``store/sqlite_driver``).

The writer is cancelled after 0, 1, 2, … turns of the event loop, so the cancellation lands on every await of the
write path in turn (taking the lock, BEGIN, each statement, fetching its rows, COMMIT), and after each a fresh
write must commit, and the store must hold exactly what was committed."""

from __future__ import annotations

import asyncio

from godel.core.events import make_event
from godel.core.models import Node
from godel.core.ports import EventQuery
from godel.store import SqlStore

ROUNDS = 120


async def test_a_write_cancelled_at_any_point_leaves_the_database_writable(store: SqlStore) -> None:
    node = Node(id="node-1", name="node-1")
    await store.upsert_node(node)
    acknowledged = 0

    async def writer() -> None:
        nonlocal acknowledged
        while True:
            await store.append_events([make_event("agent:cleanup", {"n": acknowledged}, component="test")])
            acknowledged += 1

    for turns in range(ROUNDS):
        task = asyncio.create_task(writer())
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        node.current_agents = turns
        async with asyncio.timeout(4):  # below SQLite's busy timeout: a held lock fails here, not after it
            await store.upsert_node(node)
    stored = await store.list_nodes()
    assert [n.current_agents for n in stored] == [ROUNDS - 1]
    page = await store.query_events(EventQuery(limit=100_000))
    # Every write acknowledged is stored; a cancelled one is stored whole or not at all (at most one per round).
    assert acknowledged <= len(page) <= acknowledged + ROUNDS
