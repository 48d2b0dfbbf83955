"""In-process event bus (embedded mode).

Each subscriber owns a bounded buffer; what happens when it is full is the subscriber's chosen
``Backpressure`` policy (spec §4.1: drop / block / sliding). ``dispatch`` is called by the store only after a
commit, so a subscriber never sees an event that could still roll back.

``stream`` gives a gap-free, duplicate-free sequence for resumable clients (SSE ``Last-Event-ID``, WebSocket
``since``): it subscribes *first*, replays from the store up to what is committed, then continues from the
live buffer skipping what replay already yielded. If the live buffer ever overflowed, it goes back to the
store (the log is the truth), so a slow reader loses nothing — it just reads from disk for a while.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

from godel.core.events import Event, EventFilter
from godel.core.ports import Backpressure, EventQuery, Store

_ids = itertools.count(1)


class MemorySubscription:
    def __init__(self, bus: MemoryBus, filter: EventFilter, buffer_size: int, policy: Backpressure) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        self.id = f"sub-{next(_ids)}"
        self.filter = filter
        self.policy = policy
        self.buffer_size = buffer_size
        self.dropped = 0
        self.delivered = 0
        self.closed = False
        self._bus = bus
        self._buf: deque[Event] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    async def offer(self, event: Event) -> None:
        if self.closed or not self.filter.accepts(event):
            return
        if len(self._buf) >= self.buffer_size:
            if self.policy == Backpressure.DROP:
                self.dropped += 1
                return
            if self.policy == Backpressure.SLIDING:
                self._buf.popleft()
                self.dropped += 1
            else:  # BLOCK: the publisher waits until the reader makes room (or the subscription closes)
                while len(self._buf) >= self.buffer_size and not self.closed:
                    self._writable.clear()
                    await self._writable.wait()
                if self.closed:
                    return
        self._buf.append(event)
        self._readable.set()

    async def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None when the subscription is closed or ``timeout`` passes."""
        while not self._buf:
            if self.closed:
                return None
            self._readable.clear()
            try:
                async with asyncio.timeout(timeout):  # not wait_for: it can swallow a racing cancellation
                    await self._readable.wait()
            except TimeoutError:
                return None
        event = self._buf.popleft()
        self.delivered += 1
        self._writable.set()
        return event

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            event = await self.get()
            if event is None:
                return
            yield event

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._readable.set()
        self._writable.set()
        self._bus._remove(self)

    @property
    def pending(self) -> int:
        return len(self._buf)


class MemoryBus:
    def __init__(self, store: Store | None = None, *, replay_page: int = 500) -> None:
        self._store = store
        self._subs: dict[str, MemorySubscription] = {}
        self._replay_page = replay_page
        self.dispatched = 0

    def attach(self, store: Store) -> None:
        """Make this bus the store's commit listener (and its replay source)."""
        self._store = store
        store.set_commit_listener(self.dispatch)

    async def dispatch(self, events: Sequence[Event]) -> None:
        self.dispatched += len(events)
        subs = list(self._subs.values())
        for event in events:
            for sub in subs:
                await sub.offer(event)

    def subscribe(
        self,
        filter: EventFilter,
        *,
        buffer_size: int = 1000,
        policy: Backpressure = Backpressure.SLIDING,
    ) -> MemorySubscription:
        sub = MemorySubscription(self, filter, buffer_size, policy)
        self._subs[sub.id] = sub
        return sub

    def _remove(self, sub: MemorySubscription) -> None:
        self._subs.pop(sub.id, None)

    async def _replay(self, filter: EventFilter, since: int) -> AsyncIterator[Event]:
        assert self._store is not None, "stream() needs a store to replay from"
        while True:
            page = await self._store.query_events(EventQuery(filter=filter, since=since, limit=self._replay_page))
            for event in page:
                yield event
                assert event.sequence is not None
                since = event.sequence
            if len(page) < self._replay_page:
                return

    async def stream(self, filter: EventFilter, *, since: int | None, buffer_size: int = 1000) -> AsyncIterator[Event]:
        if since is None and self._store is not None:
            # "From now": take the position *before* subscribing; whatever commits between the two is then
            # replayed from the store rather than skipped.
            since = await self._store.last_sequence()
        sub = self.subscribe(filter, buffer_size=buffer_size, policy=Backpressure.SLIDING)
        try:
            last = since
            if since is not None:
                async for event in self._replay(filter, since):
                    last = event.sequence
                    yield event
            seen_drops = 0  # any drop since subscribing, even during the replay above, means a gap to fill
            while True:
                live = await sub.get()
                if live is None:
                    return
                if sub.dropped != seen_drops and last is not None:
                    # The live buffer overflowed: what we missed is in the store.
                    seen_drops = sub.dropped
                    async for replayed in self._replay(filter, last):
                        last = replayed.sequence
                        yield replayed
                assert live.sequence is not None
                if last is not None and live.sequence <= last:
                    continue
                last = live.sequence
                yield live
        finally:
            sub.close()

    def stats(self) -> dict[str, Any]:
        return {
            "kind": "memory",
            "subscribers": len(self._subs),
            "dispatched": self.dispatched,
            "dropped": sum(s.dropped for s in self._subs.values()),
            "buffered": sum(s.pending for s in self._subs.values()),
        }

    def close(self) -> None:
        for sub in list(self._subs.values()):
            sub.close()
