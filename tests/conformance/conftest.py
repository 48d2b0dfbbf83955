"""Store fixtures: every store test runs on SQLite (a file on tmpfs) and on the machine's PostgreSQL.

PostgreSQL gets one fresh, uniquely named database per test session (dropped at the end); each test starts
from empty tables (TRUNCATE … RESTART IDENTITY), which is much cheaper than a database per test. Without a
reachable server the postgres cases skip and say why.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
import sqlalchemy as sa

from godel.store import SqlStore, open_store, tables
from tests.pg import PG_SERVER, pg_admin

T = TypeVar("T")


def _run_async(fn: Callable[[], Awaitable[T]]) -> T:
    # In a thread, so it never meets (or replaces) the event loop pytest-asyncio runs tests on.
    async def main() -> T:
        return await fn()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


@pytest.fixture(scope="session")
def sqlite_dir() -> Iterator[Path]:
    shm = Path("/dev/shm")
    root = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    path = root / "godel-tests" / f"store-{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    name = f"godel_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        _run_async(lambda: pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"PostgreSQL at {PG_SERVER} is not usable: {exc}")
    yield f"postgresql+asyncpg://{PG_SERVER}/{name}"
    _run_async(lambda: pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        directory: Path = request.getfixturevalue("sqlite_dir")
        return f"sqlite+aiosqlite:///{directory / secrets.token_hex(6)}" + ".db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    s = open_store(store_url)
    await s.migrate()
    if s.dialect == "postgresql":
        names = ", ".join(t.name for t in tables.metadata.sorted_tables)
        async with s.engine.begin() as conn:
            # The audit log refuses TRUNCATE by trigger (append-only); a test's fresh start is the one exception.
            await conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
            await conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    try:
        yield s
    finally:
        await s.close()
