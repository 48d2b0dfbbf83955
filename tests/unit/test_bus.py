"""The in-process bus: pattern routing, filters, and the three backpressure policies (no store needed)."""

import asyncio

from godel.bus import MemoryBus
from godel.core.events import Event, EventFilter, make_event
from godel.core.ports import Backpressure


def ev(seq: int, type_: str = "agent:log", agent: str = "a1") -> Event:
    e = make_event(type_, {"n": seq}, component="test", agent_id=agent)
    object.__setattr__(e, "sequence", seq)
    return e


async def drain(sub, n: int) -> list[int]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(n):
        got = await sub.get(timeout=1)
        assert got is not None
        out.append(got.sequence)
    return out


async def test_routing_by_pattern_and_filter() -> None:
    bus = MemoryBus()
    agents = bus.subscribe(EventFilter(patterns=("agent:*",)))
    one_agent = bus.subscribe(EventFilter(agent_id="a2"))
    steps = bus.subscribe(EventFilter(patterns=("workflow:step:*",)))
    await bus.dispatch([ev(1), ev(2, "workflow:step:start"), ev(3, agent="a2"), ev(4, "team:start")])
    assert await drain(agents, 2) == [1, 3]
    assert await drain(one_agent, 1) == [3]
    assert await drain(steps, 1) == [2]
    assert agents.pending == 0 and await agents.get(timeout=0.01) is None


async def test_drop_keeps_oldest_sliding_keeps_newest() -> None:
    bus = MemoryBus()
    drop = bus.subscribe(EventFilter(), buffer_size=3, policy=Backpressure.DROP)
    sliding = bus.subscribe(EventFilter(), buffer_size=3, policy=Backpressure.SLIDING)
    await bus.dispatch([ev(i) for i in range(1, 7)])
    assert await drain(drop, 3) == [1, 2, 3] and drop.dropped == 3
    assert await drain(sliding, 3) == [4, 5, 6] and sliding.dropped == 3


async def test_block_makes_the_publisher_wait_for_the_reader() -> None:
    bus = MemoryBus()
    sub = bus.subscribe(EventFilter(), buffer_size=2, policy=Backpressure.BLOCK)
    publisher = asyncio.create_task(bus.dispatch([ev(i) for i in range(1, 6)]))
    await asyncio.sleep(0)  # let the publisher fill the buffer
    for _ in range(3):
        await asyncio.sleep(0)
    assert not publisher.done() and sub.pending == 2
    assert await drain(sub, 5) == [1, 2, 3, 4, 5]
    await asyncio.wait_for(publisher, 1)
    assert sub.dropped == 0


async def test_close_releases_a_blocked_publisher_and_ends_iteration() -> None:
    bus = MemoryBus()
    sub = bus.subscribe(EventFilter(), buffer_size=1, policy=Backpressure.BLOCK)
    publisher = asyncio.create_task(bus.dispatch([ev(1), ev(2), ev(3)]))
    await asyncio.sleep(0)
    sub.close()
    await asyncio.wait_for(publisher, 1)
    # What was buffered before the close is still readable; then iteration ends.
    assert [e.sequence async for e in sub] == [1]
    assert bus.stats()["subscribers"] == 0
