"""Webhook subscriptions, their durable delivery queue and the log of every attempt.

A delivery is a row from the moment an event matches a subscription until it is delivered or given up, so a
server restart loses none (at-least-once). The queue is claimed, not locked: ``claim_webhook_deliveries`` moves
each due row's ``next_attempt_at`` forward by a lease in the transaction that picks it, so two dispatchers (two
servers on one database) never send the same attempt at once, and a dispatcher that dies mid-send leaves a row
that comes due again when the lease runs out.

``finish_webhook_attempt`` records one attempt and its consequences in one transaction: the attempt row, the
delivery's new state (delivered, retried later, or failed for good) and the subscription's count of consecutive
failed deliveries; when that count reaches the threshold the subscription is disabled and ``webhook:disabled`` is
appended with it, so the bus hears of it after the commit like any other event.

Secrets are stored as they are (``godel.auth`` has no encryption helper yet); no listing returns them: the
dataclass keeps the secret out of ``repr`` and the API renders subscriptions without it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from godel.core.events import Event, EventMetadata
from godel.errors import NotFoundError
from godel.store import rows, tables
from godel.store.engine import insert_with_upsert
from godel.store.host import StoreHost, source_of


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its next attempt (or being attempted under a claim)
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # every attempt failed; counted against the subscription


@dataclass(frozen=True)
class WebhookSubscription:
    id: str
    owner: str  # the principal that created it (``user:alice``); it receives only what that principal may read
    url: str
    patterns: list[str]
    secret: str = field(repr=False)
    description: str | None = None
    enabled: bool = True
    consecutive_failures: int = 0  # failed deliveries in a row; reset by a delivered one or re-enabling
    disabled_reason: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class WebhookDelivery:
    id: str  # sent as ``Godel-Delivery-Id``: the same on every attempt, so receivers can dedupe
    subscription_id: str
    event_id: str
    event_type: str
    body: str  # the exact JSON sent (and signed) on every attempt
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    completed_at: datetime | None = None


@dataclass(frozen=True)
class WebhookAttempt:
    delivery_id: str
    subscription_id: str
    attempt: int  # 1-based
    at: datetime
    status_code: int | None  # None: no answer (refused, timed out, TLS …), see ``error``
    error: str | None
    latency_ms: float
    id: int | None = None


SUBSCRIPTIONS = rows.Mapper(WebhookSubscription, tables.webhook_subscriptions)
DELIVERIES = rows.Mapper(WebhookDelivery, tables.webhook_deliveries)
ATTEMPTS = rows.Mapper(WebhookAttempt, tables.webhook_attempts)
_CHANGEABLE = frozenset({"url", "patterns", "description", "enabled"})


def _not_found(subscription_id: str) -> NotFoundError:
    return NotFoundError(f"webhook {subscription_id!r} not found", details={"webhookId": subscription_id})


async def _get(conn: AsyncConnection, subscription_id: str, *, for_update: bool = False) -> WebhookSubscription:
    t = tables.webhook_subscriptions
    stmt = sa.select(t).where(t.c.id == subscription_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = (await conn.execute(stmt)).first()
    if row is None:
        raise _not_found(subscription_id)
    return SUBSCRIPTIONS.from_row(row)


def disabled_event(sub: WebhookSubscription, reason: str, at: datetime) -> Event:
    # In the owner's name (``user:alice`` as source, like an event the owner published): who may read an event
    # follows its source when it names no agent, team or workflow, so the owner may read this one.
    source = source_of(sub.owner, "webhooks")
    return Event(
        type="webhook:disabled",
        payload={"webhookId": sub.id, "owner": sub.owner, "url": sub.url, "reason": reason},
        source=source,
        metadata=EventMetadata(user_id=source.instance if source.component == "user" else None),
        timestamp=at,
    )


class WebhookQueries:
    """Mixed into ``SqlStore`` (which provides ``_write``, ``_read`` and ``_clock``)."""

    async def add_webhook(self: StoreHost, sub: WebhookSubscription) -> WebhookSubscription:
        now = self._clock.now()
        sub = dataclasses.replace(sub, created_at=sub.created_at or now, updated_at=now)
        async with self._write() as tx:
            await tx.conn.execute(tables.webhook_subscriptions.insert(), SUBSCRIPTIONS.to_row(sub))
        return sub

    async def get_webhook(self: StoreHost, subscription_id: str) -> WebhookSubscription:
        async with self._read() as conn:
            return await _get(conn, subscription_id)

    async def list_webhooks(
        self: StoreHost, *, owner: str | None = None, enabled: bool | None = None
    ) -> list[WebhookSubscription]:
        t = tables.webhook_subscriptions
        stmt = sa.select(t).order_by(t.c.created_at, t.c.id)
        if owner is not None:
            stmt = stmt.where(t.c.owner == owner)
        if enabled is not None:
            stmt = stmt.where(t.c.enabled == enabled)
        async with self._read() as conn:
            return SUBSCRIPTIONS.from_rows(await conn.execute(stmt))

    async def update_webhook(self: StoreHost, subscription_id: str, changes: dict[str, Any]) -> WebhookSubscription:
        """Change url, patterns, description or enabled; enabling again starts the failure count afresh."""
        unknown = set(changes) - _CHANGEABLE
        if unknown:
            raise ValueError(f"webhook fields not changeable: {sorted(unknown)}")
        values = dict(changes, updated_at=self._clock.now())
        if changes.get("enabled") is True:
            values |= {"consecutive_failures": 0, "disabled_reason": None}
        t = tables.webhook_subscriptions
        async with self._write() as tx:
            stmt = sa.update(t).where(t.c.id == subscription_id).values(SUBSCRIPTIONS.values(values)).returning(*t.c)
            row = (await tx.conn.execute(stmt)).first()
        if row is None:
            raise _not_found(subscription_id)
        return SUBSCRIPTIONS.from_row(row)

    async def delete_webhook(self: StoreHost, subscription_id: str) -> None:
        async with self._write() as tx:
            for table in (tables.webhook_attempts, tables.webhook_deliveries):
                await tx.conn.execute(sa.delete(table).where(table.c.subscription_id == subscription_id))
            t = tables.webhook_subscriptions
            if (await tx.conn.execute(sa.delete(t).where(t.c.id == subscription_id))).rowcount == 0:
                raise _not_found(subscription_id)

    async def enqueue_webhook_deliveries(self: StoreHost, deliveries: list[WebhookDelivery]) -> None:
        """Insert deliveries; one that already exists (same subscription and event) is skipped, so an event
        heard twice (a replay, a second server) is still delivered once per subscription."""
        if not deliveries:
            return
        t = tables.webhook_deliveries
        async with self._write() as tx:
            stmt = insert_with_upsert(tx.conn, t).on_conflict_do_nothing(index_elements=["subscription_id", "event_id"])
            await tx.conn.execute(stmt, [DELIVERIES.to_row(d) for d in deliveries])

    async def claim_webhook_deliveries(
        self: StoreHost, now: datetime, *, limit: int, lease: float
    ) -> list[WebhookDelivery]:
        """Due pending deliveries of enabled subscriptions, oldest first, each claimed for ``lease`` seconds."""
        if limit <= 0:
            return []
        d, s = tables.webhook_deliveries, tables.webhook_subscriptions
        stmt = (
            sa.select(d)
            .join(s, s.c.id == d.c.subscription_id)
            .where(d.c.status == DeliveryStatus.PENDING.value, d.c.next_attempt_at <= now, s.c.enabled.is_(True))
            .order_by(d.c.next_attempt_at, d.c.id)
            .limit(limit)
        )
        until = now + timedelta(seconds=lease)
        claimed: list[WebhookDelivery] = []
        async with self._write() as tx:
            for delivery in DELIVERIES.from_rows(await tx.conn.execute(stmt)):
                # Only if nobody claimed it since we read it (another server's transaction).
                result = await tx.conn.execute(
                    sa.update(d)
                    .where(d.c.id == delivery.id, d.c.next_attempt_at == delivery.next_attempt_at)
                    .values(next_attempt_at=until)
                )
                if result.rowcount == 1:
                    claimed.append(delivery)
        return claimed

    async def release_webhook_deliveries(self: StoreHost, delivery_ids: list[str], at: datetime) -> None:
        """Hand claimed deliveries back (a dispatcher stopping mid-send): due again at ``at``."""
        if not delivery_ids:
            return
        d = tables.webhook_deliveries
        async with self._write() as tx:
            await tx.conn.execute(
                sa.update(d)
                .where(d.c.id.in_(delivery_ids), d.c.status == DeliveryStatus.PENDING.value)
                .values(next_attempt_at=at)
            )

    async def finish_webhook_attempt(
        self: StoreHost, attempt: WebhookAttempt, *, delivered: bool, retry_at: datetime | None, disable_after: int
    ) -> WebhookSubscription | None:
        """Record an attempt. Not delivered and no ``retry_at``: the delivery failed for good. Returns the
        subscription when this attempt disabled it."""
        d, s = tables.webhook_deliveries, tables.webhook_subscriptions
        row = ATTEMPTS.to_row(attempt)
        del row["id"]  # assigned by the database
        disabled = None
        async with self._write(events=True) as tx:
            await tx.conn.execute(tables.webhook_attempts.insert(), row)
            delivery: dict[str, Any] = {"attempts": attempt.attempt}
            if delivered:
                delivery |= {"status": DeliveryStatus.DELIVERED.value, "completed_at": attempt.at}
            elif retry_at is not None:
                delivery |= {"next_attempt_at": retry_at}
            else:
                delivery |= {"status": DeliveryStatus.FAILED.value, "completed_at": attempt.at}
            await tx.conn.execute(sa.update(d).where(d.c.id == attempt.delivery_id).values(delivery))
            if delivered:
                await tx.conn.execute(
                    sa.update(s).where(s.c.id == attempt.subscription_id).values(consecutive_failures=0)
                )
            elif retry_at is None:
                try:
                    sub = await _get(tx.conn, attempt.subscription_id, for_update=True)
                except NotFoundError:
                    return None  # deleted while the attempt ran
                failures = sub.consecutive_failures + 1
                values: dict[str, Any] = {"consecutive_failures": failures}
                if sub.enabled and failures >= disable_after:
                    reason = f"{failures} consecutive failed deliveries"
                    values |= {"enabled": False, "disabled_reason": reason, "updated_at": attempt.at}
                    disabled = dataclasses.replace(sub, **values)
                    await tx.append([disabled_event(disabled, reason, attempt.at)])
                await tx.conn.execute(sa.update(s).where(s.c.id == sub.id).values(values))
        return disabled

    async def webhook_deliveries(
        self: StoreHost, subscription_id: str, *, limit: int = 100
    ) -> list[tuple[WebhookDelivery, list[WebhookAttempt]]]:
        """The newest deliveries of a subscription, each with its attempts (oldest first)."""
        d, a = tables.webhook_deliveries, tables.webhook_attempts
        async with self._read() as conn:
            deliveries = DELIVERIES.from_rows(
                await conn.execute(
                    sa.select(d)
                    .where(d.c.subscription_id == subscription_id)
                    .order_by(d.c.created_at.desc(), d.c.id)
                    .limit(limit)
                )
            )
            ids = [x.id for x in deliveries]
            attempts = ATTEMPTS.from_rows(
                await conn.execute(sa.select(a).where(a.c.delivery_id.in_(ids)).order_by(a.c.id))
            )
        by_delivery: dict[str, list[WebhookAttempt]] = {i: [] for i in ids}
        for attempt in attempts:
            by_delivery[attempt.delivery_id].append(attempt)
        return [(x, by_delivery[x.id]) for x in deliveries]
