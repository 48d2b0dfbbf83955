"""Task-queue fixtures: every store/queue test runs on SQLite and on the machine's PostgreSQL.

The store fixtures are the conformance suite's (one fresh PostgreSQL database per session, emptied per test);
``plane_settings`` gives a ``ControlPlane`` the same two databases, for the restart tests; the API tests use
the API suite's ``plane``/``client`` (an in-process app on SQLite).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from godel.bus import MemoryBus
from godel.core.ids import new_id
from godel.core.models import Agent, Team
from godel.core.transitions import Trigger
from godel.settings import Settings
from godel.store import SqlStore, open_store, tables
from godel.tasks import TaskQueue
from tests.api import conftest as api_suite
from tests.api.conftest import settings_for
from tests.conformance import conftest as store_suite

# Fixtures shared with the store conformance suite and the API suite.
sqlite_dir = store_suite.sqlite_dir
postgres_url = store_suite.postgres_url
store_url = store_suite.store_url
store = store_suite.store
settings = api_suite.settings
plane = api_suite.plane
client = api_suite.client

# The agent triggers the scheduler fires to bring a new agent to an end (see core.transitions).
RUN = [Trigger.ADMIT, Trigger.WORKTREE_CREATED, Trigger.SESSION_STARTED]
COMPLETE = [*RUN, Trigger.TASK_COMPLETE, Trigger.CLEANUP_DONE]
ERROR = [*RUN, Trigger.ERROR]


async def empty(url: str) -> None:
    """Migrate and, on PostgreSQL (one database per session), start from empty tables."""
    s = open_store(url)
    try:
        await s.migrate()
        if s.dialect == "postgresql":
            names = ", ".join(t.name for t in tables.metadata.sorted_tables)
            async with s.engine.begin() as conn:
                # The audit log refuses TRUNCATE by trigger (append-only); a test's fresh start is the exception.
                await conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
                await conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        await s.close()


@pytest.fixture
async def plane_settings(store_url: str, fast_tmp: Path) -> Settings:
    """Settings for a ControlPlane on the parametrized database (SQLite: its own file under the home)."""
    await empty(store_url)
    return settings_for(fast_tmp / "home", database_url=store_url)


@pytest.fixture
async def queue(store: SqlStore) -> AsyncIterator[TaskQueue]:
    bus = MemoryBus()
    bus.attach(store)
    q = TaskQueue(store, bus)
    yield q
    await q.stop()


async def add_agent(store: SqlStore, *, team_id: str | None = None, max_retries: int = 0, **fields: Any) -> Agent:
    agent = Agent(id=new_id(), task="work the queue", model="m", team_id=team_id, max_retries=max_retries, **fields)
    created, _ = await store.create_agent(agent, actor="test")
    return created


async def add_team(store: SqlStore, name: str = "reviewers") -> Team:
    team, _ = await store.add_team(Team(id=new_id(), name=name), actor="test")
    return team


async def drive(store: SqlStore, agent_id: str, triggers: list[Trigger], **last_changes: Any) -> Agent:
    """Move an agent through ``triggers`` the way the scheduler does (changes go with the last move)."""
    agent = await store.get_agent(agent_id)
    for i, trigger in enumerate(triggers):
        changes = last_changes if i == len(triggers) - 1 else None
        agent, _ = await store.transition_agent(agent_id, trigger, actor="test", changes=changes)
    return agent


async def eventually(check: Callable[[], Awaitable[Any]], *, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.01)  # polling an observable condition
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")
