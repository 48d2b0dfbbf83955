"""Budgets, enforced at the gateway before and after each request, failing closed.

Before a request is forwarded, every budget that applies to its key (the agent's own, its team's, the user's)
must cover what was spent in the current period, plus what requests in flight have reserved, plus this
request's own estimate (its input at ~4 characters a token and its ``max_tokens`` of output, priced like the
real thing). The check and the reservation are one step for every admission of the budget, so concurrent
requests can never jointly commit more than the limit allows beyond the error of one estimate; when the request
ends its reservation is replaced by what it really cost (the usage record). A streamed response that crosses the
limit finishes, but no further request passes.

What was spent is the ledger's (``budget_spend``, kept by the store in the transaction of each usage record): one
row per budget and period, so an admission costs the same after a million records as after none. Where the
reservations live depends on ``SharedState``:

- in this process (one server): the reservations are a dict, and the ledger is mirrored in memory -- loaded once
  per budget and period, then advanced by this server's own settlements after their record commits. The check and
  the reservation run without an ``await`` between them, so they need no lock, and an admission awaits nothing
  once the budget's period is loaded. A settlement commits the record first and then, in one synchronous step,
  moves the request from "reserved" to "spent": an admission sees it exactly once, never twice (which would
  refuse -- and pause the agent of -- a request the budget could pay for) nor not at all.
- in Redis (``GODEL_REDIS_URL``, several servers): admissions take the budget's Redis lock, read spent and reserved
  from the database in one statement, and record the reservation durably (``budget_reservations``); the usage
  record's transaction deletes it. A Redis that restarts loses nothing (the reservations are the database's); a
  Redis that cannot be reached refuses budgeted requests with a 503 and ``Retry-After`` (``SharedStateDown``).

Failing closed: under a budget, a request for a model no price table knows is refused (``UnpricedModel``, 400,
naming the ``[prices]`` entry to add) unless its provider sets ``allow_unpriced``; an answer whose cost cannot be
computed (no usage in it, or a fallback to an unpriced model) is charged its reservation's estimate, and its usage
record says so (``cost_estimated``).

When a settled request leaves a budget exhausted, ``on_exhausted`` is called (the control plane pauses the
agents it covers and records ``budget:exceeded``). An agent's request that arrives over budget anyway (sent
before the pause landed) is not refused: ``hold`` has the agent paused and keeps the request until the agent is
resumed, then tries it again -- so raising the budget and resuming continues the run where it stood. Crossing
50, 80 and 100% is reported once per period through ``on_warning`` (``budget:warning``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson

from godel.core.ids import new_id
from godel.core.models import Budget, UsageRecord, VirtualKey
from godel.gateway.flights import SingleFlight
from godel.gateway.shared import MemoryState, SharedState
from godel.gateway.types import GatewayError, Upstream
from godel.store.gateway import period_start

THRESHOLDS = (50, 80, 100)
BUDGET_CACHE_SECONDS = 1.0
RESERVATION_TTL = timedelta(hours=1)  # a durable reservation older than this is a dead server's: not counted
SETTLE_WAIT_SECONDS = 10.0  # a refusal waits at most this long for this server's answered requests to settle
_DEFAULT_OUTPUT = 4096  # tokens assumed when a request sets no max_tokens
_MIRROR_LIMIT = 100_000  # budget periods mirrored in memory before the mirror starts afresh
Period = tuple[str, datetime]  # (budget id, period start): one ledger row


class BudgetListener(Protocol):
    """What happens to agents when budgets are crossed: the control plane's side (``scheduler.budgeting``). The
    gateway only decides that a budget was crossed; it neither knows nor imports what pausing an agent means."""

    async def warning(self, budget: Budget, spent: float, threshold: int) -> None:
        """``threshold`` percent of the budget is spent (50, 80, 100), reported once per period."""

    async def exhausted(self, budget: Budget, spent: float, threshold: int) -> None:
        """A settled request left the budget spent: pause what it covers."""

    async def hold(self, budget: Budget, spent: float, agent_id: str) -> bool:
        """An agent's request found its budget spent: True once the agent is resumed (try again), False to refuse."""
        ...


