"""Pure pieces of the scheduler: the retry delay and the supervisor of named background loops."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from godel.scheduler.retrying import backoff_delay, next_attempt_at
from godel.scheduler.tasks import TaskSupervisor


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_delay(n, base=2.0, cap=30.0) for n in range(0, 7)] == [0.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert next_attempt_at(start, 3, base=1.5, cap=100) == start + timedelta(seconds=6)


async def test_a_crashing_loop_is_restarted_and_reported() -> None:
    runs = 0
    steady = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"boom {runs}")
        steady.set()
        await asyncio.Event().wait()  # then it runs until cancelled, like a real loop

    tasks = TaskSupervisor(max_restart_delay=0.05)
    tasks.start("flaky", flaky, why="test")
    await asyncio.wait_for(steady.wait(), 5)
    (row,) = tasks.describe()
    assert row["name"] == "flaky" and row["running"] is True and row["restarts"] == 2
    assert row["lastError"] == "RuntimeError: boom 2"
    await tasks.stop()
    assert tasks.describe() == []


async def test_stop_cancels_newest_first() -> None:
    order: list[str] = []

    def loop(name: str):  # type: ignore[no-untyped-def]
        async def run() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                order.append(name)

        return run

    tasks = TaskSupervisor()
    for name in ("first", "second", "third"):
        tasks.start(name, loop(name), why="test")
    await asyncio.sleep(0)  # let them start
    await tasks.stop()
    assert order == ["third", "second", "first"]
