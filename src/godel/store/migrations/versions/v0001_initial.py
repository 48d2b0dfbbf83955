"""The initial schema: the spec's tables (§2.4) adapted to Godel's models, plus the event log and transitions.

Written out operation by operation (not ``metadata.create_all``) so this revision stays what it was when later
revisions change ``godel.store.tables``. Runs on SQLite and PostgreSQL.

Revision ID: 0001_initial
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _bigkey() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _uuid() -> sa.String:
    return sa.String(36)


def _indexes(table: str, *indexes: tuple[str, list[str]]) -> None:
    for name, columns in indexes:
        op.create_index(name, table, columns, unique=False)


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", _uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("config", _json(), nullable=False),
        sa.Column("execution_strategy", sa.String(50), nullable=False),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("budget_allocated", sa.Float(), nullable=True),
        sa.Column("budget_consumed", sa.Float(), nullable=False),
        sa.Column("created_at", _ts(), nullable=True),
        sa.Column("updated_at", _ts(), nullable=True),
        sa.Column("completed_at", _ts(), nullable=True),
        sa.Column("metadata", _json(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_teams"),
    )
    _indexes("teams", ("ix_teams_status", ["status"]), ("ix_teams_created_at", ["created_at"]))

    op.create_table(
        "agents",
        sa.Column("id", _uuid(), nullable=False),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("lifecycle_state", sa.String(32), nullable=False),
        sa.Column("label", sa.String(255), nullable=True),
        sa.Column("team_id", _uuid(), nullable=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("config", _json(), nullable=False),
        sa.Column("repo", sa.Text(), nullable=True),
        sa.Column("base_ref", sa.String(255), nullable=False),
        sa.Column("base_commit", sa.String(64), nullable=True),
        sa.Column("branch", sa.String(255), nullable=True),
        sa.Column("worktree", sa.Text(), nullable=True),
        sa.Column("commits", _json(), nullable=False),
        sa.Column("snapshot_from", sa.String(64), nullable=True),
        sa.Column("setup", sa.Text(), nullable=True),
        sa.Column("cleanup", sa.String(32), nullable=False),
        sa.Column("cleanup_delay", sa.Float(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("timeout", sa.Float(), nullable=True),
        sa.Column("node_id", sa.String(255), nullable=True),
        sa.Column("next_attempt_at", _ts(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("pid_started", sa.Float(), nullable=True),
        sa.Column("log_dir", sa.Text(), nullable=True),
        sa.Column("log_offsets", _json(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("outcome", _json(), nullable=False),
        sa.Column("spawned_at", _ts(), nullable=False),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("completed_at", _ts(), nullable=True),
        sa.Column("pause_time", _ts(), nullable=True),
        sa.Column("paused_by", sa.String(255), nullable=True),
        sa.Column("runtime", sa.Float(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=True),
        sa.Column("retry_count", sa.Integer(), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("budget_limit", sa.Float(), nullable=True),
        sa.Column("budget_consumed", sa.Float(), nullable=False),
        sa.Column("context", _json(), nullable=True),
        sa.Column("metadata", _json(), nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], name="fk_agents_team_id_teams", ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_agents"),
    )
    _indexes(
        "agents",
        ("ix_agents_state_spawned", ["lifecycle_state", "spawned_at", "id"]),
        ("ix_agents_spawned", ["spawned_at", "id"]),
        ("ix_agents_team_spawned", ["team_id", "spawned_at", "id"]),
        ("ix_agents_label", ["label", "spawned_at", "id"]),
        ("ix_agents_model", ["model", "spawned_at", "id"]),
        ("ix_agents_admission", ["lifecycle_state", "priority", "spawned_at"]),
    )

    op.create_table(
        "agent_transitions",
        sa.Column("id", _bigkey(), autoincrement=True, nullable=False),
        sa.Column("agent_id", _uuid(), nullable=False),
        sa.Column("from_state", sa.String(32), nullable=False),
        sa.Column("to_state", sa.String(32), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("event_sequence", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name="fk_agent_transitions_agent_id_agents", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_agent_transitions"),
    )
    _indexes("agent_transitions", ("ix_agent_transitions_agent_id", ["agent_id", "id"]))

    op.create_table(
        "sessions",
        sa.Column("id", _uuid(), nullable=False),
        sa.Column("agent_id", _uuid(), nullable=False),
        sa.Column("parent_id", _uuid(), nullable=True),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("context", _json(), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("created_at", _ts(), nullable=True),
        sa.Column("updated_at", _ts(), nullable=True),
        sa.Column("completed_at", _ts(), nullable=True),
        sa.Column("metadata", _json(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], name="fk_sessions_agent_id_agents", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["sessions.id"], name="fk_sessions_parent_id_sessions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
    )
    _indexes(
        "sessions",
        ("ix_sessions_agent_id", ["agent_id"]),
        ("ix_sessions_parent_id", ["parent_id"]),
        ("ix_sessions_status", ["status"]),
    )

    op.create_table(
        "events",
        sa.Column("sequence", _bigkey(), autoincrement=True, nullable=False),
        sa.Column("id", _uuid(), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("timestamp", _ts(), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("source_component", sa.String(100), nullable=True),
        sa.Column("source_instance", sa.String(255), nullable=True),
        sa.Column("source_version", sa.String(50), nullable=True),
        sa.Column("correlation_id", sa.String(255), nullable=True),
        sa.Column("causation_id", sa.String(255), nullable=True),
        sa.Column("trace_id", sa.String(255), nullable=True),
        sa.Column("agent_id", _uuid(), nullable=True),
        sa.Column("team_id", _uuid(), nullable=True),
        sa.Column("workflow_id", _uuid(), nullable=True),
        sa.Column("user_id", sa.String(255), nullable=True),
        sa.Column("partition_key", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("sequence", name="pk_events"),
        sa.UniqueConstraint("id", name="uq_events_id"),
        sqlite_autoincrement=True,
    )
    _indexes(
        "events",
        ("ix_events_agent_id", ["agent_id", "sequence"]),
        ("ix_events_event_type", ["event_type", "sequence"]),
        ("ix_events_timestamp", ["timestamp"]),
    )
    for name, columns in (
        ("ix_events_team_id", ["team_id", "sequence"]),
        ("ix_events_correlation_id", ["correlation_id"]),
        ("ix_events_trace_id", ["trace_id"]),
    ):
        not_null = sa.text(f"{columns[0]} IS NOT NULL")
        op.create_index(name, "events", columns, unique=False, sqlite_where=not_null, postgresql_where=not_null)

    op.create_table(
        "snapshots",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("agent_id", _uuid(), nullable=False),
        sa.Column("ref", sa.String(255), nullable=False),
        sa.Column("commit", sa.String(64), nullable=False),
        sa.Column("parent_commit", sa.String(64), nullable=False),
        sa.Column("label", sa.String(255), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("metadata", _json(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], name="fk_snapshots_agent_id_agents", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_snapshots"),
    )
    _indexes("snapshots", ("ix_snapshots_agent_id", ["agent_id", "created_at"]))

    op.create_table(
        "nodes",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("max_agents", sa.Integer(), nullable=False),
        sa.Column("current_agents", sa.Integer(), nullable=False),
        sa.Column("last_heartbeat", _ts(), nullable=True),
        sa.Column("metadata", _json(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_nodes"),
    )

    op.create_table(
        "tasks",
        sa.Column("id", _uuid(), nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("agent_id", _uuid(), nullable=True),
        sa.Column("team_id", _uuid(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("result", _json(), nullable=True),
        sa.Column("created_at", _ts(), nullable=True),
        sa.Column("updated_at", _ts(), nullable=True),
        sa.Column("completed_at", _ts(), nullable=True),
        sa.Column("metadata", _json(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], name="fk_tasks_agent_id_agents", ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], name="fk_tasks_team_id_teams", ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
    )
    _indexes(
        "tasks",
        ("ix_tasks_status_priority", ["status", "priority"]),
        ("ix_tasks_agent_id", ["agent_id"]),
        ("ix_tasks_team_id", ["team_id"]),
    )

    op.create_table(
        "workflows",
        sa.Column("id", _uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("definition", _json(), nullable=False),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("current_step_id", sa.String(100), nullable=True),
        sa.Column("context", _json(), nullable=True),
        sa.Column("results", _json(), nullable=True),
        sa.Column("team_id", _uuid(), nullable=True),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("created_at", _ts(), nullable=True),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("completed_at", _ts(), nullable=True),
        sa.Column("metadata", _json(), nullable=True),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], name="fk_workflows_team_id_teams", ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_workflows"),
    )
    _indexes("workflows", ("ix_workflows_status", ["status"]), ("ix_workflows_team_id", ["team_id"]))

    op.create_table(
        "workflow_steps",
        sa.Column("id", _uuid(), nullable=False),
        sa.Column("workflow_id", _uuid(), nullable=False),
        sa.Column("step_id", sa.String(100), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("dependencies", _json(), nullable=True),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("result", _json(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("completed_at", _ts(), nullable=True),
        sa.Column("retry_count", sa.Integer(), nullable=False),
        sa.Column("agent_id", _uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name="fk_workflow_steps_agent_id_agents", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name="fk_workflow_steps_workflow_id_workflows",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_steps"),
        sa.UniqueConstraint("workflow_id", "step_id", name="uq_workflow_steps_workflow_id_step_id"),
    )

    op.create_table(
        "budgets",
        sa.Column("id", _uuid(), nullable=False),
        sa.Column("entity_type", sa.String(50), nullable=False),
        sa.Column("entity_id", sa.String(255), nullable=False),
        sa.Column("total_budget", sa.Float(), nullable=False),
        sa.Column("used_budget", sa.Float(), nullable=False),
        sa.Column("currency", sa.String(10), nullable=False),
        sa.Column("period_start", _ts(), nullable=True),
        sa.Column("period_end", _ts(), nullable=True),
        sa.Column("created_at", _ts(), nullable=True),
        sa.Column("updated_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_budgets"),
        sa.UniqueConstraint("entity_type", "entity_id", name="uq_budgets_entity_type_entity_id"),
    )

    op.create_table(
        "clusters",
        sa.Column("id", _uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("region", sa.String(100), nullable=True),
        sa.Column("endpoint", sa.String(500), nullable=False),
        sa.Column("api_version", sa.String(20), nullable=True),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("last_heartbeat", _ts(), nullable=True),
        sa.Column("health_score", sa.Integer(), nullable=False),
        sa.Column("max_agents", sa.Integer(), nullable=True),
        sa.Column("current_agents", sa.Integer(), nullable=False),
        sa.Column("metadata", _json(), nullable=False),
        sa.Column("created_at", _ts(), nullable=True),
        sa.Column("updated_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_clusters"),
    )
    _indexes("clusters", ("ix_clusters_status", ["status"]), ("ix_clusters_region", ["region"]))


def downgrade() -> None:
    # Dependents first; dropping a table drops its indexes.
    for table in (
        "clusters",
        "budgets",
        "workflow_steps",
        "workflows",
        "tasks",
        "nodes",
        "snapshots",
        "events",
        "sessions",
        "agent_transitions",
        "agents",
        "teams",
    ):
        op.drop_table(table)
