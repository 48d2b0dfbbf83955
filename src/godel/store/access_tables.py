"""The tables of identities and credentials, the audit log (``godel.auth``) and webhooks (``godel.webhooks``)."""

from __future__ import annotations

import sqlalchemy as sa

from godel.store.columns import BigIntKey, Json, UTCDateTime, Uuid, metadata

# --- Identities, credentials and the audit log (godel.auth) ---

# People (and service accounts). ``roles`` names built-in or custom roles; ``team`` is the group the ``team`` scope
# of a permission refers to. A user created by single sign-on has ``oidc_subject`` (issuer + "|" + sub).
users = sa.Table(
    "users",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("password_hash", sa.Text(), nullable=True),  # argon2id; NULL: no password login (SSO, keys only)
    sa.Column("roles", Json(), nullable=False),
    sa.Column("team", sa.String(255), nullable=True),
    sa.Column("oidc_subject", sa.String(512), nullable=True, unique=True),
    sa.Column("disabled", sa.Boolean(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# Custom roles; the built-in ones live in code (``godel.auth.permissions``) and cannot be changed.
roles = sa.Table(
    "roles",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("permissions", Json(), nullable=False),
    sa.Column("description", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

# API keys of users (``godel_sk_``, argon2id) and the per-run credentials of agents (``godel_ak_``, SHA-256: 256
# random bits need no key stretching, and a spawn must not pay tens of milliseconds for it). Looked up by ``id``,
# the public part of the key's text.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # user | agent
    sa.Column("user_name", sa.String(255), nullable=True),
    sa.Column("agent_id", sa.String(36), nullable=True),
    sa.Column("name", sa.String(255), nullable=True),
    sa.Column("prefix", sa.String(32), nullable=False),
    sa.Column("key_hash", sa.Text(), nullable=False),
    sa.Column("grants", Json(), nullable=True),  # an agent credential's extra grants (sub-agents allowed)
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
    sa.Index("ix_api_keys_user_name", "user_name"),
    sa.Index("ix_api_keys_agent_id", "agent_id"),
)

# Refresh tokens: each use replaces the token by a new one of the same ``family``; presenting a used one again
# (a stolen copy) revokes the whole family, which also ends the access tokens issued from it.
refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("family", sa.String(32), nullable=False),
    sa.Column("user_name", sa.String(255), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("used_at", UTCDateTime(), nullable=True),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Index("ix_refresh_tokens_family", "family"),
)

# The audit log: append-only (triggers refuse UPDATE and DELETE on both dialects), each row carrying the hash of
# the previous one, so a row altered or removed behind Godel's back breaks the chain at that row.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", BigIntKey, primary_key=True, autoincrement=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("resource", sa.Text(), nullable=True),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("status_code", sa.Integer(), nullable=True),
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("client", sa.String(255), nullable=True),
    sa.Column("details", Json(), nullable=True),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Index("ix_audit_log_at", "at"),
    sa.Index("ix_audit_log_actor", "actor", "seq"),
)

# ---- webhooks (0006_webhooks) ---------------------------------------------------------------------------------
# Subscriptions by event pattern, each owned by the principal that created it (it receives only what that principal
# may read). ``secret`` signs every delivery; it is shown once at creation and never returned again.
webhook_subscriptions = sa.Table(
    "webhook_subscriptions",
    metadata,
    sa.Column("id", Uuid, primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("patterns", Json(), nullable=False),
    sa.Column("secret", sa.Text(), nullable=False),
    sa.Column("description", sa.Text(), nullable=True),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("consecutive_failures", sa.Integer(), nullable=False),
    sa.Column("disabled_reason", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=True),
    sa.Index("ix_webhook_subscriptions_owner", "owner"),
)

# The durable queue and record of deliveries: one row per (subscription, event), pending until delivered or given
# up. ``body`` is the exact JSON every attempt sends and signs.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", Uuid, primary_key=True),
    sa.Column("subscription_id", Uuid, sa.ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"), nullable=False),
    sa.Column("event_id", Uuid, nullable=False),
    sa.Column("event_type", sa.String(100), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending | delivered | failed
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    sa.UniqueConstraint("subscription_id", "event_id"),
    sa.Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    sa.Index("ix_webhook_deliveries_subscription_id_created_at", "subscription_id", "created_at"),
)

# Every attempt of every delivery: what the receiver answered (or why there was no answer), and how long it took.
webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", Uuid, sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False),
    sa.Column("subscription_id", Uuid, nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("status_code", sa.Integer(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("latency_ms", sa.Float(), nullable=False),
    sa.Index("ix_webhook_attempts_delivery_id", "delivery_id", "id"),
)
