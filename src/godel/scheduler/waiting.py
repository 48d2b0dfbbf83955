"""Waiting for agents to end, for the orchestrators above the scheduler (workflows, teams, the task queue).

An agent has *ended* when it will not run again on its own: completed, killed, or failed with no retry left
(a failure with retries left goes back to pending by itself). One bus subscription to the end events serves
every waiter; each wait also re-reads the agent from the store now and then, so a waiter never depends on one
event being delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

import structlog

from godel.core.events import EventFilter
from godel.core.models import Agent
from godel.core.ports import Backpressure, EventBus, Store, Subscription
from godel.core.runs import ended_for_good

log = structlog.get_logger("godel.scheduler")
END_EVENTS = ("agent:complete", "agent:error", "agent:kill")
RECHECK_SECONDS = 5.0


class EndWaiter:
    def __init__(self, store: Store, bus: EventBus) -> None:
        self.store = store
        self.bus = bus
        self._waiters: dict[str, list[asyncio.Future[None]]] = defaultdict(list)
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None

    def start(self) -> None:
        # BLOCK, not SLIDING: an end event dropped under a burst would leave its waiter to the slow re-check.
        sub = self.bus.subscribe(EventFilter(patterns=END_EVENTS), buffer_size=10_000, policy=Backpressure.BLOCK)
        self._sub = sub
        self._task = asyncio.get_running_loop().create_task(self._listen(sub))

    async def stop(self) -> None:
        if self._sub is not None:
            self._sub.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.cancel()
        self._waiters.clear()

    async def wait(self, agent_id: str, timeout: float | None = None) -> Agent:
        """The agent, once it has ended (``TimeoutError`` after ``timeout`` seconds)."""
        async with asyncio.timeout(timeout):
            while True:
                future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._waiters[agent_id].append(future)  # before the read: an end between the two is not missed
                try:
                    agent = await self.store.get_agent(agent_id)
                    if ended_for_good(agent):
                        return agent
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(future), RECHECK_SECONDS)
                finally:
                    self._forget(agent_id, future)

    def _forget(self, agent_id: str, future: asyncio.Future[None]) -> None:
        futures = self._waiters.get(agent_id)
        if futures is None:
            return
        with contextlib.suppress(ValueError):
            futures.remove(future)
        if not futures:
            del self._waiters[agent_id]
        if not future.done():
            future.cancel()

    async def _listen(self, sub: Subscription) -> None:
        async for event in sub:
            agent_id = event.metadata.agent_id
            for future in self._waiters.get(agent_id or "", []):
                if not future.done():
                    future.set_result(None)  # the waiter re-reads the agent and decides
