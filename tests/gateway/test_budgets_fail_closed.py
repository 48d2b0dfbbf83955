"""Budgets fail closed: a model without a price is refused under a budget (unless its provider opts in), an answer
without usage is charged its estimate, and the ledger keeps a burst within one request of the cap -- also when the
scope already has a long history. Real SQLite, real HTTP, the scripted model."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import anthropic
import openai
import pytest
from sqlalchemy import event as sa_event

from godel.core.clock import utcnow
from godel.core.models import UsageRecord
from godel.gateway.types import Upstream
from godel.providers.config import ProviderConfig
from tests.gateway.conftest import MODEL

HELLO = [{"text": "Hello.", "output_tokens": 7}]
PRICES = {f"scripted/{MODEL}": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}}  # $0.001 a token
ASK = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


def openai_client(s: Any, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=s.openai_base, api_key=key, max_retries=0)


async def test_an_unpriced_model_is_refused_under_a_budget_and_passes_without_one(stack: Any) -> None:
    async with stack(HELLO) as s:  # no [prices]: genai-prices does not know the scripted model
        await s.plane.budgets.set("user", "alice", 5.0, "total")
        alice = await s.key("user", "alice")
        with pytest.raises(openai.BadRequestError) as refused:
            await openai_client(s, alice).chat.completions.create(**ASK)  # type: ignore[call-overload]
        message = str(refused.value)
        assert refused.value.status_code == 400
        assert f'[prices."scripted/{MODEL}"] input_per_mtok' in message and "allow_unpriced = true" in message
        # In the caller's dialect: Anthropic's SDK reads its own error shape.
        claude = anthropic.AsyncAnthropic(base_url=s.anthropic_base, api_key=alice, max_retries=0)
        with pytest.raises(anthropic.BadRequestError) as also_refused:
            await claude.messages.create(**ASK)  # type: ignore[call-overload]
        assert also_refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        assert s.model.requests == []  # nothing reached the provider
        # Without a budget nothing changes: bob's request passes, metered without a cost.
        reply = await openai_client(s, await s.key("user", "bob")).chat.completions.create(**ASK)  # type: ignore[call-overload]
        assert reply.choices[0].message.content == "Hello."
        (record,) = await s.records()
        assert record.user_name == "bob" and record.cost_usd is None


async def test_a_provider_may_let_unpriced_models_through_a_budget(stack: Any) -> None:
    async with stack(HELLO, provider_options={"allow_unpriced": True}) as s:
        await s.plane.budgets.set("user", "alice", 5.0, "total")
        reply = await openai_client(s, await s.key("user", "alice")).chat.completions.create(**ASK)  # type: ignore[call-overload]
        assert reply.choices[0].message.content == "Hello."
        (record,) = await s.records()
        assert record.cost_usd is None and not record.cost_estimated
        assert await s.plane.gateway.budgets.reservations() == {}


async def test_an_answer_without_usage_is_charged_its_estimate(stack: Any) -> None:
    silent = {
        "turns": [{"text": "Hello."}],
        "usage": {"input_tokens_per_message": 0, "output_tokens": 0},
    }  # reports no tokens
    async with stack(silent, prices=PRICES) as s:
        config = s.plane.gateway.providers["scripted"]
        estimate = s.plane.gateway.budgets.estimate(Upstream("scripted", config, MODEL, "", {}), ASK)
        assert estimate is not None and estimate > 0
        cap = estimate * 2.5
        await s.plane.budgets.set("user", "alice", cap, "total")
        client = openai_client(s, await s.key("user", "alice"))
        statuses = []
        for _ in range(5):
            try:
                await client.chat.completions.create(**ASK)  # type: ignore[call-overload]
                statuses.append(200)
            except openai.APIStatusError as exc:
                statuses.append(exc.status_code)
        # Charged at $0, all five would pass (and then any number); at the estimate, two fit the cap.
        assert statuses == [200, 200, 402, 402, 402]
        records = await s.records()
        assert len(records) == 2
        assert all(r.cost_usd == pytest.approx(estimate) and r.cost_estimated for r in records)
        (budget,) = await s.plane.store.list_budgets(entity_id="alice")
        assert (await s.plane.budgets.status(budget))["spent"] == pytest.approx(2 * estimate)


async def test_an_error_answer_without_usage_costs_nothing(stack: Any) -> None:
    async with stack([{"error": {"status": 400, "message": "bad request"}}], prices=PRICES) as s:
        await s.plane.budgets.set("user", "alice", 1.0, "total")
        with pytest.raises(openai.BadRequestError):
            await openai_client(s, await s.key("user", "alice")).chat.completions.create(**ASK)  # type: ignore[call-overload]
        (record,) = await s.records()
        assert record.status_code == 400 and record.cost_usd is None and not record.cost_estimated


async def test_a_burst_stays_within_one_request_of_the_cap_after_a_long_history(stack: Any) -> None:
    async with stack(HELLO, prices=PRICES) as s:
        # 2,000 earlier requests of alice's ($2.00), yesterday and today: a daily budget counts today's only.
        now = utcnow()
        history = [
            UsageRecord(at=now - timedelta(days=1) if i % 2 else now, provider="scripted", model=MODEL,
                        wire="openai-chat", stream=False, status_code=200, cost_usd=0.001, user_name="alice")
            for i in range(2000)
        ]  # fmt: skip
        await s.plane.store.add_usages(history)
        if now.date() != (now + timedelta(seconds=30)).date():
            pytest.skip("too close to midnight UTC for a daily budget")
        cap = 1.0 + 0.2  # today's $1.00 is spent already
        budget = await s.plane.budgets.set("user", "alice", cap, "daily")
        assert (await s.plane.budgets.status(budget))["spent"] == pytest.approx(1.0)  # summed once, when set
        client = openai_client(s, await s.key("user", "alice"))

        async def one() -> int:
            try:
                await client.chat.completions.create(**ASK)  # type: ignore[call-overload]
                return 200
            except openai.APIStatusError as exc:
                return exc.status_code

        statuses = await asyncio.gather(*(one() for _ in range(100)))
        await s.records()  # every request settled
        records = [r for r in await s.plane.store.usage_records(limit=10_000) if r.id and r.id > 2000]
        assert statuses.count(200) == len(records) > 0 and set(statuses) == {200, 402}
        spent_now = sum(r.cost_usd or 0 for r in records)
        one_request = max(r.cost_usd or 0 for r in records)
        assert 1.0 + spent_now <= cap + one_request
        status = await s.plane.budgets.status(budget)
        assert status["spent"] == pytest.approx(1.0 + spent_now)  # the ledger agrees with the records
        assert await s.plane.gateway.budgets.reservations() == {}


async def test_concurrent_cold_requests_share_one_key_lookup(stack: Any) -> None:
    async with stack(HELLO) as s:
        key = await s.key("user", "bob")
        gateway = s.plane.gateway
        reads: list[str] = []

        def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if "FROM virtual_keys" in statement:
                reads.append(statement)

        engine = s.plane.store.engine.sync_engine
        sa_event.listen(engine, "before_cursor_execute", count)
        try:
            gateway._keys.clear()  # the key cache expired (an idle pause); then a burst of 50 at once
            keys = await asyncio.gather(*(gateway.authenticate({"authorization": f"Bearer {key}"}) for _ in range(50)))
        finally:
            sa_event.remove(engine, "before_cursor_execute", count)
        assert {k.scope_id for k in keys} == {"bob"}
        assert len(reads) == 1  # one store read for the burst, not fifty


def test_provider_settings_are_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for name, field in ProviderConfig.model_fields.items():
        assert f"| `{name}` |" in doc, f"[providers.NAME] {name} is missing from docs/configuration.md"
        assert field.description, f"ProviderConfig.{name} has no docstring"