class BudgetStore(Protocol):
    """The store methods budgets use (``SqlStore`` has them)."""

    async def budgets_for(self, scopes: list[tuple[str, str]]) -> list[Budget]: ...
    async def budget_standing(
        self, periods: Sequence[tuple[str, datetime]], *, reserved_since: datetime | None = None
    ) -> dict[str, tuple[float, float]]: ...
    async def reserve_budgets(
        self, reservation_id: str, budget_ids: Sequence[str], amount: float, at: datetime, expired_before: datetime
    ) -> None: ...
    async def release_reservation(self, reservation_id: str) -> None: ...


def period_bounds(period: str, now: datetime) -> tuple[datetime | None, datetime | None]:
    if period not in ("daily", "monthly"):
        return None, None
    start = period_start(period, now)
    if period == "daily":
        return start, start + timedelta(days=1)
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return start, start.replace(year=year, month=month)


def scopes_of(key: VirtualKey) -> list[tuple[str, str]]:
    scopes = [(key.scope_type, key.scope_id)]
    team = key.metadata.get("teamId")
    if key.scope_type == "agent" and team:
        scopes.append(("team", str(team)))
    return scopes


@dataclass(eq=False)  # by identity: kept in sets
class Reservation:
    budgets: list[Budget] = field(default_factory=list)
    amount: float = 0.0
    settled: bool = False
    id: str | None = None  # set when the reservation is durable (recorded in the database)
    ending: bool = False  # answered: its usage record is being written
    done: asyncio.Event | None = None  # set once settled (a refusal may wait for it: see ``BudgetGuard.admit``)


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


class UnpricedModel(GatewayError):
    """Under a budget, a model whose price is unknown cannot be metered: refused (400), saying how to price it."""

    def __init__(self, upstream: Upstream, budget: Budget) -> None:
        name = f"{upstream.provider}/{upstream.model}"
        super().__init__(
            400,
            "invalid_request",
            f"Godel cannot price model {name!r}, and {budget.entity_type} {budget.entity_id} has a budget: a "
            f"request it cannot meter is refused. Give the model a price in godel.toml: "
            f'[prices."{name}"] input_per_mtok = …, output_per_mtok = … (USD per million tokens); or let '
            f"provider {upstream.provider!r} through unmetered with allow_unpriced = true under "
            f"[providers.{upstream.provider}].",
        )


