"""Policies through the real gateway: redaction reaches the provider, the audit log has the bodies, and a failing
provider's circuit opens (503 + Retry-After) while another provider of the same model keeps serving."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from godel.providers.config import ProviderConfig
from godel.testing import ScriptedModel
from tests.gateway.conftest import MODEL

HELLO = [{"text": "Hello.", "output_tokens": 3}]


async def test_redaction_and_audit_log(stack: Any) -> None:
    async with stack(HELLO, gateway_redact_pii=True, gateway_audit_bodies=True) as s:
        client = openai.AsyncOpenAI(base_url=s.openai_base, api_key=await s.key(), max_retries=0)
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "mail carol@example.com the card 4111111111111111"}]
        )
        sent = json.dumps(s.model.requests[-1].body)
        assert "carol@example.com" not in sent and "4111111111111111" not in sent
        assert "[redacted-email]" in sent and "[redacted-card]" in sent
        await s.records()
        (log,) = list((s.plane.settings.home / "audit").glob("gateway-*.jsonl"))
        (entry,) = [json.loads(line) for line in log.read_text().splitlines()]
        assert entry["status"] == 200 and entry["provider"] == "scripted" and entry["scope"] == "user:alice"
        assert "[redacted-email]" in json.dumps(entry["request"]) and "Hello." in entry["response"]


async def test_a_failing_provider_is_routed_around_then_refused_fast(stack: Any) -> None:
    async with stack([{"error": {"status": 500, "message": "down"}}], gateway_breaker_failures=2) as s:
        client = openai.AsyncOpenAI(base_url=s.openai_base, api_key=await s.key(), max_retries=0)
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        sent = len(s.model.requests)
        with pytest.raises(openai.APIStatusError, match="keeps failing") as info:
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert info.value.status_code == 503 and int(info.value.response.headers["retry-after"]) >= 1
        assert len(s.model.requests) == sent  # the open circuit kept it from the provider
        assert s.plane.gateway.breaker.state()["scripted"]["open"] is True

        # Another provider serving the same model over the same wire API takes over while the circuit is open.
        with ScriptedModel(HELLO) as backup:
            s.plane.gateway.providers["backup"] = ProviderConfig(
                kind="openai-chat", base_url=backup.base_url, models=[MODEL]
            )
            reply = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content == "Hello." and len(backup.requests) == 1
            assert len(s.model.requests) == sent
            (*_, last) = await s.records()
            assert last.provider == "backup" and last.status_code == 200


async def test_identical_non_streaming_requests_are_answered_from_the_cache(stack: Any) -> None:
    async with stack(HELLO, gateway_cache_seconds=60) as s:
        client = openai.AsyncOpenAI(base_url=s.openai_base, api_key=await s.key(), max_retries=0)
        ask = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        first = await client.chat.completions.with_raw_response.create(**ask)  # type: ignore[arg-type]
        second = await client.chat.completions.with_raw_response.create(**ask)  # type: ignore[arg-type]
        assert first.headers.get("x-godel-cache") is None and second.headers.get("x-godel-cache") == "hit"
        assert second.parse().choices[0].message.content == "Hello."
        assert len(s.model.requests) == 1  # the provider answered once
        other = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "other"}])
        assert other.choices[0].message.content == "Hello." and len(s.model.requests) == 2
        stream = await client.chat.completions.create(stream=True, **ask)  # type: ignore[call-overload]
        async for _ in stream:
            pass
        assert len(s.model.requests) == 3  # streams are never cached
        records = await s.records()
        hits = [r for r in records if r.error == "answered from the gateway's cache"]
        assert len(hits) == 1 and hits[0].output_tokens == 0 and hits[0].cost_usd is None
