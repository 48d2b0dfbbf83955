"""The gateway's tables: virtual keys (looked up by hash on every proxied request) and usage records (one per
request, summed by agent, team, user, model or day)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from godel.core.models import Budget, UsageRecord, VirtualKey
from godel.errors import NotFoundError
from godel.store import rows, tables

UsageBy = Literal["agent", "team", "user", "model", "day"]
_GROUP_COLUMN = {"agent": "agent_id", "team": "team_id", "user": "user_name", "model": "model"}
_SUMS = ("input_tokens", "output_tokens", "cached_tokens")


class _Tx(Protocol):
    conn: AsyncConnection


class _HasConnections(Protocol):
    def _write(self) -> AbstractAsyncContextManager[_Tx]: ...
    def _read(self) -> AbstractAsyncContextManager[AsyncConnection]: ...


class GatewayQueries:
    """Mixed into ``SqlStore`` (it provides ``_write`` and ``_read``)."""

    async def create_key(self: _HasConnections, key: VirtualKey) -> VirtualKey:
        async with self._write() as tx:
            await tx.conn.execute(tables.virtual_keys.insert(), rows.VIRTUAL_KEYS.to_row(key))
        return key

    async def key_by_hash(self: _HasConnections, key_hash: str) -> VirtualKey | None:
        t = tables.virtual_keys
        async with self._read() as conn:
            row = (await conn.execute(sa.select(t).where(t.c.key_hash == key_hash))).first()
        return rows.VIRTUAL_KEYS.from_row(row) if row is not None else None

    async def get_key(self: _HasConnections, key_id: str) -> VirtualKey:
        t = tables.virtual_keys
        async with self._read() as conn:
            row = (await conn.execute(sa.select(t).where(t.c.id == key_id))).first()
        if row is None:
            raise NotFoundError(f"key {key_id!r} not found", details={"keyId": key_id})
        return rows.VIRTUAL_KEYS.from_row(row)

    async def list_keys(
        self: _HasConnections, *, scope_type: str | None = None, scope_id: str | None = None, revoked: bool = False
    ) -> list[VirtualKey]:
        t = tables.virtual_keys
        stmt = sa.select(t).order_by(t.c.created_at, t.c.id)
        if scope_type:
            stmt = stmt.where(t.c.scope_type == scope_type)
        if scope_id:
            stmt = stmt.where(t.c.scope_id == scope_id)
        if not revoked:
            stmt = stmt.where(t.c.revoked_at.is_(None))
        async with self._read() as conn:
            return rows.VIRTUAL_KEYS.from_rows(await conn.execute(stmt))

    async def revoke_keys(
        self: _HasConnections,
        at: datetime,
        *,
        key_id: str | None = None,
        scope_type: str | None = None,
        scope_id: str | None = None,
    ) -> int:
        """Revoke one key, or every live key of a scope; returns how many were revoked."""
        t = tables.virtual_keys
        stmt = sa.update(t).where(t.c.revoked_at.is_(None)).values(revoked_at=at, updated_at=at)
        if key_id:
            stmt = stmt.where(t.c.id == key_id)
        elif scope_type and scope_id:
            stmt = stmt.where(t.c.scope_type == scope_type, t.c.scope_id == scope_id)
        else:
            raise ValueError("revoke_keys needs a key id or a scope")
        async with self._write() as tx:
            result = await tx.conn.execute(stmt)
        return int(result.rowcount or 0)

    async def add_usage(self: _HasConnections, record: UsageRecord) -> UsageRecord:
        values = rows.USAGE.to_row(record)
        values.pop("id", None)
        async with self._write() as tx:
            result = await tx.conn.execute(tables.usage_records.insert().values(values))
            pk = result.inserted_primary_key
        return dataclasses.replace(record, id=int(pk[0]) if pk else None)

    async def add_usages(self: _HasConnections, records: list[UsageRecord]) -> None:
        """Many records in one transaction (the gateway batches what arrives while the previous batch commits)."""
        if not records:
            return
        values = [rows.USAGE.to_row(r) for r in records]
        for v in values:
            v.pop("id", None)
        async with self._write() as tx:
            await tx.conn.execute(tables.usage_records.insert(), values)

    async def usage_records(
        self: _HasConnections, *, agent_id: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> list[UsageRecord]:
        t = tables.usage_records
        stmt = sa.select(t).order_by(t.c.id).limit(limit)
        if agent_id:
            stmt = stmt.where(t.c.agent_id == agent_id)
        if since:
            stmt = stmt.where(t.c.at >= since)
        async with self._read() as conn:
            return rows.USAGE.from_rows(await conn.execute(stmt))

    async def usage_summary(
        self: _HasConnections, by: UsageBy, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Requests, tokens and cost per agent, team, user, model or UTC day, largest cost first."""
        t = tables.usage_records
        conds = [c for c in (t.c.at >= since if since else None, t.c.at < until if until else None) if c is not None]
        sums = [sa.func.sum(t.c[c]).label(c) for c in _SUMS]
        cost = sa.func.sum(t.c.cost_usd).label("cost_usd")
        if by == "day":
            # Day boundaries in Python: portable across SQLite's and PostgreSQL's date functions.
            stmt = sa.select(t.c.at, *(t.c[c] for c in _SUMS), t.c.cost_usd).where(*conds)
            groups: dict[str, dict[str, Any]] = defaultdict(
                lambda: {"requests": 0, "cost_usd": None, **dict.fromkeys(_SUMS, 0)}
            )
            async with self._read() as conn:
                async for row in await conn.stream(stmt):
                    g = groups[row.at.date().isoformat()]
                    g["requests"] += 1
                    for c in _SUMS:
                        g[c] += getattr(row, c)
                    if row.cost_usd is not None:
                        g["cost_usd"] = (g["cost_usd"] or 0.0) + row.cost_usd
            return [{"key": day, **g} for day, g in sorted(groups.items())]
        column = t.c[_GROUP_COLUMN[by]]
        stmt = (
            sa.select(column.label("key"), sa.func.count().label("requests"), *sums, cost)
            .where(*conds)
            .group_by(column)
            .order_by(sa.func.coalesce(cost, 0).desc(), column)
        )
        async with self._read() as conn:
            result = await conn.execute(stmt)
            return [dict(r._mapping) for r in result]


