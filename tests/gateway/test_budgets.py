"""Budgets at the gateway: no joint overspend under concurrency, warnings and exhaustion reported once, and an
agent over budget paused (its request held), then resumed after a top-up to finish its run."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from godel.core.events import EventFilter
from godel.core.ports import EventQuery
from godel.core.states import AgentState
from godel.scheduler.requests import SpawnRequest
from tests.agents import test_pi
from tests.agents.conftest import agents_dir, require_cli
from tests.conftest import make_repo, run_git
from tests.gateway.conftest import MODEL

PRICES = {"scripted/scripted-model": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}}  # $0.001 a token


async def events_of(s: Any, *patterns: str) -> list[Any]:
    return await s.plane.events(EventQuery(filter=EventFilter(patterns=patterns), limit=1000))


async def test_concurrent_requests_cannot_jointly_overspend(stack: Any) -> None:
    async with stack([{"text": "ok", "output_tokens": 7}], prices=PRICES) as s:
        cap = 0.2
        await s.plane.budgets.set("user", "alice", cap, "total")
        client = openai.AsyncOpenAI(base_url=s.openai_base, api_key=await s.key("user", "alice"), max_retries=0)

        async def one() -> str:
            try:
                await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=10
                )
                return "ok"
            except openai.APIStatusError as exc:
                assert exc.status_code == 402 and "budget exhausted for user alice" in str(exc)
                return "refused"

        results = await asyncio.gather(*(one() for _ in range(100)))
        records = await s.records()
        assert results.count("ok") == len(records) > 0 and results.count("refused") > 0
        # Then one at a time until the budget says no: what remained after the burst is spent, never more.
        while await one() == "ok":
            pass
        records = await s.records()
        spent = sum(r.cost_usd or 0 for r in records)
        one_request = max(r.cost_usd or 0 for r in records)
        assert cap - one_request * 2 <= spent <= cap + one_request, (spent, cap)
        assert await one() == "refused"
        (exceeded,) = await events_of(s, "budget:exceeded") or [None]
        warnings = await events_of(s, "budget:warning")
        reported = sorted(e.payload["threshold"] for e in warnings)
        assert reported == [t for t in (50, 80, 100) if spent >= cap * t / 100]
        assert (exceeded is not None) == (spent >= cap)


async def test_an_agent_over_budget_is_paused_then_finishes_after_a_top_up(stack: Any, fast_tmp: Path) -> None:
    require_cli("pi")
    repo = make_repo(fast_tmp / "repo")
    settings = {"agents_dir": agents_dir(), "agent_cli_retries": 0, "watch_interval": 0.02, "prices": PRICES}
    async with stack(test_pi.EDIT, **settings) as s:
        agent = await s.plane.spawn(
            SpawnRequest(task="create hello.txt", repo=str(repo), agent="pi", model=f"scripted/{MODEL}",
                         budget_limit=0.01, timeout=120)
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while (await s.plane.get(agent.id)).state != AgentState.PAUSED:
            assert time.monotonic() < deadline, "the agent was not paused"
            await asyncio.sleep(0.05)  # polling the store for the pause
        (exceeded,) = await events_of(s, "budget:exceeded")
        assert exceeded.payload["scopeId"] == agent.id and exceeded.payload["pausedAgents"] == [agent.id]
        assert s.model.requests == []  # the request is held, not forwarded
        paused = await s.plane.get(agent.id)
        assert "budget exceeded" in (await s.plane.transitions(agent.id))[-1].reason

        await s.plane.budgets.set("agent", agent.id, 100.0, "total")  # top up, then resume
        await s.plane.resume(agent.id)
        while (done := await s.plane.get(agent.id)).state not in (AgentState.COMPLETED, AgentState.FAILED):
            assert time.monotonic() < deadline + 60, "the agent did not finish after the top-up"
            await asyncio.sleep(0.05)  # polling the store for the verdict
        assert done.state == AgentState.COMPLETED, done.last_error
        assert paused.state == AgentState.PAUSED
        assert run_git(repo, "show", f"{done.branch}:hello.txt") == "hello from pi"
        records = await s.records()
        assert len(records) == len(s.model.requests) == 2 and all(r.agent_id == agent.id for r in records)
        status = await s.plane.budgets.status((await s.plane.store.list_budgets(entity_id=agent.id))[0])
        assert status["spent"] == pytest.approx(sum(r.cost_usd for r in records))
