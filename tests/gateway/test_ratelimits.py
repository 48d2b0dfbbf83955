"""Rate limits at the gateway: 429 with Retry-After in the caller's dialect, shown on the agent, and recovery."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import make_repo
from tests.gateway.conftest import MODEL

HELLO = [{"text": "Hello.", "output_tokens": 3}]


async def test_requests_per_minute_per_key_gives_429_with_retry_after(stack: Any) -> None:
    async with stack(HELLO, rate_limits={"key": {"requests_per_minute": 2}}) as s:
        client = openai.AsyncOpenAI(base_url=s.openai_base, api_key=await s.key(), max_retries=0)
        for _ in range(2):
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.RateLimitError, match="over its 2 requests per minute") as info:
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert 1 <= int(info.value.response.headers["retry-after"]) <= 60
        # another key has its own window
        other = openai.AsyncOpenAI(base_url=s.openai_base, api_key=await s.key("user", "bob"), max_retries=0)
        await other.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert len(await s.records()) == 3  # the refused request was neither forwarded nor metered


async def test_a_models_limit_and_a_keys_own_limit(stack: Any) -> None:
    limits = {"scripted-anthropic/scripted-model": {"requests_per_minute": 1}}
    async with stack(HELLO, rate_limits=limits) as s, httpx.AsyncClient(base_url=s.url, headers=s.headers) as api:
        client = anthropic.AsyncAnthropic(base_url=s.anthropic_base, api_key=await s.key(), max_retries=0)
        await client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(anthropic.RateLimitError, match="model scripted-anthropic/scripted-model"):
            await client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        # the OpenAI route to the same model id is another provider: not limited
        created = await api.post(
            "/api/v1/keys", json={"scope": "user", "id": "carol", "limits": {"tokens_per_minute": 5}}
        )
        assert created.status_code == 201 and created.json()["data"]["limits"] == {"tokens_per_minute": 5}
        own = openai.AsyncOpenAI(base_url=s.openai_base, api_key=created.json()["data"]["key"], max_retries=0)
        await own.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])  # 13 tokens
        with pytest.raises(openai.RateLimitError, match="over its 5 tokens per minute"):
            await own.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        bad = await api.post("/api/v1/keys", json={"scope": "user", "id": "x", "limits": {"max_parallel": 0}})
        assert bad.status_code == 400


async def test_parallel_limit_recovers_and_is_shown_on_the_agent(stack: Any, fast_tmp: Any) -> None:
    slow = [{"text": "Hello.", "delay": 1.0}]
    async with (
        stack(slow, rate_limits={"key": {"max_parallel": 1}}) as s,
        httpx.AsyncClient(base_url=s.url, headers=s.headers) as api,
    ):
        agent = await s.plane.spawn(
            __import__("godel.scheduler.requests", fromlist=["SpawnRequest"]).SpawnRequest(
                task="t", repo=str(make_repo(fast_tmp / "repo")), command="sleep 30"
            )
        )
        key = await s.key("agent", agent.id)
        client = openai.AsyncOpenAI(base_url=s.openai_base, api_key=key, max_retries=0)
        first = asyncio.create_task(
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        )
        while not s.model.requests:  # noqa: ASYNC110 (the first request is at the upstream)
            await asyncio.sleep(0.02)
        with pytest.raises(openai.RateLimitError, match="already has 1 requests in flight"):
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        shown = (await api.get(f"/api/v1/agents/{agent.id}")).json()["data"]["rateLimited"]
        assert shown and "in flight" in shown["reason"] and shown["until"]
        await first  # once it is done, the next one passes
        reply = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "Hello."
        await s.plane.kill(agent.id)
