"""The store's one-writer lock (``store.database.WriteTurns``): handed over in order, urgent before ordinary, and
never lost to a waiter cancelled on the way (a lost hand-over would stop every write of the server for good)."""

from __future__ import annotations

import asyncio

import pytest

from godel.store.database import Announcements, WriteTurns


async def _until_waiting(turns: WriteTurns, want: tuple[int, int]) -> None:
    async with asyncio.timeout(2):
        while turns.waiting != want:  # noqa: ASYNC110 - turns of the loop, not time: the waiters queue as they run
            await asyncio.sleep(0)


async def test_turns_go_in_order_urgent_first() -> None:
    turns, order = WriteTurns(), []
    await turns.acquire()

    async def writer(name: str, urgent: bool = False) -> None:
        await turns.acquire(urgent=urgent)
        order.append(name)
        turns.release()

    tasks, urgent_n, ordinary_n = [], 0, 0
    for name, urgent in [("a", False), ("b", False), ("end1", True), ("c", False), ("end2", True)]:
        tasks.append(asyncio.create_task(writer(name, urgent)))
        urgent_n, ordinary_n = urgent_n + urgent, ordinary_n + (not urgent)
        await _until_waiting(turns, (urgent_n, ordinary_n))  # queued in this order
    turns.release()
    await asyncio.gather(*tasks)
    assert order == ["end1", "end2", "a", "b", "c"]
    assert turns.waiting == (0, 0)
    await asyncio.wait_for(turns.acquire(), 1)  # free again


async def test_a_cancelled_waiter_is_skipped() -> None:
    turns = WriteTurns()
    await turns.acquire()
    gone = asyncio.create_task(turns.acquire())
    kept = asyncio.create_task(turns.acquire())
    await _until_waiting(turns, (0, 2))
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    turns.release()
    await asyncio.wait_for(kept, 1)  # the turn went past the cancelled waiter
    turns.release()
    await asyncio.wait_for(turns.acquire(), 1)


async def test_a_waiter_cancelled_as_it_is_handed_the_lock_passes_it_on() -> None:
    turns = WriteTurns()
    await turns.acquire()
    handed = asyncio.create_task(turns.acquire())
    await _until_waiting(turns, (0, 1))
    turns.release()  # its turn is set ...
    handed.cancel()  # ... and it is cancelled before it runs
    await asyncio.gather(handed, return_exceptions=True)
    assert handed.cancelled()
    await asyncio.wait_for(turns.acquire(), 1)  # not lost with it


async def test_releasing_a_free_lock_is_a_bug_said_at_once() -> None:
    turns = WriteTurns()
    with pytest.raises(RuntimeError, match="not held"):
        turns.release()  # else the next release would let two writers in


async def test_announcements_keep_commit_order_and_survive_cancelled_writers() -> None:
    """Numbers taken in commit order announce in that order, whenever their writers get there; a writer cancelled
    before its turn is skipped, one cancelled as its turn came passes it on: nobody after them waits for good."""
    turns, heard = Announcements(), []
    numbers = [turns.number() for _ in range(5)]

    async def announce(n: int) -> None:
        await turns.turn(n)
        heard.append(n)
        turns.done(n)

    late = [asyncio.create_task(announce(n)) for n in reversed(numbers[2:])]  # 5, 4, 3 wait for 1 and 2
    await asyncio.sleep(0)
    cancelled_early = asyncio.create_task(announce(numbers[1]))  # 2: cancelled before its turn comes
    await asyncio.sleep(0)
    cancelled_early.cancel()
    await asyncio.gather(cancelled_early, return_exceptions=True)
    await announce(numbers[0])  # 1: its turn at once
    async with asyncio.timeout(2):
        await asyncio.gather(*late)
    assert heard == [1, 3, 4, 5]

    handed = Announcements()
    first, second, third = handed.number(), handed.number(), handed.number()
    waiting = asyncio.create_task(handed.turn(second))
    await asyncio.sleep(0)
    handed.done(first)  # second's turn is set ...
    waiting.cancel()  # ... and it is cancelled before it runs: it passes the turn on
    await asyncio.gather(waiting, return_exceptions=True)
    await asyncio.wait_for(handed.turn(third), 1)


async def test_a_turn_that_comes_between_a_cancel_and_its_handling_is_passed_on() -> None:
    """Found by fuzzing: the waiter's future cancelled, then its turn set (finding that future done, so waking
    nobody), then the waiter's cancellation handled. It must pass the turn on, not skip it as never reached."""
    turns = Announcements()
    first, second, third = turns.number(), turns.number(), turns.number()
    waiting = asyncio.create_task(turns.turn(second))
    await asyncio.sleep(0)
    waiting.cancel()  # its future is cancelled now ...
    turns.done(first)  # ... its turn comes ...
    await asyncio.gather(waiting, return_exceptions=True)  # ... and only then does it handle the cancel
    await asyncio.wait_for(turns.turn(third), 1)
