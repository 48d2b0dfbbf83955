"""The gateway's tables: virtual keys (looked up by hash on every proxied request), usage records (one per
request, summed by agent, team, user, model or day), budgets and their ledger.

The ledger (``budget_spend``) is each budget's running total per period, added to in the transaction that inserts
the usage records it counts -- so it is exact, and an admission reads one row per budget however long the scope's
history. Which budgets a record counts against is read inside that transaction, after the insert: on PostgreSQL a
budget being created waits (``LOCK TABLE usage_records IN SHARE MODE``) for the inserts already running and then
sums the period so far, and inserts that start later see the budget; so no record is counted twice or not at all.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
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
        where: list[sa.ColumnElement[bool]] = [t.c.revoked_at.is_(None)]
        if key_id:
            where.append(t.c.id == key_id)
        elif scope_type and scope_id:
            where += [t.c.scope_type == scope_type, t.c.scope_id == scope_id]
        else:
            raise ValueError("revoke_keys needs a key id or a scope")
        # Read first: an agent that never had a key (a command agent, a run not through the gateway) has nothing to
        # revoke and need not queue for the one writer. A key made after this read is newer than the revocation.
        async with self._read() as conn:
            if (await conn.execute(sa.select(t.c.id).where(*where).limit(1))).first() is None:
                return 0
        stmt = sa.update(t).where(*where).values(revoked_at=at, updated_at=at)
        async with self._write() as tx:
            result = await tx.conn.execute(stmt)
        return int(result.rowcount or 0)

    async def add_usage(self: _HasConnections, record: UsageRecord) -> UsageRecord:
        values = rows.USAGE.to_row(record)
        values.pop("id", None)
        async with self._write() as tx:
            result = await tx.conn.execute(tables.usage_records.insert().values(values))
            pk = result.inserted_primary_key
            await _charge(tx.conn, [record])
        return dataclasses.replace(record, id=int(pk[0]) if pk else None)

    async def add_usages(self: _HasConnections, records: list[UsageRecord], releases: Sequence[str] = ()) -> None:
        """Many records in one transaction (the gateway batches what arrives while the previous batch commits),
        added to the ledger of every budget they count against; ``releases`` are the durable reservations
        (``reserve_budgets``) these records replace, deleted in the same transaction."""
        if not records and not releases:
            return
        values = [rows.USAGE.to_row(r) for r in records]
        for v in values:
            v.pop("id", None)
        async with self._write() as tx:
            if values:
                await tx.conn.execute(tables.usage_records.insert(), values)
                await _charge(tx.conn, records)
            if releases:
                r = tables.budget_reservations
                await tx.conn.execute(sa.delete(r).where(r.c.id.in_(sorted(set(releases)))))

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
                changed = budget
            else:
                existing = rows.BUDGETS.from_row(row)
                changed = dataclasses.replace(
                    existing, total_budget=budget.total_budget, period=budget.period, updated_at=budget.updated_at
                )
                await tx.conn.execute(
                    sa.update(t).where(t.c.id == existing.id).values(rows.BUDGETS.values(
                        {"total_budget": changed.total_budget, "period": changed.period,
                         "updated_at": changed.updated_at}
                    ))
                )  # fmt: skip
            await _recount(tx.conn, changed, budget.updated_at or datetime.now(UTC))
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
            for ledger in (tables.budget_spend, tables.budget_reservations):
                await tx.conn.execute(sa.delete(ledger).where(ledger.c.budget_id == budget_id))

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

    async def budget_standing(
        self: _HasConnections, periods: Sequence[tuple[str, datetime]], *, reserved_since: datetime | None = None
    ) -> dict[str, tuple[float, float]]:
        """``{budget id: (spent in the period, reserved)}`` for ``(budget id, period start)`` pairs, read in one
        statement -- one snapshot, so a request settling meanwhile is seen either as spent or as reserved, never
        both or neither. ``reserved`` sums the durable reservations made since ``reserved_since`` (None: 0.0)."""
        if not periods:
            return {}
        spend, held = tables.budget_spend, tables.budget_reservations
        selects = []
        for budget_id, start in periods:
            spent = sa.select(spend.c.spent_usd).where(spend.c.budget_id == budget_id, spend.c.period_start == start)
            columns: list[Any] = [sa.literal(budget_id).label("id"), spent.scalar_subquery().label("spent")]
            if reserved_since is not None:
                reserved = sa.select(sa.func.sum(held.c.amount_usd)).where(
                    held.c.budget_id == budget_id, held.c.created_at >= reserved_since
                )
                columns.append(reserved.scalar_subquery().label("reserved"))
            selects.append(sa.select(*columns))
        stmt = selects[0] if len(selects) == 1 else sa.union_all(*selects)
        async with self._read() as conn:
            result = (await conn.execute(stmt)).all()
        return {row[0]: (float(row[1] or 0.0), float(row[2] or 0.0) if len(row) > 2 else 0.0) for row in result}

    async def budget_spent(self: _HasConnections, budget: Budget, at: datetime) -> float:
        """What ``budget`` spent in its period containing ``at`` (one ledger row)."""
        spend = tables.budget_spend
        start = period_start(budget.period, at)
        stmt = sa.select(spend.c.spent_usd).where(spend.c.budget_id == budget.id, spend.c.period_start == start)
        async with self._read() as conn:
            value = (await conn.execute(stmt)).scalar_one_or_none()
        return float(value or 0.0)

    async def reserve_budgets(
        self: _HasConnections, reservation_id: str, budget_ids: Iterable[str], amount: float, at: datetime,
        expired_before: datetime,
    ) -> None:  # fmt: skip
        """Record a request's reservation on each budget durably (released by ``add_usages`` or
        ``release_reservation``); reservations made before ``expired_before`` are deleted on the way."""
        held = tables.budget_reservations
        ids = sorted(set(budget_ids))
        async with self._write() as tx:
            await tx.conn.execute(sa.delete(held).where(held.c.budget_id.in_(ids), held.c.created_at < expired_before))
            await tx.conn.execute(
                held.insert(), [{"id": reservation_id, "budget_id": b, "amount_usd": amount, "created_at": at}
                                for b in ids]
            )  # fmt: skip

    async def release_reservation(self: _HasConnections, reservation_id: str) -> None:
        held = tables.budget_reservations
        async with self._write() as tx:
            await tx.conn.execute(sa.delete(held).where(held.c.id == reservation_id))


def period_start(period: str, at: datetime) -> datetime:
    """The key of the budget period containing ``at``: 00:00 UTC of its day (``daily``), the 1st of its month
    (``monthly``), or 1970-01-01 (``total``, which never restarts)."""
    at = at.astimezone(UTC)
    if period == "daily":
        return at.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "monthly":
        return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return EPOCH


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _scopes(record: UsageRecord) -> list[tuple[str, str]]:
    return [(kind, value) for kind, column in _SCOPE_COLUMN.items() if (value := getattr(record, column))]


async def _charge(conn: AsyncConnection, records: Sequence[UsageRecord]) -> None:
    """Add the records' costs to the ledger of each budget they count against (inside their transaction)."""
    priced = [r for r in records if r.cost_usd]
    scopes = sorted({scope for r in priced for scope in _scopes(r)})
    if not scopes:
        return
    t = tables.budgets
    cond = sa.or_(*(sa.and_(t.c.entity_type == kind, t.c.entity_id == ident) for kind, ident in scopes))
    found = (await conn.execute(sa.select(t.c.id, t.c.entity_type, t.c.entity_id, t.c.period).where(cond))).all()
    if not found:
        return
    by_scope: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for budget_id, kind, ident, period in found:
        by_scope[(kind, ident)].append((budget_id, period))
    totals: dict[tuple[str, datetime], float] = defaultdict(float)
    for record in priced:
        for scope in _scopes(record):
            for budget_id, period in by_scope.get(scope, ()):
                totals[(budget_id, period_start(period, record.at))] += float(record.cost_usd or 0.0)
    now = datetime.now(UTC)
    values = [
        {"budget_id": b, "period_start": start, "spent_usd": usd, "updated_at": now}
        for (b, start), usd in sorted(totals.items())
    ]  # sorted: concurrent writers lock rows in one order
    await _upsert_spend(conn, values, add=True)


