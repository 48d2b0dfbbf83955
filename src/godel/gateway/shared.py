"""What the gateway's limits remember between requests: rate-limit windows, requests in flight, and budget
reservations -- in this process's memory (one server), or in Redis (``GODEL_REDIS_URL``), so that several Godel
servers sharing a database enforce one limit together instead of one each.

Budget admissions and settlements take a lock per budget (an ``asyncio.Lock`` here, a Redis lock there, taken in
sorted order so two requests never wait on each other crosswise); the Redis locks expire on their own, so a server
that dies holding one stalls the others for at most ``LOCK_SECONDS``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Protocol

from limits.aio.storage import MemoryStorage, RedisStorage, Storage

LOCK_SECONDS = 30.0  # a Redis budget lock outlives a dead holder by at most this
IN_FLIGHT_TTL = 600  # seconds a count of requests in flight survives without being touched (a dead server's)
_PREFIX = "godel:gateway:"

# INCR the count, refuse (and undo) beyond the limit; the TTL bounds what a dead server leaves behind.
_TAKE = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if n > tonumber(ARGV[1]) then redis.call('DECR', KEYS[1]) return 0 end
return 1
"""
_GIVE = """
local n = redis.call('DECR', KEYS[1])
if n <= 0 then redis.call('DEL', KEYS[1]) end
return n
"""


class SharedState(Protocol):
    """The gateway's memory between requests (see the module docstring)."""

    def windows(self) -> Storage:
        """The ``limits`` storage of the rate-limit windows."""
        ...

    async def take(self, name: str, limit: int) -> bool:
        """One more request in flight under ``name``, if fewer than ``limit`` are."""
        ...

    async def give(self, name: str) -> None: ...

    def guarding(self, budget_ids: Sequence[str]) -> Any:
        """An async context manager: the budgets' lock (admissions and settlements of these budgets take turns)."""
        ...

    async def reserved(self, budget_id: str) -> float: ...

    async def reserve(self, budget_id: str, amount: float) -> None:
        """Add ``amount`` (negative: release) to what requests in flight reserved on the budget."""
        ...

    async def reservations(self) -> dict[str, float]:
        """Every budget's reserved amount (for inspection and tests)."""
        ...

    async def close(self) -> None: ...


class MemoryState:
    def __init__(self) -> None:
        self._windows = MemoryStorage()
        self._in_flight: dict[str, int] = {}
        self._reserved: dict[str, float] = {}
        self._lock = asyncio.Lock()

    def windows(self) -> Storage:
        return self._windows

    async def take(self, name: str, limit: int) -> bool:
        if self._in_flight.get(name, 0) >= limit:
            return False
        self._in_flight[name] = self._in_flight.get(name, 0) + 1
        return True

    async def give(self, name: str) -> None:
        left = self._in_flight.get(name, 1) - 1
        if left > 0:
            self._in_flight[name] = left
        else:
            self._in_flight.pop(name, None)

    @asynccontextmanager
    async def guarding(self, budget_ids: Sequence[str]) -> AsyncIterator[None]:
        async with self._lock:  # one lock for all: in one process admissions are short
            yield

    async def reserved(self, budget_id: str) -> float:
        return self._reserved.get(budget_id, 0.0)

    async def reserve(self, budget_id: str, amount: float) -> None:
        left = self._reserved.get(budget_id, 0.0) + amount
        if left > 1e-12:
            self._reserved[budget_id] = left
        else:
            self._reserved.pop(budget_id, None)

    async def reservations(self) -> dict[str, float]:
        return dict(self._reserved)

    async def close(self) -> None:
        return None


class RedisState:
    def __init__(self, url: str) -> None:
        from redis.asyncio import Redis  # only a server configured with Redis needs the package loaded

        self.redis: Any = Redis.from_url(url)
        scheme, sep, rest = url.partition("://")
        self._windows = RedisStorage(f"async+{scheme}{sep}{rest}", implementation="redispy",
                                     key_prefix=f"{_PREFIX}limits")  # fmt: skip
        self._take = self.redis.register_script(_TAKE)
        self._give = self.redis.register_script(_GIVE)

    def windows(self) -> Storage:
        return self._windows

    async def take(self, name: str, limit: int) -> bool:
        return bool(await self._take(keys=[f"{_PREFIX}in-flight:{name}"], args=[limit, IN_FLIGHT_TTL]))

    async def give(self, name: str) -> None:
        await self._give(keys=[f"{_PREFIX}in-flight:{name}"])

    @asynccontextmanager
    async def guarding(self, budget_ids: Sequence[str]) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for budget_id in sorted(set(budget_ids)):  # sorted: two requests never hold one each of two locks
                lock = self.redis.lock(f"{_PREFIX}budget-lock:{budget_id}", timeout=LOCK_SECONDS,
                                       blocking_timeout=LOCK_SECONDS * 2)  # fmt: skip
                await stack.enter_async_context(lock)
            yield

    async def reserved(self, budget_id: str) -> float:
        value = await self.redis.hget(f"{_PREFIX}reserved", budget_id)
        return float(value) if value is not None else 0.0

    async def reserve(self, budget_id: str, amount: float) -> None:
        left = float(await self.redis.hincrbyfloat(f"{_PREFIX}reserved", budget_id, amount))
        if left <= 1e-12:
            await self.redis.hdel(f"{_PREFIX}reserved", budget_id)

    async def reservations(self) -> dict[str, float]:
        raw = await self.redis.hgetall(f"{_PREFIX}reserved")
        return {k.decode(): float(v) for k, v in raw.items()}

    async def close(self) -> None:
        await self.redis.aclose()
