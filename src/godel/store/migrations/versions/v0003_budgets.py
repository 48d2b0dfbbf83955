"""Budgets get a period (daily, monthly or total); usage records an index by user for user budgets.

Revision ID: 0003_budgets
Revises: 0002_gateway
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_budgets"
down_revision: str | None = "0002_gateway"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("budgets", sa.Column("period", sa.String(20), nullable=False, server_default="total"))
    op.create_index("ix_usage_records_user_name_at", "usage_records", ["user_name", "at"])


def downgrade() -> None:
    op.drop_index("ix_usage_records_user_name_at", "usage_records")
    with op.batch_alter_table("budgets") as batch:
        batch.drop_column("period")
