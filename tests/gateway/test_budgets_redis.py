"""Budgets with a shared Redis (``GODEL_REDIS_URL``) fail closed: Redis down refuses budgeted requests with a 503
and ``Retry-After`` in the caller's dialect and makes ``/health/ready`` say so; Redis restarted with its data lost
in the middle of a burst loses no reservation. Each test runs its own redis-server (never the machine's), on the
machine's PostgreSQL, over real HTTP to the scripted model."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from godel.gateway.types import Upstream
from tests.e2e.serverproc import free_port
from tests.gateway.conftest import MODEL
from tests.gateway.test_shared_state import database  # noqa: F401  (the fixture: a PostgreSQL database of its own)

pytestmark = pytest.mark.postgres
PRICES = {
    f"{p}/{MODEL}": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0} for p in ("scripted", "scripted-anthropic")
}
ASK = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


class RedisServer:
    """A redis-server of the test's own, without persistence: a restart forgets everything."""

    def __init__(self, home: Path) -> None:
        self.port = free_port()
        self.home = home
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.home)]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)  # polling the new process's socket
        client.close()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def own_redis(fast_tmp: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(fast_tmp / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def post(http: httpx.AsyncClient, path: str, key: str, body: dict[str, Any] | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}", "x-api-key": key, "anthropic-version": "2023-06-01"}
    return await http.post(path, json=body or ASK, headers=headers)


async def test_redis_down_refuses_budgeted_requests_with_503_and_ready_says_so(
    stack: Any,
    database: str,  # noqa: F811
    own_redis: RedisServer,
) -> None:
    async with stack([{"text": "Hello.", "output_tokens": 7}], prices=PRICES, database_url=database,
                     redis_url=own_redis.url) as s:  # fmt: skip
        await s.plane.budgets.set("user", "alice", 10.0, "total")
        alice, bob = await s.key("user", "alice"), await s.key("user", "bob")
        async with httpx.AsyncClient(base_url=s.url, timeout=30) as http:
            assert (await post(http, "/proxy/v1/chat/completions", alice)).status_code == 200
            assert (await http.get("/health/ready")).status_code == 200

            own_redis.kill()
            refused = await post(http, "/proxy/v1/chat/completions", alice)
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "2"
            assert refused.json()["error"]["code"] == "service_unavailable"  # OpenAI's shape
            assert "Redis" in refused.json()["error"]["message"]
            claude = await post(http, "/proxy/v1/messages", alice)
            assert claude.status_code == 503 and claude.headers["retry-after"] == "2", claude.text
            assert claude.json()["type"] == "error" and claude.json()["error"]["type"] == "overloaded_error"
            # Without a budget nothing needs Redis: bob's request passes.
            assert (await post(http, "/proxy/v1/chat/completions", bob)).status_code == 200
            ready = await http.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json()["error"]["code"] == "SHARED_STATE_UNAVAILABLE"
            assert ready.json()["error"]["details"]["status"] == "degraded"
            detailed = (await http.get("/health/detailed")).json()["data"]
            assert detailed["status"] == "degraded" and detailed["gatewaySharedState"]["status"] == "down"

            own_redis.start()  # back (empty): budgeted requests pass again, and ready says so
            assert (await post(http, "/proxy/v1/chat/completions", alice)).status_code == 200
            assert (await http.get("/health/ready")).status_code == 200
        records = await s.records()
        assert len(records) == 3 and len(s.model.requests) == 3  # the refused ones never reached the provider


async def test_a_redis_restart_mid_burst_loses_no_reservation(
    stack: Any,
    database: str,  # noqa: F811
    own_redis: RedisServer,
) -> None:
    slow = [{"text": "Hello.", "output_tokens": 10, "delay": 2.0}]  # the first wave is still in flight
    async with stack(slow, prices=PRICES, database_url=database, redis_url=own_redis.url) as s:
        gateway = s.plane.gateway
        estimate = gateway.budgets.estimate(Upstream("scripted", gateway.providers["scripted"], MODEL, "", {}), ASK)
        assert estimate is not None
        cap = estimate * 10.5  # ten requests' estimates fit
        await s.plane.budgets.set("user", "alice", cap, "total")
        alice = await s.key("user", "alice")
        async with httpx.AsyncClient(base_url=s.url, timeout=60, limits=httpx.Limits(max_connections=200)) as http:
            first = [asyncio.create_task(post(http, "/proxy/v1/chat/completions", alice)) for _ in range(10)]
            deadline = time.monotonic() + 30
            while await reservations(s) < 10:
                assert time.monotonic() < deadline, "the first wave was not admitted"
                await asyncio.sleep(0.02)  # polling the database for the reservations
            own_redis.kill()
            own_redis.start()  # with nothing in it
            second = await asyncio.gather(*(post(http, "/proxy/v1/chat/completions", alice) for _ in range(30)))
            first_done = await asyncio.gather(*first)
        assert [r.status_code for r in first_done] == [200] * 10
        # The first wave still holds the budget: the second is refused while it is in flight (with the reservations
        # lost, ten more would pass at once); a few may pass on what the first wave's settlements left.
        assert {r.status_code for r in second} <= {200, 402} and [r.status_code for r in second].count(402) >= 20
        records = await s.records()
        spent = sum(r.cost_usd or 0 for r in records)
        one_request = max(r.cost_usd or 0 for r in records)
        assert spent <= cap + one_request, (spent, cap, len(records))
        assert await reservations(s) == 0


async def reservations(s: Any) -> int:
    async with s.plane.store.engine.connect() as conn:
        return int((await conn.execute(sa.text("SELECT count(*) FROM budget_reservations"))).scalar_one())


async def test_a_burst_with_redis_overspends_by_at_most_one_request(
    stack: Any,
    database: str,  # noqa: F811
    own_redis: RedisServer,
) -> None:
    async with stack([{"text": "Hello.", "output_tokens": 7}], prices=PRICES, database_url=database,
                     redis_url=own_redis.url) as s:  # fmt: skip
        cap = 0.2
        await s.plane.budgets.set("user", "alice", cap, "total")
        alice = await s.key("user", "alice")
        async with httpx.AsyncClient(base_url=s.url, timeout=60, limits=httpx.Limits(max_connections=200)) as http:
            replies = await asyncio.gather(*(post(http, "/proxy/v1/chat/completions", alice) for _ in range(100)))
            statuses = [r.status_code for r in replies]
            while (await post(http, "/proxy/v1/chat/completions", alice)).status_code == 200:
                pass  # one at a time until the budget says no
        records = await s.records()
        assert statuses.count(200) > 0 and set(statuses) == {200, 402}
        spent = sum(r.cost_usd or 0 for r in records)
        one_request = max(r.cost_usd or 0 for r in records)
        assert cap - 2 * one_request <= spent <= cap + one_request, (spent, cap)
        assert await reservations(s) == 0
