"""Budget ledger (running totals, durable reservations).

``budget_spend`` holds what each budget spent in each period, kept with the usage records; ``budget_reservations``
the in-flight reservations of servers sharing budgets through Redis; ``usage_records.cost_estimated`` marks a cost
that is the budget's estimate. Existing budgets get their current period's total summed once, here.

Revision ID: 0005_budget_ledger
Revises: 0004_auth
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from godel.store.tables import UTCDateTime  # binds timestamps exactly as the application does

revision: str = "0005_budget_ledger"
down_revision: str | None = "0004_auth"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SCOPE_COLUMN = {"agent": "agent_id", "team": "team_id", "user": "user_name"}


def _period_start(period: str, now: datetime) -> datetime:
    # The same keys as godel.store.gateway.period_start (copied: a migration must not change with the code).
    if period == "daily":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "monthly":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return datetime(1970, 1, 1, tzinfo=UTC)


def upgrade() -> None:
    op.create_table(
        "budget_spend",
        sa.Column("budget_id", sa.String(36), primary_key=True),
        sa.Column("period_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("spent_usd", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "budget_reservations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("budget_id", sa.String(36), primary_key=True),
        sa.Column("amount_usd", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_budget_reservations_budget_id_created_at", "budget_reservations", ["budget_id", "created_at"])
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("cost_estimated", sa.Boolean(), nullable=False, server_default=sa.false()))

    # Backfill: each budget's current period, summed once from the usage records.
    conn = op.get_bind()
    now = datetime.now(UTC)
    usage = sa.table(
        "usage_records", sa.column("cost_usd", sa.Float()), sa.column("at", UTCDateTime()),
        *(sa.column(c, sa.String()) for c in _SCOPE_COLUMN.values()),
    )  # fmt: skip
    spend = sa.table(
        "budget_spend", sa.column("budget_id", sa.String()), sa.column("period_start", UTCDateTime()),
        sa.column("spent_usd", sa.Float()), sa.column("updated_at", UTCDateTime()),
    )  # fmt: skip
    budgets = conn.execute(sa.text("SELECT id, entity_type, entity_id, period FROM budgets")).all()
    for budget_id, entity_type, entity_id, period in budgets:
        column = _SCOPE_COLUMN.get(entity_type)
        if column is None:
            continue
        start = _period_start(period, now)
        total = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(usage.c.cost_usd), 0.0)).where(
                usage.c[column] == entity_id, usage.c.at >= start
            )
        ).scalar_one()
        conn.execute(
            spend.insert().values(budget_id=budget_id, period_start=start, spent_usd=float(total), updated_at=now)
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("cost_estimated")
    op.drop_index("ix_budget_reservations_budget_id_created_at", "budget_reservations")
    op.drop_table("budget_reservations")
    op.drop_table("budget_spend")
