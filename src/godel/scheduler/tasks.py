"""Named, supervised long-lived tasks.

Every background loop of the server is started here, with a name and a one-line reason, so a newcomer can
read what runs and why from one place, and so shutdown happens in reverse start order. A loop that crashes
is logged and restarted after a short, growing delay; it never dies silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("godel.tasks")


@dataclass
class _Supervised:
    name: str
    why: str
    factory: Callable[[], Awaitable[None]]
    task: asyncio.Task[None] | None = None
    restarts: int = 0
    last_error: str | None = None
    stopping: bool = field(default=False)


class TaskSupervisor:
    def __init__(self, *, max_restart_delay: float = 10.0) -> None:
        self._tasks: list[_Supervised] = []
        self._max_delay = max_restart_delay

    def start(self, name: str, factory: Callable[[], Awaitable[None]], *, why: str) -> None:
        entry = _Supervised(name, why, factory)
        entry.task = asyncio.create_task(self._guard(entry), name=f"godel:{name}")
        self._tasks.append(entry)

    async def _guard(self, entry: _Supervised) -> None:
        delay = 0.1
        while not entry.stopping:
            try:
                await entry.factory()
                return  # a loop that returns on its own is done
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                entry.restarts += 1
                entry.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("task crashed; restarting", task=entry.name, delay=delay)
                await asyncio.sleep(delay)  # back off before restarting a crashing loop
                delay = min(delay * 2, self._max_delay)

    async def stop(self, timeout: float = 10.0) -> None:
        """Cancel every task, newest first, waiting for each to finish its cleanup."""
        for entry in reversed(self._tasks):
            entry.stopping = True
            if entry.task is None or entry.task.done():
                continue
            entry.task.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(entry.task), timeout)
            except (asyncio.CancelledError, TimeoutError):
                pass
            except Exception:
                log.exception("task failed while stopping", task=entry.name)
        self._tasks.clear()

    def describe(self) -> list[dict[str, object]]:
        return [
            {
                "name": e.name,
                "why": e.why,
                "running": e.task is not None and not e.task.done(),
                "restarts": e.restarts,
                "lastError": e.last_error,
            }
            for e in self._tasks
        ]
