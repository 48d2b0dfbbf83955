"""The gateway as a chain of ``(exchange, call_next)`` policies: users' own policies loaded from the settings, a
request that fails on one provider retried on the next before the caller sees it, and the Gemini dialect."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest

from godel.gateway.exchange import CallNext, Exchange, Reply, compose
from godel.gateway.service import load_policy
from godel.providers.config import ProviderConfig
from godel.testing import ScriptedModel
from tests.gateway import custom_policies
from tests.gateway.conftest import MODEL, UPSTREAM_KEY

HELLO = [{"text": "Hello.", "output_tokens": 3}]
FILTERS = ["tests.gateway.custom_policies:no_passwords", "tests.gateway.custom_policies:tag_requests"]


async def test_users_policies_refuse_and_rewrite_in_the_callers_dialect(stack: Any) -> None:
    custom_policies.SEEN.clear()
    async with stack(HELLO, gateway_policies=FILTERS) as s:
        key = await s.key()
        chat = openai.AsyncOpenAI(base_url=s.openai_base, api_key=key, max_retries=0)
        with pytest.raises(openai.BadRequestError, match="would send a password"):
            await chat.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "my Password: x"}])
        claude = anthropic.AsyncAnthropic(base_url=s.anthropic_base, api_key=key, max_retries=0)
        with pytest.raises(anthropic.BadRequestError, match="would send a password") as info:
            await claude.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "password"}])
        assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        assert s.model.requests == [] and await s.records() == []  # refused before anything was sent or spent

        reply = await chat.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "Hello."
        assert s.model.requests[-1].body["user"] == "godel:alice"  # the rewritten body reached the provider
        stream = await chat.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for _ in stream:
            pass
        await s.records()
        assert custom_policies.SEEN == [(200, 3, True), (200, 3, True)]  # each end seen once, with its usage


async def test_a_provider_failing_before_it_answers_is_replaced_by_the_next_one(stack: Any) -> None:
    async with stack([{"error": {"status": 503, "message": "overloaded"}}], gateway_breaker_failures=5) as s:
        with ScriptedModel(HELLO) as backup:
            s.plane.gateway.providers["backup"] = ProviderConfig(
                kind="openai-chat", base_url=backup.base_url, models=[MODEL]
            )
            client = openai.AsyncOpenAI(base_url=s.openai_base, api_key=await s.key(), max_retries=0)
            reply = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content == "Hello."  # the caller never saw the 503
            assert len(s.model.requests) == 1 and len(backup.requests) == 1
            (record,) = await s.records()  # one record: the answer that was given
            assert record.provider == "backup" and record.status_code == 200 and record.output_tokens == 3
            assert s.plane.gateway.breaker.state()["scripted"]["failures"] == 1


async def test_gemini_through_the_gateway(stack: Any) -> None:
    contents = [{"role": "user", "parts": [{"text": "hi"}]}]
    async with stack(HELLO) as s:
        key = await s.key()
        async with httpx.AsyncClient(timeout=10) as client:
            whole = await client.post(
                s.gemini_url("generateContent"), json={"contents": contents}, headers={"x-goog-api-key": key}
            )
            assert whole.status_code == 200, whole.text
            assert whole.json()["candidates"][0]["content"]["parts"][0]["text"] == "Hello."
            # Streamed, with the key in the query string as Gemini clients may send it: it is not passed on.
            lines = []
            async with client.stream(
                "POST", s.gemini_url("streamGenerateContent") + f"?alt=sse&key={key}", json={"contents": contents}
            ) as streamed:
                assert streamed.status_code == 200
                lines = [line async for line in streamed.aiter_lines() if line.startswith("data: ")]
            assert json.loads(lines[-1][6:])["usageMetadata"]["candidatesTokenCount"] == 3
            assert s.model.requests[-1].query == "alt=sse" and s.model.credentials[-1] == UPSTREAM_KEY
            counted = await client.post(
                s.gemini_url("countTokens"), json={"contents": contents}, headers={"x-goog-api-key": key}
            )
            assert counted.status_code == 200 and counted.json()["totalTokens"] > 0

            # Refusals in Gemini's own error shape.
            bad_key = await client.post(
                s.gemini_url("generateContent"), json={"contents": contents}, headers={"x-goog-api-key": "nope"}
            )
            assert bad_key.status_code == 401 and bad_key.json()["error"]["status"] == "UNAUTHENTICATED"
            unknown = await client.post(
                s.gemini_url("generateContent", "no-such-model"), json={"contents": contents},
                headers={"x-goog-api-key": key},
            )  # fmt: skip
            assert unknown.status_code == 404 and unknown.json()["error"]["status"] == "NOT_FOUND"
            no_method = await client.post(
                f"{s.url}/proxy/v1beta/models/{MODEL}:explode", json={}, headers={"x-goog-api-key": key}
            )
            assert no_method.status_code == 404 and no_method.json()["error"]["code"] == 404
        records = await s.records()
        assert [(r.provider, r.stream, r.status_code, r.output_tokens, r.complete) for r in records] == [
            ("scripted-gemini", False, 200, 3, True),
            ("scripted-gemini", True, 200, 3, True),
        ]  # the token count is free: not recorded
        assert sum(r.input_tokens for r in records) == s.model.usage_reported.input_tokens


async def test_bad_requests_get_clear_errors(stack: Any) -> None:
    async with stack(HELLO) as s:
        key = await s.key()
        async with httpx.AsyncClient(timeout=10) as client:
            auth = {"authorization": f"Bearer {key}"}
            for body in (b"{", b'{"model": NaN}', b"[1]", b'{"a": "\\ud800"}'):
                r = await client.post(f"{s.openai_base}/chat/completions", content=body, headers=auth)
                assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", body
            r = await client.get(f"{s.openai_base}/chat/completions", headers=auth)
            assert r.status_code == 405
            r = await client.post(f"{s.openai_base}/embeddings", json={"model": MODEL}, headers=auth)
            assert r.status_code == 404 and "no endpoint" in r.json()["error"]["message"]
        assert s.model.requests == []


async def test_ends_run_innermost_first_and_a_failing_one_does_not_stop_the_others() -> None:
    order: list[str] = []

    def layer(name: str) -> Any:
        async def policy(exchange: Exchange, call_next: CallNext) -> Reply:
            order.append(f"{name} in")
            reply = await call_next(exchange)

            def end(_: Exchange) -> None:
                order.append(f"{name} end")
                if name == "inner":
                    raise RuntimeError("a broken policy")

            exchange.on_end(end)
            return reply

        return policy

    async def provider(exchange: Exchange) -> Reply:
        order.append("provider")
        return Reply(200)

    chain = compose([layer("outer"), layer("inner")], provider)
    exchange = Exchange(wire="openai-chat", path="chat/completions", key=None, model="m", body={}, headers={},
                        stream=False)  # type: ignore[arg-type]  # fmt: skip
    assert (await chain(exchange)).status == 200
    await exchange.end()
    await exchange.end()  # a second end is a no-op
    assert order == ["outer in", "inner in", "provider", "inner end", "outer end"]


def test_a_bad_policy_path_is_refused_with_its_reason() -> None:
    with pytest.raises(ValueError, match=r"expected .package\.module:factory."):
        load_policy("no_colon")
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_policy("tests.gateway.custom_policies:missing")
    assert load_policy(FILTERS[0]) is custom_policies.no_passwords


async def test_a_policy_raising_after_the_provider_answered_releases_and_records(stack: Any) -> None:
    prices = {f"scripted/{MODEL}": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}}
    limits = {"key": {"max_parallel": 1}}
    policies = ["tests.gateway.custom_policies:refuse_after"]
    async with stack(HELLO, gateway_policies=policies, rate_limits=limits, prices=prices) as s:
        await s.plane.budgets.set("user", "alice", 10.0, "total")
        chat = openai.AsyncOpenAI(base_url=s.openai_base, api_key=await s.key(), max_retries=0)
        ask = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
        with pytest.raises(openai.PermissionDeniedError, match="not allowed"):
            await chat.chat.completions.create(user="blocked", **ask)  # type: ignore[call-overload]
        with pytest.raises(openai.InternalServerError, match="the gateway failed"):  # a bug: an error, in dialect
            await chat.chat.completions.create(user="boom", **ask)  # type: ignore[call-overload]
        records = await s.records()
        assert len(s.model.requests) == 2 and len(records) == 2  # the provider answered (and bills) both
        assert await s.plane.gateway.budgets.reservations() == {}  # both reservations released
        # The one slot of this key is free again: neither refusal kept it.
        reply = await chat.chat.completions.create(**ask)  # type: ignore[call-overload]
        assert reply.choices[0].message.content == "Hello."


async def test_credentials_in_the_query_string_never_reach_the_provider(stack: Any) -> None:
    async with stack(HELLO) as s:
        key = await s.key()
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(f"{s.openai_base}/chat/completions?key={key}&api-version=2024-10-21",
                                  json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
                                  headers={"authorization": f"Bearer {key}"})  # fmt: skip
            assert r.status_code == 200, r.text
        (sent,) = s.model.requests
        assert key not in sent.query and sent.query == "api-version=2024-10-21"  # other parameters pass


async def test_a_provider_without_its_key_is_skipped_for_one_that_has_it(stack: Any) -> None:
    async with stack(HELLO) as s:
        with ScriptedModel(HELLO) as backup:
            gateway = s.plane.gateway
            first = gateway.providers["scripted"]
            gateway.providers["scripted"] = first.model_copy(update={"api_key_env": "GODEL_TEST_NO_SUCH_KEY"})
            gateway.providers["backup"] = ProviderConfig(kind="openai-chat", base_url=backup.base_url, models=[MODEL])
            client = openai.AsyncOpenAI(base_url=s.openai_base, api_key=await s.key(), max_retries=0)
            reply = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content == "Hello." and len(backup.requests) == 1
            del gateway.providers["backup"]
            with pytest.raises(openai.APIStatusError, match="has no key in the server's environment") as info:
                await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
            assert info.value.status_code == 502
