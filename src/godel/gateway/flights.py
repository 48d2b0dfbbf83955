"""Single flight: concurrent callers asking for the same thing share one lookup.

After an idle pause every cache the gateway keeps (keys, budgets) has expired at once, and the first burst of
requests would each read the store for the same row; with ``SingleFlight`` the first caller reads it and the
others await that read::

    flights: SingleFlight[str, VirtualKey | None] = SingleFlight()
    key = await flights.run(digest, lambda: store.key_by_hash(digest))
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        while (flight := self._flights.get(key)) is not None:
            try:
                # shield: one waiter cancelled (its caller left) must not cancel the lookup the others wait on
                return await asyncio.shield(flight)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not flight.cancelled() or (task is not None and task.cancelling()):
                    raise  # this caller itself was cancelled
                # the loader's caller was: take over the lookup
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            value = await load()
        except BaseException as exc:
            if isinstance(exc, Exception):
                flight.set_exception(exc)
                flight.exception()  # retrieved here: a flight nobody else waited on must not warn
            else:
                flight.cancel()  # the loader was cancelled: a waiter takes over
            raise
        else:
            flight.set_result(value)
            return value
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