class BudgetGuard:
    def __init__(
        self,
        store: Any,
        pricer: Any,
        *,
        now: Callable[[], datetime],
        state: SharedState | None = None,
    ) -> None:
        self.store: BudgetStore = store
        self.pricer = pricer
        self.now = now
        # Set once by the wiring (``listen``); until then a crossed budget is recorded and refused, nothing paused.
        self.listener: BudgetListener | None = None
        # The budget locks: none in this process, Redis's when several servers share the budgets.
        self.state: SharedState = state or MemoryState()
        self._warned: dict[tuple[str, str], set[int | str]] = {}  # (budget id, period) -> what was reported
        self._budget_cache: dict[tuple[tuple[str, str], ...], tuple[float, list[Budget]]] = {}
        self._budget_flights: SingleFlight[tuple[tuple[str, str], ...], list[Budget]] = SingleFlight()
        # One server (not ``state.shared``): reservations per budget, and the ledger's mirror (see the docstring).
        self._reserved: dict[str, float] = {}
        self._spent: dict[Period, float] = {}
        self._late: dict[Period, float] = {}  # settled while the period was being loaded: added to what loads
        self._loads: SingleFlight[Period, None] = SingleFlight()
        self._generation = 0  # ``forget`` bumps it: a load begun before is not kept
        self._open: dict[str, set[Reservation]] = {}  # this server's unsettled reservations, per budget

    # ------------------------------------------------------------------------------------------ estimating

    def estimate(self, upstream: Upstream, body: dict[str, Any]) -> float | None:
        """What the request may cost at most (roughly), or None when its model has no known price."""
        if self.pricer is None:
            return None
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
        return None if cost is None else float(cost)

    async def _budgets(self, scopes: list[tuple[str, str]]) -> list[Budget]:
        # Cached briefly: most requests have no budget, and a store read per request would be most of the
        # gateway's own latency; concurrent misses share one read. ``forget`` drops the cache at once.
        now = time.monotonic()
        cache_key = tuple(scopes)
        cached = self._budget_cache.get(cache_key)
        if cached is not None and now - cached[0] < BUDGET_CACHE_SECONDS:
            return cached[1]

        async def load() -> list[Budget]:
            generation = self._generation
            budgets = list(await self.store.budgets_for(scopes))
            if generation == self._generation:  # a budget set meanwhile: not cached, read again next time
                if len(self._budget_cache) > 10_000:
                    self._budget_cache.clear()
                self._budget_cache[cache_key] = (time.monotonic(), budgets)
            return budgets

        return await self._budget_flights.run(cache_key, load)

    # ------------------------------------------------------------------------------------------- admitting

    async def admit(self, key: VirtualKey, upstream: Upstream, body: dict[str, Any]) -> Reservation:
        """Reserve the request's estimate on every budget of its key, or raise ``BudgetExceeded``.

        Settlements run after the reply's last byte, so a caller's next request may arrive while its previous
        one is still being recorded. A request that would be refused waits first for this server's answered
        requests of the budget to settle (their estimate usually exceeds their cost), and is checked again: a
        refusal is never due to a settlement still under way."""
        budgets = await self._budgets(scopes_of(key))
        if not budgets:
            return Reservation()
        estimate = self.estimate(upstream, body)
        if estimate is None:
            if not upstream.config.allow_unpriced:
                raise UnpricedModel(upstream, budgets[0])
            estimate = 0.0  # let through by the operator's choice: it costs the budget nothing it can see
        while True:
            try:
                if self.state.shared:
                    reservation = await self._admit_durable(budgets, estimate)
                else:
                    reservation = await self._admit_local(budgets, estimate)
            except BudgetExceeded as refusal:
                ending = [r.done for r in self._open.get(refusal.budget.id, ()) if r.ending and r.done is not None]
                if not ending:
                    raise
                waits = [asyncio.ensure_future(event.wait()) for event in ending]
                _, pending = await asyncio.wait(waits, timeout=SETTLE_WAIT_SECONDS)
                for wait in pending:
                    wait.cancel()
                if pending:
                    raise
                continue
            reservation.done = asyncio.Event()
            for budget in budgets:
                self._open.setdefault(budget.id, set()).add(reservation)
            return reservation

    def ending(self, reservation: Reservation | None) -> None:
        """The request was answered; its usage record is on its way (``Record`` says so before writing it)."""
        if reservation is not None:
            reservation.ending = True

    async def _admit_local(self, budgets: list[Budget], estimate: float) -> Reservation:
        now = self.now()
        periods = [(b.id, period_start(b.period, now)) for b in budgets]
        while missing := [p for p in periods if p not in self._spent]:
            for period in missing:
                await self._loads.run(period, functools.partial(self._load, period))
        # From here to the reservation nothing awaits: no other admission or settlement runs in between.
        for budget, period in zip(budgets, periods, strict=True):
            spent = self._spent[period]
            committed = spent + self._reserved.get(budget.id, 0.0)
            if committed >= budget.total_budget or committed + estimate > budget.total_budget:
                raise BudgetExceeded(budget, spent, estimate)
        for budget in budgets:
            self._reserved[budget.id] = self._reserved.get(budget.id, 0.0) + estimate
        return Reservation(budgets, estimate)

    async def _load(self, period: Period) -> None:
        generation = self._generation
        self._late[period] = 0.0
        try:
            standing = await self.store.budget_standing([period])
        finally:
            late = self._late.pop(period, 0.0)
        # A settlement while the ledger was read may or may not be in what was read: counted (once more, at
        # worst), so the mirror errs towards refusing, never towards overspending.
        if generation == self._generation:
            if len(self._spent) > _MIRROR_LIMIT:
                self._spent.clear()
            self._spent[period] = standing.get(period[0], (0.0, 0.0))[0] + late

    async def _admit_durable(self, budgets: list[Budget], estimate: float) -> Reservation:
        ids = [b.id for b in budgets]
        async with self.state.guarding(ids):
            now = self.now()
            since = now - RESERVATION_TTL
            standing = await self.store.budget_standing(
                [(b.id, period_start(b.period, now)) for b in budgets], reserved_since=since
            )
            for budget in budgets:
                spent, reserved = standing.get(budget.id, (0.0, 0.0))
                committed = spent + reserved
                if committed >= budget.total_budget or committed + estimate > budget.total_budget:
                    raise BudgetExceeded(budget, spent, estimate)
            reservation_id = new_id()
            await self.store.reserve_budgets(reservation_id, ids, estimate, now, since)
        return Reservation(budgets, estimate, id=reservation_id)

    # -------------------------------------------------------------------------------------------- settling

    async def settle(self, reservation: Reservation, record: UsageRecord | None = None) -> None:
        """The request ended. ``record``: its usage record, committed (for a durable reservation, in the same
        transaction as the reservation's release: ``UsageWriter.write(record, release=reservation.id)``); None:
        it got no answer, and its reservation is only released. Then the thresholds crossed are reported."""
        if not reservation.budgets or reservation.settled:
            return
        reservation.settled = True
        try:
            await self._release(reservation, record)
        finally:
            for budget in reservation.budgets:
                opened = self._open.get(budget.id)
                if opened is not None:
                    opened.discard(reservation)
                    if not opened:
                        del self._open[budget.id]
            if reservation.done is not None:
                reservation.done.set()
        await self._report_all(reservation)

    async def _release(self, reservation: Reservation, record: UsageRecord | None) -> None:
        if reservation.id is not None:
            if record is None:
                await self.store.release_reservation(reservation.id)
        else:
            # One synchronous step: from "reserved" to "spent" at once, as far as any admission can tell.
            for budget in reservation.budgets:
                left = self._reserved.get(budget.id, 0.0) - reservation.amount
                if left > 1e-12:
                    self._reserved[budget.id] = left
                else:
                    self._reserved.pop(budget.id, None)
            cost = (record.cost_usd or 0.0) if record is not None else 0.0
            if cost:
                for budget in reservation.budgets:
                    period = (budget.id, period_start(budget.period, record.at if record else self.now()))
                    if period in self._spent:
                        self._spent[period] += cost
                    elif period in self._late:
                        self._late[period] += cost

    async def reservations(self) -> dict[str, float]:
        """What requests in flight reserved on each budget in this process (for inspection and tests)."""
        return dict(self._reserved)

    async def spent(self, budget: Budget) -> float:
        """What ``budget`` spent in its current period: its ledger row."""
        standing = await self.store.budget_standing([(budget.id, period_start(budget.period, self.now()))])
        return standing.get(budget.id, (0.0, 0.0))[0]

    async def _known_spent(self, budget: Budget) -> float:
        """``spent``, from this server's mirror when it has the period (no store read per settlement)."""
        mirrored = self._spent.get((budget.id, period_start(budget.period, self.now())))
        return mirrored if mirrored is not None and not self.state.shared else await self.spent(budget)

    async def _report_all(self, reservation: Reservation) -> None:
        for budget in reservation.budgets:
            await self._report(budget, await self._known_spent(budget))

    async def _report(self, budget: Budget, spent: float) -> None:
        start, _ = period_bounds(budget.period, self.now())
        seen = self._warned.setdefault((budget.id, start.isoformat() if start else "total"), set())
        percent = 100.0 * spent / budget.total_budget if budget.total_budget > 0 else 100.0
        for threshold in THRESHOLDS:
            if percent >= threshold and threshold not in seen:
                seen.add(threshold)
                if self.listener is not None:
                    await self.listener.warning(budget, spent, threshold)
        if spent >= budget.total_budget and "exhausted" not in seen:
            seen.add("exhausted")  # once per period (and again after the budget is raised and spent again)
            if self.listener is not None:
                await self.listener.exhausted(budget, spent, 100)

    async def hold(self, key: VirtualKey, refusal: BudgetExceeded) -> bool:
        """An agent's request found its budget spent: have the agent paused and keep the request until it is
        resumed (after the budget was raised, or not). True: try the request again; False: refuse it now."""
        if key.scope_type != "agent" or self.listener is None:
            return False
        return await self.listener.hold(refusal.budget, await self.spent(refusal.budget), key.scope_id)

    def listen(self, listener: BudgetListener) -> None:
        """Who acts on crossed budgets. One listener: the control plane that owns this gateway."""
        if self.listener is not None and self.listener is not listener:
            raise RuntimeError("this gateway's budgets already have a listener")
        self.listener = listener

    def forget(self, budget_id: str) -> None:
        """A budget was set, raised or removed: read budgets and the ledger afresh, and its thresholds may be
        reported again."""
        self._generation += 1
        self._budget_cache.clear()
        self._spent.clear()
        for key in [k for k in self._warned if k[0] == budget_id]:
            del self._warned[key]
