"""The moment a request's usage record lands: an admission waiting on the budget must see that request exactly once
(as spent, no longer as reserved) -- never twice, which would hold a request the budget could pay for."""

from __future__ import annotations

from pathlib import Path

import pytest

from godel.core.clock import utcnow
from godel.core.models import Budget, UsageRecord, VirtualKey
from godel.gateway.budgets import BudgetExceeded, BudgetGuard
from godel.gateway.types import Upstream
from godel.providers.config import ProviderConfig
from godel.store.sql import open_store


class FlatPrice:
    """Every request's estimate is $0.50, whatever it asks (the guard's pricing is not under test here)."""

    def cost(self, **_: object) -> float:
        return 0.5


async def test_an_admission_during_a_record_counts_it_once(fast_tmp: Path) -> None:
    store = open_store(f"sqlite:///{fast_tmp / 'godel.db'}")
    await store.migrate()
    try:
        await store.upsert_budget(Budget(id="b1", entity_type="user", entity_id="alice", total_budget=1.0))
        guard = BudgetGuard(store, FlatPrice(), now=utcnow)
        key = VirtualKey(id="k1", key_hash="h", prefix="p", scope_type="user", scope_id="alice")
        upstream = Upstream("p", ProviderConfig(kind="openai-chat", base_url="http://x/v1"), "m", "http://x", {})

        first = await guard.admit(key, upstream, {})  # reserves $0.50 of the $1.00
        record = await store.add_usage(
            UsageRecord(at=utcnow(), provider="p", model="m", wire="openai-chat", stream=False, status_code=200,
                        cost_usd=0.5, user_name="alice")
        )  # fmt: skip
        # Recorded ($0.50 in the ledger) and not yet settled (still reserved): an admission now must count the
        # request once -- as reserved -- and fit: $0.50 + its own $0.50 = the cap.
        second = await guard.admit(key, upstream, {})
        assert second.amount == 0.5
        await guard.settle(first, record)  # reserved -> spent, in one step
        assert first.settled and await guard.reservations() == {"b1": 0.5}
        with pytest.raises(BudgetExceeded):  # $0.50 spent + $0.50 reserved: nothing more fits
            await guard.admit(key, upstream, {})
    finally:
        await store.close()
