"""What budgets do to agents: the gateway decides when a budget is crossed (``godel.gateway.budgets``); this pauses
the running agents it covers (never kills them: raising the budget lets them be resumed), holds an agent's
over-budget request until it is resumed, and records ``budget:*`` events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from godel.core.events import EventFilter, make_event
from godel.core.ids import new_id
from godel.core.models import Agent, Budget
from godel.core.ports import Clock, EventBus, Store
from godel.core.states import AgentState
from godel.errors import GodelError
from godel.gateway.budgets import period_bounds
from godel.gateway.service import Gateway
from godel.scheduler.run import AgentRun
from godel.settings import Settings

log = structlog.get_logger("godel.budgets")


class BudgetActions:
    def __init__(
        self,
        *,
        store: Store,
        gateway: Gateway,
        bus: EventBus,
        clock: Clock,
        settings: Settings,
        runs: Mapping[str, AgentRun],
        pause: Callable[..., Awaitable[Agent]],
    ) -> None:
        self.store, self.gateway, self.bus, self.clock, self.settings = store, gateway, bus, clock, settings
        self.runs = runs  # the supervisor's live runs: who a budget covers on this server
        self.pause = pause
        self._pauses = asyncio.Lock()

    def rate_limited(self, agent_id: str) -> dict[str, Any] | None:
        """While the gateway refuses the agent's requests for a rate limit: until when, and which limit."""
        entry = self.gateway.rate_limited.get(agent_id)
        if entry is None:
            return None
        until, why, shown_until = entry
        if max(until, shown_until) <= time.time():
            self.gateway.rate_limited.pop(agent_id, None)
            return None
        return {"until": datetime.fromtimestamp(until, UTC).isoformat(), "reason": why}

    async def set(self, entity_type: str, entity_id: str, usd: float, period: str) -> Budget:
        now = self.clock.now()
        budget = await self.store.upsert_budget(
            Budget(id=new_id(), entity_type=entity_type, entity_id=entity_id, total_budget=usd, period=period,
                   created_at=now, updated_at=now)
        )  # fmt: skip
        self.gateway.budgets.forget(budget.id)  # raised: its thresholds can be crossed, and reported, again
        return budget

    async def status(self, budget: Budget) -> dict[str, Any]:
        start, end = period_bounds(budget.period, self.clock.now())
        spent = await self.gateway.budgets.spent(budget)  # the ledger's running total: one row, not a sum
        return {"spent": spent, "remaining": max(0.0, budget.total_budget - spent), "start": start, "end": end}

    def _agents(self, budget: Budget) -> list[str]:
        if budget.entity_type == "agent":
            return [budget.entity_id] if budget.entity_id in self.runs else []
        if budget.entity_type == "team":
            return [w.agent_id for w in self.runs.values() if w.team_id == budget.entity_id]
        return []

    async def exhausted(self, budget: Budget, spent: float, _threshold: int) -> None:
        """Pause (never kill) the running agents the budget covers; raising it lets them be resumed."""
        reason = f"budget exceeded: ${spent:.4f} of ${budget.total_budget:.4f} ({budget.period})"
        paused: list[str] = []
        async with self._pauses:  # one at a time: two requests over budget at once pause an agent once
            await self._pause_for_budget(budget, reason, paused)
        await self._event("budget:exceeded", budget, spent, {"pausedAgents": paused, "reason": reason})

    async def _pause_for_budget(self, budget: Budget, reason: str, paused: list[str]) -> None:
        for agent_id in self._agents(budget):
            try:
                agent = await self.store.get_agent(agent_id)
                if agent.state in (AgentState.EXECUTING, AgentState.WAITING):
                    await self.pause(agent_id, actor="budget", reason=reason)
                    paused.append(agent_id)
            except GodelError as exc:  # it ended meanwhile: nothing to pause
                log.info("budget pause skipped", agent=agent_id, error=exc.message)

    async def hold(self, budget: Budget, spent: float, agent_id: str) -> bool:
        """Pause the agent whose request is over budget and wait for it to be resumed (True) or to end (False)."""
        ended = ("agent:kill", "agent:restart", "agent:error", "agent:completing", "agent:complete")
        flt = EventFilter(patterns=("agent:resume", *ended), agent_id=agent_id)
        sub = self.bus.subscribe(flt)  # before looking at the state, so a resume in between is not missed
        try:
            await self.exhausted(budget, spent, 100)
            if (await self.store.get_agent(agent_id)).state != AgentState.PAUSED:
                return False  # not a run this server can pause: refuse the request instead
            event = await sub.get(timeout=self.settings.budget_hold_timeout)
            return event is not None and event.type == "agent:resume"
        finally:
            sub.close()

    async def warning(self, budget: Budget, spent: float, threshold: int) -> None:
        await self._event("budget:warning", budget, spent, {"threshold": threshold})

    async def _event(self, type_: str, budget: Budget, spent: float, extra: dict[str, Any]) -> None:
        payload = {
            "budgetId": budget.id, "scope": budget.entity_type, "scopeId": budget.entity_id,
            "limitUsd": budget.total_budget, "spentUsd": round(spent, 8), "period": budget.period, **extra,
        }  # fmt: skip
        await self.store.append_events([
            make_event(type_, payload, component="gateway",
                       agent_id=budget.entity_id if budget.entity_type == "agent" else None,
                       team_id=budget.entity_id if budget.entity_type == "team" else None)
        ])  # fmt: skip
