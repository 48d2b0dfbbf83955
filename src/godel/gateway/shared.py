"""What the gateway's limits remember between requests: rate-limit windows, requests in flight, and the budget
locks -- in this process's memory (one server), or in Redis (``GODEL_REDIS_URL``), so that several Godel servers
sharing a database enforce one limit together instead of one each.

Budget admissions take a lock per budget (a Redis lock, taken in sorted order so two requests never wait on each
other crosswise; the locks expire on their own, so a server that dies holding one stalls the others for at most
``LOCK_SECONDS``). In memory there is nothing to lock: an admission checks and reserves without awaiting. What a
budget spent and reserved is the database's (``godel.gateway.budgets``), so Redis forgetting everything (a restart)
loses no reservation.

Redis failing closes the gate: ``SharedStateDown`` (503 with ``Retry-After``, in the caller's dialect) for the
requests that need it, and ``ping`` for ``/health/ready``. A lock lost with a restarting Redis is not an error: the
admission it guarded is already recorded in the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Protocol

from limits.aio.storage import MemoryStorage, RedisStorage, Storage

from godel.gateway.types import GatewayError

log = logging.getLogger("godel.gateway.shared")

LOCK_SECONDS = 30.0  # a Redis budget lock outlives a dead holder by at most this
LOCK_POLL_SECONDS = 0.002
LOCK_WAIT_SECONDS = 10.0  # an admission waits this long for a budget's lock, then is refused with a 503
RETRY_AFTER = 2  # seconds a caller refused for an unreachable Redis is asked to wait
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


class SharedStateDown(GatewayError):
    """The shared state (Redis) does not answer: the request is refused rather than let through unlimited."""

    def __init__(self, what: str, exc: BaseException | None = None) -> None:
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        super().__init__(503, "unavailable", f"the gateway cannot reach its shared state (Redis) to {what}{detail}; "
                                             f"try again shortly")  # fmt: skip
        self.retry_after = RETRY_AFTER


class SharedState(Protocol):
    """The gateway's memory between requests (see the module docstring)."""

    shared: bool
    """True when several servers share it: budgets then keep their reservations in the database."""

    def windows(self) -> Storage:
        """The ``limits`` storage of the rate-limit windows."""
        ...

    async def take(self, name: str, limit: int) -> bool:
        """One more request in flight under ``name``, if fewer than ``limit`` are."""
        ...

    async def give(self, name: str) -> None: ...

    def guarding(self, budget_ids: Sequence[str]) -> Any:
        """An async context manager: the budgets' lock (admissions of these budgets take turns). Raises
        ``SharedStateDown`` when it cannot be taken."""
        ...

    async def ping(self) -> None:
        """Raises ``SharedStateDown`` when the shared state does not answer."""
        ...

    async def close(self) -> None: ...


class MemoryState:
    shared = False

    def __init__(self) -> None:
        self._windows = MemoryStorage()
        self._in_flight: dict[str, int] = {}

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
        yield  # one process: the budget guard checks and reserves without awaiting, which is atomic here

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisState:
    shared = True

    def __init__(self, url: str) -> None:
        from redis.asyncio import Redis  # only a server configured with Redis needs the package loaded
        from redis.exceptions import LockError, RedisError

        # Short timeouts: a Redis that went away must refuse requests in a moment, not hang them.
        self.redis: Any = Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=5.0)
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)
        self._lock_error = LockError
        self._unlock_errors: tuple[type[BaseException], ...] = (LockError, *self._errors)
        scheme, sep, rest = url.partition("://")
        self._windows = RedisStorage(f"async+{scheme}{sep}{rest}", implementation="redispy",
                                     key_prefix=f"{_PREFIX}limits")  # fmt: skip
        self._take = self.redis.register_script(_TAKE)
        self._give = self.redis.register_script(_GIVE)

    def windows(self) -> Storage:
        return self._windows

    async def take(self, name: str, limit: int) -> bool:
        try:
            return bool(await self._take(keys=[f"{_PREFIX}in-flight:{name}"], args=[limit, IN_FLIGHT_TTL]))
        except self._errors as exc:
            raise SharedStateDown("count the requests in flight", exc) from exc

    async def give(self, name: str) -> None:
        try:
            await self._give(keys=[f"{_PREFIX}in-flight:{name}"])
        except self._errors as exc:  # the count expires on its own (IN_FLIGHT_TTL)
            log.warning("could not release a request in flight in Redis: %r", exc)

    @asynccontextmanager
    async def guarding(self, budget_ids: Sequence[str]) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for budget_id in sorted(set(budget_ids)):  # sorted: two requests never hold one each of two locks
                # Polled every LOCK_POLL_SECONDS while another admission holds it (redis-py's default, 0.1 s,
                # would queue a burst's admissions a tenth of a second apart).
                lock = self.redis.lock(f"{_PREFIX}budget-lock:{budget_id}", timeout=LOCK_SECONDS,
                                       sleep=LOCK_POLL_SECONDS, blocking_timeout=LOCK_WAIT_SECONDS)  # fmt: skip
                try:
                    acquired = await lock.acquire()
                except self._lock_error as exc:
                    raise SharedStateDown("lock the budget", exc) from exc
                except self._errors as exc:
                    raise SharedStateDown("lock the budget", exc) from exc
                if not acquired:
                    raise SharedStateDown(f"lock the budget within {LOCK_WAIT_SECONDS:.0f} s")
                stack.push_async_callback(self._unlock, lock)
            yield

    async def _unlock(self, lock: Any) -> None:
        try:
            await lock.release()
        except self._unlock_errors as exc:
            # Redis restarted (the lock is gone) or went away: the lock expires by itself; what it guarded is
            # already in the database.
            log.warning("a budget lock could not be released: %r", exc)

    async def ping(self) -> None:
        try:
            await self.redis.ping()
        except self._errors as exc:
            raise SharedStateDown("answer a ping", exc) from exc

    async def close(self) -> None:
        await self.redis.aclose()
