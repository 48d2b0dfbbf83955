"""A model may be named ``provider/model`` in a gateway request, as it is named everywhere else in Godel.

The case a user hit: a key made with ``godel key create --models scripted/scripted-model`` (``POST /api/v1/keys``,
what the CLI sends) refused a request for ``scripted/scripted-model``. Driven end to end: the official OpenAI SDK
against the real server's ``/proxy/v1``, in front of the scripted model, which records the model it was asked for.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from godel.gateway.names import ModelName, readings, upstream_path
from tests.gateway.conftest import MODEL

HELLO = [{"text": "Hello from upstream.", "output_tokens": 7}]
QUALIFIED = f"scripted/{MODEL}"
ASK = [{"role": "user", "content": "hi"}]


async def create_key(s: Any, models: list[str]) -> str:
    async with httpx.AsyncClient(base_url=s.url, headers=s.headers) as api:
        r = await api.post("/api/v1/keys", json={"scope": "user", "id": "alice", "models": models})
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["key"])


async def test_a_key_for_provider_model_serves_a_request_naming_it_so(stack: Any) -> None:
    async with stack(HELLO) as s:
        key = await create_key(s, [QUALIFIED])
        client = openai.AsyncOpenAI(base_url=s.openai_base, api_key=key, max_retries=0)
        reply = await client.chat.completions.create(model=QUALIFIED, messages=ASK)
        assert reply.choices[0].message.content == "Hello from upstream."
        stream = await client.chat.completions.create(model=QUALIFIED, messages=ASK, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "Hello from upstream."
        # The bare id keeps working with the same key.
        bare = await client.chat.completions.create(model=MODEL, messages=ASK)
        assert bare.choices[0].message.content == "Hello from upstream."
        # The provider was asked for its own id, never for Godel's qualified name.
        assert [r.model for r in s.model.requests] == [MODEL] * 3
        records = await s.records()
        assert [(r.provider, r.model, r.status_code, r.complete) for r in records] == [
            ("scripted", MODEL, 200, True)
        ] * 3
        assert records[1].output_tokens == 7  # the streamed answer was metered too


async def test_a_qualified_name_picks_its_provider_and_the_key_still_decides(stack: Any) -> None:
    async with stack(HELLO) as s:
        key = await create_key(s, [QUALIFIED])
        client = openai.AsyncOpenAI(base_url=s.openai_base, api_key=key, max_retries=0)
        # Another provider serving the same id is not this key's.
        with pytest.raises(openai.NotFoundError, match="not available to this key"):
            await client.chat.completions.create(model=f"scripted-anthropic/{MODEL}", messages=ASK)
        with pytest.raises(openai.NotFoundError, match="not available to this key"):
            await client.chat.completions.create(model=f"nowhere/{MODEL}", messages=ASK)
        # A key for every model: the qualified name still chooses the provider, and its wire API must match.
        every = openai.AsyncOpenAI(base_url=s.openai_base, api_key=await s.key(), max_retries=0)
        with pytest.raises(openai.BadRequestError, match="served here over anthropic"):
            await every.chat.completions.create(model=f"scripted-anthropic/{MODEL}", messages=ASK)
        assert s.model.requests == []  # nothing refused reached the provider


async def test_gemini_names_the_qualified_model_in_its_path(stack: Any) -> None:
    async with stack([{"text": "Hello.", "output_tokens": 3}]) as s:
        key = await create_key(s, [f"scripted-gemini/{MODEL}"])
        contents = [{"role": "user", "parts": [{"text": "hi"}]}]
        async with httpx.AsyncClient() as client:
            r = await client.post(
                s.gemini_url("generateContent", f"scripted-gemini/{MODEL}"),
                json={"contents": contents},
                headers={"x-goog-api-key": key},
            )
        assert r.status_code == 200, r.text
        assert [(q.model, q.path) for q in s.model.requests] == [(MODEL, f"/v1beta/models/{MODEL}:generateContent")]


def test_readings_prefer_the_literal_id_and_qualify_only_configured_providers() -> None:
    providers = {"scripted", "openrouter"}
    assert readings("gpt-5", providers) == [ModelName(None, "gpt-5")]
    # An id with a slash whose head is no provider is only an id.
    assert readings("meta-llama/Llama-3", providers) == [ModelName(None, "meta-llama/Llama-3")]
    assert readings("openrouter/meta-llama/Llama-3", providers) == [
        ModelName(None, "openrouter/meta-llama/Llama-3"),
        ModelName("openrouter", "meta-llama/Llama-3"),
    ]
    assert readings("scripted/", providers) == [ModelName(None, "scripted/")]
    assert upstream_path("models/g/m:generateContent", "g/m", "m") == "models/m:generateContent"
    assert upstream_path("models/m:countTokens", "m", "m") == "models/m:countTokens"
