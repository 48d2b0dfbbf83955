"""The SQL schema, as SQLAlchemy Core tables shared by SQLite and PostgreSQL.

One ``MetaData`` for both dialects, so a query is written once: types are the portable ones
(``String(36)`` for UUIDs, ``JSON`` that becomes ``JSONB`` on PostgreSQL, ``Float`` for money) and every
timestamp goes through ``UTCDateTime``, which stores UTC and always reads back an aware datetime (SQLite has
no time zones and would otherwise hand back naive values).

The tables follow the spec (§2.4) adapted to ``godel.core.models``: an agent's one state truth is the
``lifecycle_state`` column (holding ``AgentState`` values; the spec's ``status`` is derived, never stored),
and the event log has a store-assigned ``sequence`` and no foreign keys, because it is append-only and
outlives the agents it talks about. Migrations (``store/migrations``) create exactly this; a test compares
them. The tables of identities, the audit log and webhooks are in ``access_tables`` (re-exported here, so every
table is ``tables.<name>``); the column types in ``columns``.
"""

from __future__ import annotations

import sqlalchemy as sa

from godel.core.clock import utcnow

# Every table under one name (``tables.<name>``), whichever module defines it.
from godel.store.access_tables import (
    api_keys as api_keys,
)
from godel.store.access_tables import (
    audit_log as audit_log,
)
from godel.store.access_tables import (
    refresh_tokens as refresh_tokens,
)
from godel.store.access_tables import (
    roles as roles,
)
from godel.store.access_tables import (
    users as users,
)
from godel.store.access_tables import (
    webhook_attempts as webhook_attempts,
)
from godel.store.access_tables import (
    webhook_deliveries as webhook_deliveries,
)
from godel.store.access_tables import (
    webhook_subscriptions as webhook_subscriptions,
)
from godel.store.columns import BigIntKey, Json, Uuid, created_columns
from godel.store.columns import UTCDateTime as UTCDateTime
from godel.store.columns import metadata as metadata

