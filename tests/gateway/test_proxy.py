"""The gateway with the official OpenAI and Anthropic SDKs as clients, in front of the scripted model."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.gateway.conftest import MODEL, UPSTREAM_KEY

HELLO = [{"text": "Hello from upstream.", "output_tokens": 7}]


async def test_openai_chat_stream_and_not_is_forwarded_and_metered(stack: Any) -> None:
    async with stack(HELLO) as s:
        key = await s.key()
        client = openai.AsyncOpenAI(base_url=s.openai_base, api_key=key, max_retries=0)
        reply = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "Hello from upstream."
        chunks = []
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )  # no include_usage asked: the gateway adds it to meter the stream
        async for chunk in stream:
            chunks.append(chunk)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Hello from upstream."
        records = await s.records()
        assert [(r.wire, r.stream, r.status_code, r.complete) for r in records] == [
            ("openai-chat", False, 200, True),
            ("openai-chat", True, 200, True),
        ]
        assert sum(r.output_tokens for r in records) == s.model.usage_reported.output_tokens == 14
        assert sum(r.input_tokens for r in records) == s.model.usage_reported.input_tokens
        assert all(r.user_name == "alice" and r.provider == "scripted" for r in records)
        # the provider saw its own key, never the virtual one
        assert s.model.credentials == [f"Bearer {UPSTREAM_KEY}"] * 2


async def test_openai_responses_stream_is_metered_from_response_completed(stack: Any) -> None:
    async with stack(HELLO) as s:
        client = openai.AsyncOpenAI(base_url=s.openai_base, api_key=await s.key(), max_retries=0)
        stream = await client.responses.create(model=MODEL, input="hi", stream=True)
        kinds = [event.type async for event in stream]
        assert kinds[-1] == "response.completed"
        (record,) = await s.records()
        assert (record.wire, record.provider, record.complete) == ("openai-responses", "scripted-responses", True)
        assert record.output_tokens == 7 and record.input_tokens == s.model.usage_reported.input_tokens


async def test_anthropic_messages_stream_and_not_and_count_tokens(stack: Any) -> None:
    async with stack(HELLO) as s:
        client = anthropic.AsyncAnthropic(base_url=s.anthropic_base, api_key=await s.key(), max_retries=0)
        msg = await client.messages.create(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}])
        assert msg.content[0].text == "Hello from upstream."  # type: ignore[union-attr]
        async with client.messages.stream(
            model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            assert await stream.get_final_text() == "Hello from upstream."
        counted = await client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert counted.input_tokens > 0
        records = await s.records()  # the token count is free and not recorded
        assert [(r.wire, r.stream, r.complete) for r in records] == [
            ("anthropic", False, True),
            ("anthropic", True, True),
        ]
        assert sum(r.output_tokens for r in records) == 14
        assert s.model.credentials == [UPSTREAM_KEY] * 3


async def test_refusals_answer_in_the_callers_dialect(stack: Any) -> None:
    async with stack(HELLO) as s:
        bad = openai.AsyncOpenAI(base_url=s.openai_base, api_key="godel_vk_nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError, match="unknown API key"):
            await bad.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        bad_a = anthropic.AsyncAnthropic(base_url=s.anthropic_base, api_key="godel_vk_nope", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError, match="unknown API key"):
            await bad_a.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}])

        key = await s.key(models=["scripted/scripted-model"])
        client = openai.AsyncOpenAI(base_url=s.openai_base, api_key=key, max_retries=0)
        with pytest.raises(openai.NotFoundError, match="not available to this key"):
            await client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.BadRequestError, match="not over the openai-responses API"):
            await client.responses.create(model=MODEL, input="hi")
        async with httpx.AsyncClient() as h:
            junk = await h.post(f"{s.openai_base}/chat/completions", content=b"{not json",
                                headers={"authorization": f"Bearer {key}"})  # fmt: skip
            assert junk.status_code == 400 and junk.json()["error"]["message"] == "the request body is not valid JSON"
            a_junk = await h.post(f"{s.anthropic_base}/v1/messages", content=b"[]", headers={"x-api-key": key})
            assert a_junk.status_code == 400 and a_junk.json()["type"] == "error"
            models = await h.get(f"{s.openai_base}/models", headers={"authorization": f"Bearer {key}"})
            assert [m["id"] for m in models.json()["data"]] == [MODEL]

        _, revoked = await s.plane.gateway.issue("user", "bob")
        text, revoked = await s.plane.gateway.issue("user", "carol")
        await s.plane.store.revoke_keys(s.plane.clock.now(), key_id=revoked.id)
        gone = openai.AsyncOpenAI(base_url=s.openai_base, api_key=text, max_retries=0)
        with pytest.raises(openai.AuthenticationError, match="revoked"):
            await gone.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert await s.records() == []  # nothing refused was forwarded or metered
        assert s.model.requests == []


async def test_upstream_errors_and_a_dead_upstream_come_back_in_dialect(stack: Any) -> None:
    async with stack([{"error": {"status": 500, "message": "upstream broke"}}]) as s:
        client = openai.AsyncOpenAI(base_url=s.openai_base, api_key=await s.key(), max_retries=0)
        with pytest.raises(openai.InternalServerError, match="upstream broke"):
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        (record,) = await s.records()
        assert record.status_code == 500 and record.output_tokens == 0 and "upstream broke" in (record.error or "")
    async with stack(HELLO, upstream_down=True) as s:
        client_a = anthropic.AsyncAnthropic(base_url=s.anthropic_base, api_key=await s.key(), max_retries=0)
        with pytest.raises(anthropic.APIStatusError, match="unreachable") as info:
            await client_a.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        assert info.value.status_code == 502
        (record,) = await s.records()
        assert record.status_code == 502 and not record.complete


async def test_keys_and_usage_api(stack: Any) -> None:
    async with stack(HELLO) as s, httpx.AsyncClient(base_url=s.url, headers=s.headers) as api:
        created = await api.post(
            "/api/v1/keys", json={"scope": "team", "id": "t1", "models": ["scripted/scripted-model"]}
        )
        assert created.status_code == 201, created.text
        key = created.json()["data"]["key"]
        assert key.startswith("godel_vk_") and created.json()["data"]["prefix"] == key[:15]
        unknown = await api.post("/api/v1/keys", json={"scope": "team", "id": "t1", "models": ["nope/x"]})
        assert unknown.status_code == 400 and unknown.json()["error"]["details"]["fields"][0]["field"] == "models"
        listed = (await api.get("/api/v1/keys", params={"scope": "team"})).json()["data"]["items"]
        assert [k["scopeId"] for k in listed] == ["t1"] and "key" not in listed[0]  # the text is never shown again

        client = openai.AsyncOpenAI(base_url=s.openai_base, api_key=key, max_retries=0)
        for _ in range(2):
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        await s.records()
        by_team = (await api.get("/api/v1/usage", params={"by": "team"})).json()["data"]
        assert by_team["items"][0]["key"] == "t1" and by_team["items"][0]["requests"] == 2
        assert by_team["items"][0]["outputTokens"] == 14
        by_day = (await api.get("/api/v1/usage", params={"by": "day"})).json()["data"]["items"]
        assert len(by_day) == 1 and by_day[0]["requests"] == 2

        revoked = await api.delete(f"/api/v1/keys/{created.json()['data']['id']}")
        assert revoked.status_code == 200 and revoked.json()["data"]["revokedAt"]
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        missing = await api.delete("/api/v1/keys/nope")
        assert missing.status_code == 404
