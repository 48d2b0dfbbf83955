"""Injectable time, so timeouts, backoff, delayed cleanup and leases are tested without sleeping.

Everything in Godel that waits for a moment (not for an event) asks the clock: ``now()`` for deadlines kept in the
store (timeouts, retry backoff, leases), ``sleep()`` for timers held in memory (delayed cleanup). Tests pass a
``ManualClock`` and move it with ``advance()``: a one-hour cleanup delay then costs the test no wall time."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime, timedelta


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to (tests). ``sleep`` returns once ``advance`` has moved the clock past
    the sleeper's deadline; sleepers wake in deadline order, each on the loop it slept on."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 0.0
        self._order = itertools.count()  # ties in deadline wake in the order they slept
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)  # a turn of the loop, as asyncio.sleep(0) gives
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._order), woken))
        await woken  # a cancelled sleeper's future is cancelled with it; advance() skips it

    @property
    def sleepers(self) -> int:
        """How many sleeps wait for the clock to move (a test waits for its timer to be armed before moving it)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._now += timedelta(seconds=seconds)
        self._mono += seconds
        while self._sleepers and self._sleepers[0][0] <= self._mono:
            _, _, woken = heapq.heappop(self._sleepers)
            if not woken.done():
                woken.set_result(None)


def utcnow() -> datetime:
    return datetime.now(UTC)