teams = sa.Table(
    "teams",
    metadata,
    sa.Column("id", Uuid, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("description", sa.Text(), nullable=True),
    sa.Column("config", Json(), nullable=False, default=dict),
    sa.Column("execution_strategy", sa.String(50), nullable=False, default="parallel"),
    sa.Column("status", sa.String(50), nullable=False, default="creating"),
    sa.Column("budget_allocated", sa.Float(), nullable=True),
    sa.Column("budget_consumed", sa.Float(), nullable=False, default=0.0),
    *created_columns(),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    sa.Column("metadata", Json(), nullable=False, default=dict),
    sa.Index("ix_teams_status", "status"),
    sa.Index("ix_teams_created_at", "created_at"),
)

# One column per field of ``godel.core.models.Agent``; ``Agent.state`` lives in ``lifecycle_state``.
agents = sa.Table(
    "agents",
    metadata,
    sa.Column("id", Uuid, primary_key=True),
    sa.Column("task", sa.Text(), nullable=False),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("lifecycle_state", sa.String(32), nullable=False),
    sa.Column("label", sa.String(255), nullable=True),
    sa.Column("team_id", Uuid, sa.ForeignKey("teams.id", ondelete="SET NULL"), nullable=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("config", Json(), nullable=False),
    sa.Column("repo", sa.Text(), nullable=True),
    sa.Column("base_ref", sa.String(255), nullable=False),
    sa.Column("base_commit", sa.String(64), nullable=True),
    sa.Column("branch", sa.String(255), nullable=True),
    sa.Column("worktree", sa.Text(), nullable=True),
    sa.Column("commits", Json(), nullable=False),
    sa.Column("snapshot_from", sa.String(64), nullable=True),
    sa.Column("runtime_name", sa.String(64), nullable=True),  # which runtime (local, sandbox, …): handles route by it
    sa.Column("setup", sa.Text(), nullable=True),
    sa.Column("cleanup", sa.String(32), nullable=False),
    sa.Column("cleanup_delay", sa.Float(), nullable=False),
    sa.Column("priority", sa.Integer(), nullable=False),
    sa.Column("timeout", sa.Float(), nullable=True),
    sa.Column("node_id", sa.String(255), nullable=True),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("pid", sa.Integer(), nullable=True),
    sa.Column("pid_started", sa.Float(), nullable=True),
    sa.Column("log_dir", sa.Text(), nullable=True),
    sa.Column("log_offsets", Json(), nullable=False),
    sa.Column("exit_code", sa.Integer(), nullable=True),
    sa.Column("outcome", Json(), nullable=False),
    # NOT NULL: it is half of the keyset the listing pages on, and NULLs do not compare.
    sa.Column("spawned_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    sa.Column("pause_time", UTCDateTime(), nullable=True),
    sa.Column("paused_by", sa.String(255), nullable=True),
    sa.Column("runtime", sa.Float(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=True),
    sa.Column("retry_count", sa.Integer(), nullable=False),
    sa.Column("max_retries", sa.Integer(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("budget_limit", sa.Float(), nullable=True),
    sa.Column("budget_consumed", sa.Float(), nullable=False),
    sa.Column("context", Json(), nullable=True),
    sa.Column("metadata", Json(), nullable=False),
    sa.Column("owner", sa.String(255), nullable=True),  # the principal that spawned it (``user:NAME``), for RBAC
    # Listing: newest first, optionally by state; the spec's single-column state index is this one's prefix.
    sa.Index("ix_agents_state_spawned", "lifecycle_state", "spawned_at", "id"),
    sa.Index("ix_agents_spawned", "spawned_at", "id"),
    # Each equality filter of the listing leads an index that already holds the listing's order, so a page
    # is a range scan whatever the number of matching rows (a lone ``model`` index would sort all of them).
    sa.Index("ix_agents_team_spawned", "team_id", "spawned_at", "id"),
    sa.Index("ix_agents_label", "label", "spawned_at", "id"),
    sa.Index("ix_agents_model", "model", "spawned_at", "id"),
    sa.Index("ix_agents_owner", "owner", "spawned_at", "id"),  # a caller limited to its own (or team's) agents
    # Admission: pending agents by priority, oldest first.
    sa.Index("ix_agents_admission", "lifecycle_state", "priority", "spawned_at"),
)

agent_transitions = sa.Table(
    "agent_transitions",
    metadata,
    sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("agent_id", Uuid, sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    sa.Column("from_state", sa.String(32), nullable=False),
    sa.Column("to_state", sa.String(32), nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("event_sequence", sa.BigInteger(), nullable=True),
    sa.Index("ix_agent_transitions_agent_id", "agent_id", "id"),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", Uuid, primary_key=True),
    sa.Column("agent_id", Uuid, sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    sa.Column("parent_id", Uuid, sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=True),
    sa.Column("status", sa.String(50), nullable=False),
    sa.Column("context", Json(), nullable=False),
    sa.Column("depth", sa.Integer(), nullable=False),
    *created_columns(),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    sa.Column("metadata", Json(), nullable=False),
    sa.Index("ix_sessions_agent_id", "agent_id"),
    sa.Index("ix_sessions_parent_id", "parent_id"),
    sa.Index("ix_sessions_status", "status"),
)


def _where_not_null(name: str, column: str, *more: str) -> sa.Index:
    condition = sa.text(f"{column} IS NOT NULL")
    return sa.Index(name, column, *more, sqlite_where=condition, postgresql_where=condition)


_SPARSE_INDEXES = [
    ("ix_events_team_id", "team_id", "sequence"),
    ("ix_events_correlation_id", "correlation_id"),
    ("ix_events_trace_id", "trace_id"),
]

# The durable event log. ``sequence`` is assigned by the database in commit order (see ``store.engine``) and
# never reused (AUTOINCREMENT on SQLite), so a reader resuming after sequence N misses nothing.
events = sa.Table(
    "events",
    metadata,
    sa.Column("sequence", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("id", Uuid, nullable=False),
    sa.Column("event_type", sa.String(100), nullable=False),
    sa.Column("timestamp", UTCDateTime(), nullable=False),
    sa.Column("payload", Json(), nullable=False),
    sa.Column("source_component", sa.String(100), nullable=True),
    sa.Column("source_instance", sa.String(255), nullable=True),
    sa.Column("source_version", sa.String(50), nullable=True),
    # Correlation ids come from clients and are not necessarily UUIDs.
    sa.Column("correlation_id", sa.String(255), nullable=True),
    sa.Column("causation_id", sa.String(255), nullable=True),
    sa.Column("trace_id", sa.String(255), nullable=True),
    sa.Column("agent_id", Uuid, nullable=True),
    sa.Column("team_id", Uuid, nullable=True),
    sa.Column("workflow_id", Uuid, nullable=True),
    sa.Column("user_id", sa.String(255), nullable=True),
    sa.Column("partition_key", sa.String(100), nullable=True),
    sa.UniqueConstraint("id"),
    sa.Index("ix_events_agent_id", "agent_id", "sequence"),
    sa.Index("ix_events_event_type", "event_type", "sequence"),
    sa.Index("ix_events_timestamp", "timestamp"),
    # Mostly NULL and only ever looked up by value: partial indexes skip the NULLs, so appends stay cheap.
    *(_where_not_null(name, column, *rest) for name, column, *rest in _SPARSE_INDEXES),
    sqlite_autoincrement=True,
)

snapshots = sa.Table(
    "snapshots",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("agent_id", Uuid, sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    sa.Column("ref", sa.String(255), nullable=False),
    sa.Column("commit", sa.String(64), nullable=False),
    sa.Column("parent_commit", sa.String(64), nullable=False),
    sa.Column("label", sa.String(255), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("metadata", Json(), nullable=False),
    sa.Index("ix_snapshots_agent_id", "agent_id", "created_at"),
)

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("max_agents", sa.Integer(), nullable=False),
    sa.Column("current_agents", sa.Integer(), nullable=False),
    sa.Column("last_heartbeat", UTCDateTime(), nullable=True),
    sa.Column("metadata", Json(), nullable=False),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", Uuid, primary_key=True),
    sa.Column("title", sa.String(255), nullable=False),
    sa.Column("description", sa.Text(), nullable=False, default=""),
    sa.Column("priority", sa.Integer(), nullable=False, default=0),
    sa.Column("status", sa.String(32), nullable=False, default="pending"),
    sa.Column("agent_id", Uuid, sa.ForeignKey("agents.id", ondelete="SET NULL"), nullable=True),
    sa.Column("team_id", Uuid, sa.ForeignKey("teams.id", ondelete="SET NULL"), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False, default=0),
    sa.Column("result", Json(), nullable=True),
    *created_columns(),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    sa.Column("metadata", Json(), nullable=False, default=dict),
    sa.Index("ix_tasks_status_priority", "status", "priority"),
    sa.Index("ix_tasks_agent_id", "agent_id"),
    sa.Index("ix_tasks_team_id", "team_id"),
)

workflows = sa.Table(
    "workflows",
    metadata,
    sa.Column("id", Uuid, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("description", sa.Text(), nullable=True),
    sa.Column("definition", Json(), nullable=False),
    sa.Column("status", sa.String(50), nullable=False, default="pending"),
    sa.Column("current_step_id", sa.String(100), nullable=True),
    sa.Column("context", Json(), nullable=True),
    sa.Column("results", Json(), nullable=True),
    sa.Column("team_id", Uuid, sa.ForeignKey("teams.id", ondelete="SET NULL"), nullable=True),
    sa.Column("created_by", sa.String(255), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=True, default=utcnow),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    sa.Column("metadata", Json(), nullable=True),
    sa.Index("ix_workflows_status", "status"),
    sa.Index("ix_workflows_team_id", "team_id"),
)

# The spec's separate index on workflow_id is the prefix of the unique constraint's index.
workflow_steps = sa.Table(
    "workflow_steps",
    metadata,
    sa.Column("id", Uuid, primary_key=True),
    sa.Column("workflow_id", Uuid, sa.ForeignKey("workflows.id", ondelete="CASCADE"), nullable=False),
    sa.Column("step_id", sa.String(100), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("task", sa.Text(), nullable=False),
    sa.Column("dependencies", Json(), nullable=True),
    sa.Column("status", sa.String(50), nullable=False, default="pending"),
    sa.Column("result", Json(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    sa.Column("retry_count", sa.Integer(), nullable=False, default=0),
    sa.Column("agent_id", Uuid, sa.ForeignKey("agents.id", ondelete="SET NULL"), nullable=True),
    sa.UniqueConstraint("workflow_id", "step_id"),
)

budgets = sa.Table(
    "budgets",
    metadata,
    sa.Column("id", Uuid, primary_key=True),
    sa.Column("entity_type", sa.String(50), nullable=False),  # agent, team, user, organization
    sa.Column("entity_id", sa.String(255), nullable=False),
    sa.Column("total_budget", sa.Float(), nullable=False),
    sa.Column("used_budget", sa.Float(), nullable=False, default=0.0),
    sa.Column("currency", sa.String(10), nullable=False, default="USD"),
    sa.Column("period_start", UTCDateTime(), nullable=True),
    sa.Column("period_end", UTCDateTime(), nullable=True),
    *created_columns(),
    # daily | monthly | total: the spend counted against total_budget is the current period's (0003_budgets)
    sa.Column("period", sa.String(20), nullable=False, server_default="total"),
    sa.UniqueConstraint("entity_type", "entity_id"),
)

clusters = sa.Table(
    "clusters",
    metadata,
    sa.Column("id", Uuid, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("region", sa.String(100), nullable=True),
    sa.Column("endpoint", sa.String(500), nullable=False),
    sa.Column("api_version", sa.String(20), nullable=True),
    sa.Column("status", sa.String(50), nullable=False, default="offline"),
    sa.Column("last_heartbeat", UTCDateTime(), nullable=True),
    sa.Column("health_score", sa.Integer(), nullable=False, default=100),
    sa.Column("max_agents", sa.Integer(), nullable=True),
    sa.Column("current_agents", sa.Integer(), nullable=False, default=0),
    sa.Column("metadata", Json(), nullable=False, default=dict),
    *created_columns(),
    sa.Index("ix_clusters_status", "status"),
    sa.Index("ix_clusters_region", "region"),
)

# ------------------------------------------------------------------------------------------- the LLM gateway

# A virtual key is stored as the SHA-256 of its text: keys are 256-bit random tokens, so a fast hash is enough
# (a slow password hash would cost every proxied request for nothing); ``prefix`` is what lists show.
virtual_keys = sa.Table(
    "virtual_keys",
    metadata,
    sa.Column("id", Uuid, primary_key=True),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("prefix", sa.String(32), nullable=False),
    sa.Column("scope_type", sa.String(20), nullable=False),  # agent, team, user
    sa.Column("scope_id", sa.String(255), nullable=False),
    sa.Column("models", Json(), nullable=False),  # "provider/model" names allowed; [] = every configured model
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
    *created_columns(),
    sa.Column("metadata", Json(), nullable=False),
    sa.UniqueConstraint("key_hash", name="uq_virtual_keys_key_hash"),
    sa.Index("ix_virtual_keys_scope_type_scope_id", "scope_type", "scope_id"),
)

# One row per proxied request. No foreign keys: the record of what was spent outlives the agent it was for.
usage_records = sa.Table(
    "usage_records",
    metadata,
    sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("key_id", sa.String(36), nullable=True),
    sa.Column("agent_id", sa.String(36), nullable=True),
    sa.Column("team_id", sa.String(36), nullable=True),
    sa.Column("user_name", sa.String(255), nullable=True),
    sa.Column("provider", sa.String(100), nullable=False),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("wire", sa.String(30), nullable=False),
    sa.Column("stream", sa.Boolean(), nullable=False),
    sa.Column("status_code", sa.Integer(), nullable=False),
    sa.Column("input_tokens", sa.Integer(), nullable=False),
    sa.Column("output_tokens", sa.Integer(), nullable=False),
    sa.Column("cached_tokens", sa.Integer(), nullable=False),
    sa.Column("cost_usd", sa.Float(), nullable=True),
    sa.Column("latency_ms", sa.Float(), nullable=False),
    sa.Column("complete", sa.Boolean(), nullable=False),  # the response's own usage was seen to the end
    sa.Column("error", sa.Text(), nullable=True),
    sa.Index("ix_usage_records_at", "at"),
    sa.Index("ix_usage_records_agent_id_at", "agent_id", "at"),
    sa.Index("ix_usage_records_team_id_at", "team_id", "at"),
    sa.Index("ix_usage_records_user_name_at", "user_name", "at"),
)

# ---- budget ledger (0005_budget_ledger) ------------------------------------------------------------------------
# The running total each budget has spent in each of its periods (``period_start``: 00:00 UTC of the day, the 1st
# of the month, or 1970-01-01 for ``total``), kept in the same transaction as the usage records it sums, so an
# admission reads one row instead of summing the scope's whole history.
budget_spend = sa.Table(
    "budget_spend",
    metadata,
    sa.Column("budget_id", Uuid, primary_key=True),
    sa.Column("period_start", UTCDateTime(), primary_key=True),
    sa.Column("spent_usd", sa.Float(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# What the requests in flight reserved on each budget, while several servers share the budgets (Redis): durable,
# so a Redis that restarts (and forgets) loses no reservation. Deleted in the transaction of the request's usage
# record; a row older than the reservation TTL belongs to a server that died mid-request and no longer counts.
budget_reservations = sa.Table(
    "budget_reservations",
    metadata,
    sa.Column("id", Uuid, primary_key=True),
    sa.Column("budget_id", Uuid, primary_key=True),
    sa.Column("amount_usd", sa.Float(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_budget_reservations_budget_id_created_at", "budget_id", "created_at"),
)

# A request whose cost could not be computed from its usage (no usage in the answer, or no price for the model
# that served it) under a budget is charged its reservation's estimate, and says so here.
usage_records.append_column(
    sa.Column("cost_estimated", sa.Boolean(), nullable=False, server_default=sa.false(), default=False)
)
