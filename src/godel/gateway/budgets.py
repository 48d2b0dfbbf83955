"""Budgets, enforced at the gateway before and after each request.

Before a request is forwarded, every budget that applies to its key (the agent's own, its team's, the user's)
must cover what was spent in the current period, plus what requests in flight have reserved, plus this
request's own estimate (its input at ~4 characters a token and its ``max_tokens`` of output, priced like the
real thing). The check and the reservation happen under one lock, so concurrent requests can never jointly
commit more than the limit allows beyond the error of one estimate; when the request ends its reservation is
replaced by what it really cost (the usage record) -- the record is written and the reservation released under
the same lock (``settling``), so an admission never counts a request twice or not at all. A streamed response that
crosses the limit finishes, but no further request passes.

When a settled request leaves a budget exhausted, ``on_exhausted`` is called (the control plane pauses the
agents it covers and records ``budget:exceeded``). An agent's request that arrives over budget anyway (sent
before the pause landed) is not refused: ``hold`` has the agent paused and keeps the request until the agent is
resumed, then tries it again -- so raising the budget and resuming continues the run where it stood. Crossing
50, 80 and 100% is reported once per period through ``on_warning`` (``budget:warning``). Requests that cannot
be priced (a model no price table knows) are not counted: a budget only limits priced spend.

The reservations and the lock live in ``SharedState``: this process's memory (one server enforces its own
requests exactly), or Redis (``GODEL_REDIS_URL``), so that several servers sharing a database and a Redis enforce
each budget together.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from godel.core.models import Budget, VirtualKey
from godel.gateway.shared import MemoryState, SharedState
from godel.gateway.types import GatewayError, Upstream

THRESHOLDS = (50, 80, 100)
BUDGET_CACHE_SECONDS = 1.0
_DEFAULT_OUTPUT = 4096  # tokens assumed when a request sets no max_tokens
Notify = Callable[[Budget, float, int], Awaitable[None]]


def period_bounds(period: str, now: datetime) -> tuple[datetime | None, datetime | None]:
    now = now.astimezone(UTC)
    if period == "daily":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    if period == "monthly":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        return start, start.replace(year=year, month=month)
    return None, None


def scopes_of(key: VirtualKey) -> list[tuple[str, str]]:
    scopes = [(key.scope_type, key.scope_id)]
    team = key.metadata.get("teamId")
    if key.scope_type == "agent" and team:
        scopes.append(("team", str(team)))
    return scopes


@dataclass
class Reservation:
    budgets: list[Budget] = field(default_factory=list)
    amount: float = 0.0
    settled: bool = False


class BudgetExceeded(GatewayError):
    def __init__(self, budget: Budget, spent: float, estimate: float) -> None:
        what = f"{budget.entity_type} {budget.entity_id}"
        super().__init__(
            402,
            "budget",
            f"Godel budget exhausted for {what}: ${spent:.4f} spent of ${budget.total_budget:.4f} "
            f"({budget.period}); this request needs about ${estimate:.4f}. Raise it with `godel budget set`.",
        )
        self.budget = budget


class BudgetGuard:
    def __init__(
        self,
        store: Any,
        pricer: Any,
        *,
        now: Callable[[], datetime],
        on_exhausted: Notify | None = None,
        on_warning: Notify | None = None,
        on_hold: Callable[[Budget, float, str], Awaitable[bool]] | None = None,
        state: SharedState | None = None,
    ) -> None:
        self.store = store
        self.pricer = pricer
        self.now = now
        self.on_exhausted = on_exhausted
        self.on_warning = on_warning
        self.on_hold = on_hold
        # The reservations of requests in flight (USD per budget) and the lock admissions and settlements take:
        # this process's, or Redis's when several servers share the budgets (godel.gateway.shared).
        self.state: SharedState = state or MemoryState()
        self._warned: dict[tuple[str, str], set[int | str]] = {}  # (budget id, period) -> what was reported
        self._budget_cache: dict[tuple[tuple[str, str], ...], tuple[float, list[Budget]]] = {}

    def estimate(self, upstream: Upstream, body: dict[str, Any]) -> float:
        if self.pricer is None:
            return 0.0
        config = body.get("generationConfig")  # Gemini's
        output = (
            body.get("max_tokens") or body.get("max_output_tokens") or body.get("max_completion_tokens")
            or (config.get("maxOutputTokens") if isinstance(config, dict) else None)
        )  # fmt: skip
        output = int(output) if isinstance(output, int | float) and output > 0 else _DEFAULT_OUTPUT
        prompt = len(orjson.dumps(body)) // 4  # ~4 bytes a token: an estimate, settled with the real count
        cost = self.pricer.cost(
            provider_kind=upstream.config.kind, provider_name=upstream.provider, model=upstream.model,
            input_tokens=prompt, output_tokens=output, cached_tokens=0,
        )  # fmt: skip
        return float(cost or 0.0)

    async def _spent(self, budget: Budget) -> float:
        start, _ = period_bounds(budget.period, self.now())
        return float(await self.store.spent(budget.entity_type, budget.entity_id, start))

    async def _budgets(self, scopes: list[tuple[str, str]]) -> list[Budget]:
        # Cached briefly: most requests have no budget, and a store read per request would be most of the
        # gateway's own latency. ``forget`` (a budget set or removed here) drops the cache at once.
        now = time.monotonic()
        cache_key = tuple(scopes)
        cached = self._budget_cache.get(cache_key)
        if cached is not None and now - cached[0] < BUDGET_CACHE_SECONDS:
            return cached[1]
        budgets = list(await self.store.budgets_for(scopes))
        if len(self._budget_cache) > 10_000:
            self._budget_cache.clear()
        self._budget_cache[cache_key] = (now, budgets)
        return budgets

    async def admit(self, key: VirtualKey, upstream: Upstream, body: dict[str, Any]) -> Reservation:
        budgets = await self._budgets(scopes_of(key))
        if not budgets:
            return Reservation()
        estimate = self.estimate(upstream, body)
        async with self.state.guarding([b.id for b in budgets]):
            for budget in budgets:
                spent = await self._spent(budget)
                committed = spent + await self.state.reserved(budget.id)
                if committed >= budget.total_budget or committed + estimate > budget.total_budget:
                    raise BudgetExceeded(budget, spent, estimate)
            for budget in budgets:
                await self.state.reserve(budget.id, estimate)
        return Reservation(budgets, estimate)

    @asynccontextmanager
    async def settling(self, reservation: Reservation | None) -> AsyncIterator[None]:
        """Around writing the request's usage record: the record lands and the reservation goes in one step, as
        far as ``admit`` can tell (it waits on the same lock), so no admission sees the request both as spent
        and as still reserved -- nor as neither. Then the thresholds it crossed are reported."""
        if reservation is None or not reservation.budgets or reservation.settled:
            yield
            return
        async with self.state.guarding([b.id for b in reservation.budgets]):
            try:
                yield
            finally:
                await self._release(reservation)
        await self._report_all(reservation)

    async def settle(self, reservation: Reservation) -> None:
        """The request ended: release its reservation (unless ``settling`` did), report what it crossed."""
        if not reservation.budgets or reservation.settled:
            return
        async with self.state.guarding([b.id for b in reservation.budgets]):
            await self._release(reservation)
        await self._report_all(reservation)

    async def _release(self, reservation: Reservation) -> None:
        reservation.settled = True
        for budget in reservation.budgets:
            await self.state.reserve(budget.id, -reservation.amount)

    async def _report_all(self, reservation: Reservation) -> None:
        for budget in reservation.budgets:
            await self._report(budget, await self._spent(budget))

    async def _report(self, budget: Budget, spent: float) -> None:
        start, _ = period_bounds(budget.period, self.now())
        seen = self._warned.setdefault((budget.id, start.isoformat() if start else "total"), set())
        percent = 100.0 * spent / budget.total_budget if budget.total_budget > 0 else 100.0
        for threshold in THRESHOLDS:
            if percent >= threshold and threshold not in seen:
                seen.add(threshold)
                if self.on_warning is not None:
                    await self.on_warning(budget, spent, threshold)
        if spent >= budget.total_budget and "exhausted" not in seen:
            seen.add("exhausted")  # once per period (and again after the budget is raised and spent again)
            if self.on_exhausted is not None:
                await self.on_exhausted(budget, spent, 100)

    async def hold(self, key: VirtualKey, refusal: BudgetExceeded) -> bool:
        """An agent's request found its budget spent: have the agent paused and keep the request until it is
        resumed (after the budget was raised, or not). True: try the request again; False: refuse it now."""
        if key.scope_type != "agent" or self.on_hold is None:
            return False
        spent = await self._spent(refusal.budget)
        return await self.on_hold(refusal.budget, spent, key.scope_id)

    def forget(self, budget_id: str) -> None:
        """A budget was set, raised or removed: read budgets afresh, and its thresholds may be reported again."""
        self._budget_cache.clear()
        for key in [k for k in self._warned if k[0] == budget_id]:
            del self._warned[key]
