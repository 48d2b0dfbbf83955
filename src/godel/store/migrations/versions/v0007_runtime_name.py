"""The runtime each agent runs in (``agents.runtime_name``): a server offers several, chosen per agent.

Revision ID: 0007_runtime_name
Revises: 0006_webhooks
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_runtime_name"
down_revision: str | None = "0006_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL for the agents of earlier versions: they ran in the server's default runtime, which is what NULL means.
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("runtime_name", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("runtime_name")