async def _recount(conn: AsyncConnection, budget: Budget, now: datetime) -> None:
    """Set the budget's current period in the ledger from the usage records (a budget created, or its period
    changed): the one time a budget sums its scope's history."""
    column = _SCOPE_COLUMN.get(budget.entity_type)
    if column is None:
        return
    if conn.dialect.name == "postgresql":
        # Inserts already running finish first (and are counted here); later ones wait, then see this budget.
        await conn.execute(sa.text("LOCK TABLE usage_records IN SHARE MODE"))
    u = tables.usage_records
    start = period_start(budget.period, now)
    total = (
        await conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(u.c.cost_usd), 0.0)).where(u.c[column] == budget.entity_id,
                                                                              u.c.at >= start)
        )
    ).scalar_one()  # fmt: skip
    row = {"budget_id": budget.id, "period_start": start, "spent_usd": float(total), "updated_at": now}
    await _upsert_spend(conn, [row], add=False)


async def _upsert_spend(conn: AsyncConnection, values: list[dict[str, Any]], *, add: bool) -> None:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    t = tables.budget_spend
    stmt = insert(t).values(values)
    spent = t.c.spent_usd + stmt.excluded.spent_usd if add else stmt.excluded.spent_usd
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[t.c.budget_id, t.c.period_start],
            set_={"spent_usd": spent, "updated_at": stmt.excluded.updated_at},
        )
    )
