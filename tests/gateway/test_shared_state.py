"""Two Godel servers on one PostgreSQL database and one Redis (``GODEL_REDIS_URL``): a key's rate limit and a
budget are enforced across both, not once per server. Real PostgreSQL, real Redis, real HTTP to a scripted model."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa

from godel.api.app import create_app
from godel.gateway.types import Upstream
from godel.scheduler.plane import ControlPlane
from godel.settings import Settings
from godel.testing import ScriptedModel
from tests.gateway.conftest import MODEL
from tests.pg import PG_SERVER, pg_admin

pytestmark = pytest.mark.postgres
# A Redis database of its own, flushed: one per pytest-xdist worker (gw0 → 14, gw1 → 13, …), so two workers never
# flush each other's state.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
REDIS = os.environ.get("GODEL_TEST_REDIS", f"redis://127.0.0.1:6379/{14 - _WORKER % 10}")
HELLO = [{"text": "Hello.", "output_tokens": 40}]
PRICES = {f"scripted/{MODEL}": {"input_per_mtok": 100.0, "output_per_mtok": 100.0}}


@pytest.fixture
async def database() -> AsyncIterator[str]:
    name = f"godel_shared_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        await pg_admin(f'CREATE DATABASE "{name}"')
    except OSError as exc:
        pytest.skip(f"PostgreSQL at {PG_SERVER} is not usable: {exc}")
    try:
        yield f"postgresql+asyncpg://{PG_SERVER}/{name}"
    finally:
        await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    client = aioredis.Redis.from_url(REDIS)
    try:
        await client.flushdb()
    except OSError as exc:
        pytest.skip(f"Redis at {REDIS} is not usable: {exc}")
    try:
        yield REDIS
    finally:
        await client.flushdb()
        await client.aclose()


@asynccontextmanager
async def servers(home: Path, database: str, redis_url: str, upstream: str, **overrides: Any) -> AsyncIterator[Any]:
    """Two control planes (two servers) on one database and one Redis, each behind its own app and client."""
    providers = {"scripted": {"kind": "openai-chat", "base_url": upstream, "models": [MODEL]}}
    async with AsyncExitStack() as stack:
        clients = []
        planes = []
        for i in range(2):
            settings = Settings(home=home / f"server-{i}", database_url=database, redis_url=redis_url,
                                providers=providers, prices=PRICES, node_name=f"server-{i}", **overrides)  # fmt: skip
            plane = ControlPlane(settings)
            await plane.start(background=False)
            stack.push_async_callback(plane.stop)
            planes.append(plane)
            transport = httpx.ASGITransport(app=create_app(plane=plane))
            clients.append(
                await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://localhost"))
            )
        yield planes, clients


async def chat(client: httpx.AsyncClient, key: str) -> int:
    body = {"model": MODEL, "max_tokens": 40, "messages": [{"role": "user", "content": "hi"}]}
    r = await client.post("/proxy/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
    return r.status_code


async def test_a_keys_rate_limit_holds_across_two_servers(fast_tmp: Path, database: str, redis_url: str) -> None:
    with ScriptedModel(HELLO) as model:
        async with servers(fast_tmp, database, redis_url, model.base_url,
                           rate_limits={"key": {"requests_per_minute": 3}}) as (planes, clients):  # fmt: skip
            key, _ = await planes[0].gateway.issue("user", "alice")
            statuses = [await chat(clients[i % 2], key) for i in range(5)]  # alternating servers
            assert statuses == [200, 200, 200, 429, 429]  # 3 a minute in all, not 3 per server
            assert len(model.requests) == 3


async def test_a_budget_holds_across_two_servers_under_a_burst(fast_tmp: Path, database: str, redis_url: str) -> None:
    with ScriptedModel(HELLO) as model:
        async with servers(fast_tmp, database, redis_url, model.base_url) as (planes, clients):
            key, _ = await planes[0].gateway.issue("user", "alice")
            upstream = Upstream("scripted", planes[0].gateway.providers["scripted"], MODEL, model.base_url, {})
            one_estimate = planes[0].gateway.budgets.estimate(
                upstream, {"model": MODEL, "max_tokens": 40, "messages": [{"role": "user", "content": "hi"}]}
            )
            cap = one_estimate * 10.5
            await planes[0].budgets.set("user", "alice", cap, "total")
            statuses = await asyncio.gather(*(chat(clients[i % 2], key) for i in range(60)))
            for p in planes:
                await p.gateway.settle()
            records = await planes[0].store.usage_records()
            spent = sum(r.cost_usd or 0 for r in records)
            one_request = max(r.cost_usd or 0 for r in records)
            # Together the two servers let through what the budget covers, and never more than one request beyond.
            assert statuses.count(200) == len(records) == len(model.requests) >= 5
            assert statuses.count(402) == 60 - len(records)
            assert spent <= cap + one_request, (spent, cap)
            async with planes[0].store.engine.connect() as conn:  # every (durable) reservation released
                assert (await conn.execute(sa.text("SELECT count(*) FROM budget_reservations"))).scalar_one() == 0
