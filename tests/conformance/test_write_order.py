"""The order in which queued writes get the store's one writer: first come, first served, except that a run's end
(``core.transitions.ENDING``) and a workflow step's end go before the ordinary writes already waiting
(``core.urgency``). Under a burst of agents the writer is busy nearly all the time; an end that waited its turn
behind every queued start held up each waiter and dependent step by that whole queue."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from godel.core.events import Event, make_event
from godel.core.ids import new_id
from godel.core.models import Agent
from godel.core.ports import EventQuery
from godel.core.transitions import ENDING, Trigger
from godel.core.urgency import is_urgent, urgent
from godel.store import SqlStore


async def _queued(store: SqlStore, want: tuple[int, int]) -> None:
    """Until the writer's queue holds ``want`` (urgent, ordinary) waiters: each task reaches the lock in a few
    turns of the loop."""
    async with asyncio.timeout(5):
        while store._db._write_lock.waiting != want:  # noqa: ASYNC110 - turns of the loop, not time: the waiters queue as they run
            await asyncio.sleep(0)


async def test_an_agents_end_is_written_before_the_ordinary_writes_queued_ahead_of_it(store: SqlStore) -> None:
    agent, _ = await store.create_agent(Agent(id=new_id(), task="t"), actor="test")
    first, second = (make_event("agent:log", {"line": n}, component="test") for n in ("first", "second"))
    async with store._write(events=True):  # the writer, busy: what comes now queues
        one = asyncio.create_task(store.append_events([first]))
        await _queued(store, (0, 1))
        two = asyncio.create_task(store.append_events([second]))
        await _queued(store, (0, 2))
        kill = asyncio.create_task(store.transition_agent(agent.id, Trigger.KILL, actor="test", reason="stop"))
        await _queued(store, (1, 2))
    await asyncio.gather(one, two, kill)
    page = await store.query_events(EventQuery(limit=100))
    order = [e.type if e.type != "agent:log" else e.payload["line"] for e in page][1:]  # after its creation
    assert order == ["agent:kill", "first", "second"], order


async def test_an_ordinary_transition_waits_its_turn(store: SqlStore) -> None:
    agent, _ = await store.create_agent(Agent(id=new_id(), task="t"), actor="test")
    async with store._write(events=True):
        log = asyncio.create_task(store.append_events([make_event("agent:log", {"line": "x"}, component="test")]))
        await _queued(store, (0, 1))
        admit = asyncio.create_task(store.transition_agent(agent.id, Trigger.ADMIT, actor="test"))
        await _queued(store, (0, 2))  # not urgent: it queues behind the log line
    await asyncio.gather(log, admit)
    page = await store.query_events(EventQuery(limit=100))
    assert page[-2].type == "agent:log"
    assert page[-1].payload["trigger"] == "admit"


def test_only_ends_are_urgent() -> None:
    assert Trigger.TASK_COMPLETE not in ENDING  # the run still cleans up: its end is CLEANUP_DONE
    assert {Trigger.ADMIT, Trigger.SESSION_STARTED, Trigger.RETRY, Trigger.PAUSE}.isdisjoint(ENDING)
    assert {Trigger.CLEANUP_DONE, Trigger.ERROR, Trigger.KILL, Trigger.TIMEOUT, Trigger.LOST} <= ENDING
    assert not is_urgent()
    with urgent():
        assert is_urgent()
    assert not is_urgent()


async def _b_committed_while_a_is_announced(
    store: SqlStore, listener: Callable[[list[Event]], Awaitable[None]], heard: list[str]
) -> tuple[asyncio.Task[list[Event]], asyncio.Task[list[Event]]]:
    """Write A and, while ``listener`` is hearing A, B: returned once B has committed (and waits to announce)."""
    store.set_commit_listener(listener)
    a = asyncio.create_task(store.append_events([make_event("agent:log", {"line": "A"}, component="test")]))
    async with asyncio.timeout(5):
        while heard != ["A"]:  # noqa: ASYNC110 - turns of the loop until A is being announced
            await asyncio.sleep(0)
    b = asyncio.create_task(store.append_events([make_event("agent:log", {"line": "B"}, component="test")]))
    async with asyncio.timeout(5):
        # Polling the database: B's commit is the evidence, and nothing announces it yet.
        while [e.payload.get("line") for e in await store.query_events(EventQuery(limit=10))][-1:] != ["B"]:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    return a, b


async def test_a_listener_that_writes_does_not_wait_on_a_writer_waiting_on_it(store: SqlStore) -> None:
    """A writer that commits while a listener runs waits for its turn to announce, not holding the write lock: the
    listener's own write gets the lock (it used to wait for it for good, held by that writer)."""
    heard: list[str] = []
    b_committed = asyncio.Event()

    async def listener(events: list[Event]) -> None:
        heard.extend(str(e.payload.get("line")) for e in events)
        if any(e.payload.get("line") == "A" for e in events):
            await b_committed.wait()  # B has committed and waits to announce
            await store.append_events([make_event("agent:log", {"line": "from-listener"}, component="test")])

    a, b = await _b_committed_while_a_is_announced(store, listener, heard)
    b_committed.set()
    async with asyncio.timeout(5):
        await asyncio.gather(a, b)
    assert heard == ["A", "from-listener", "B"]  # in commit order, the listener's write inside A's announcement


async def test_a_writer_cancelled_after_its_commit_still_has_its_events_announced_in_turn(store: SqlStore) -> None:
    """Its events are in the store: a live subscriber (the bus) must hear them, in commit order, even though the
    caller that wrote them was cancelled while it waited for its turn to announce."""
    heard: list[str] = []
    release_a = asyncio.Event()

    async def listener(events: list[Event]) -> None:
        heard.extend(str(e.payload.get("line")) for e in events)
        if "A" in heard[-1:]:
            await release_a.wait()

    a, b = await _b_committed_while_a_is_announced(store, listener, heard)
    b.cancel()  # committed, waiting for its turn to announce
    await asyncio.gather(b, return_exceptions=True)
    assert b.cancelled()
    release_a.set()
    await a
    async with asyncio.timeout(5):
        while heard != ["A", "B"]:  # noqa: ASYNC110 - B's announcement runs on in its own task
            await asyncio.sleep(0.01)
    c = make_event("agent:log", {"line": "C"}, component="test")
    async with asyncio.timeout(5):
        await store.append_events([c])  # and the turns go on
    assert heard == ["A", "B", "C"]