_SCOPE_COLUMN = {"agent": "agent_id", "team": "team_id", "user": "user_name"}


class BudgetQueries:
    """Mixed into ``SqlStore`` too: budgets, and the spend that counts against them."""

    async def upsert_budget(self: _HasConnections, budget: Budget) -> Budget:
        """Create the entity's budget, or change its limit and period (one budget per entity)."""
        t = tables.budgets
        async with self._write() as tx:
            row = (
                await tx.conn.execute(
                    sa.select(t).where(t.c.entity_type == budget.entity_type, t.c.entity_id == budget.entity_id)
                )
            ).first()
            if row is None:
                await tx.conn.execute(t.insert(), rows.BUDGETS.to_row(budget))
                return budget
            existing = rows.BUDGETS.from_row(row)
            changed = dataclasses.replace(
                existing, total_budget=budget.total_budget, period=budget.period, updated_at=budget.updated_at
            )
            await tx.conn.execute(
                sa.update(t).where(t.c.id == existing.id).values(rows.BUDGETS.values(
                    {"total_budget": changed.total_budget, "period": changed.period, "updated_at": changed.updated_at}
                ))
            )  # fmt: skip
            return changed

    async def list_budgets(
        self: _HasConnections, *, entity_type: str | None = None, entity_id: str | None = None
    ) -> list[Budget]:
        t = tables.budgets
        stmt = sa.select(t).order_by(t.c.created_at, t.c.id)
        if entity_type:
            stmt = stmt.where(t.c.entity_type == entity_type)
        if entity_id:
            stmt = stmt.where(t.c.entity_id == entity_id)
        async with self._read() as conn:
            return rows.BUDGETS.from_rows(await conn.execute(stmt))

    async def budgets_for(self: _HasConnections, scopes: list[tuple[str, str]]) -> list[Budget]:
        if not scopes:
            return []
        t = tables.budgets
        cond = sa.or_(*(sa.and_(t.c.entity_type == kind, t.c.entity_id == ident) for kind, ident in scopes))
        async with self._read() as conn:
            return rows.BUDGETS.from_rows(await conn.execute(sa.select(t).where(cond)))

    async def delete_budget(self: _HasConnections, budget_id: str) -> None:
        t = tables.budgets
        async with self._write() as tx:
            result = await tx.conn.execute(sa.delete(t).where(t.c.id == budget_id))
            if result.rowcount == 0:
                raise NotFoundError(f"budget {budget_id!r} not found", details={"budgetId": budget_id})

    async def spent(self: _HasConnections, scope_type: str, scope_id: str, since: datetime | None) -> float:
        """Priced usage of a scope since ``since`` (None: ever), in USD."""
        t = tables.usage_records
        stmt = sa.select(sa.func.coalesce(sa.func.sum(t.c.cost_usd), 0.0)).where(
            t.c[_SCOPE_COLUMN[scope_type]] == scope_id
        )
        if since is not None:
            stmt = stmt.where(t.c.at >= since)
        async with self._read() as conn:
            return float((await conn.execute(stmt)).scalar_one())
