"""The webhook dispatcher: hears committed events, queues a durable delivery per subscription that may see each
one, and sends the queue with retries.

Two long-lived tasks, both made in ``start`` and named:

- ``webhooks:listen`` follows the bus from the position ``start`` read (``EventBus.stream``: gap-free, and back to
  the store if its buffer overflowed, so a burst of events loses none). For each event it picks the enabled
  subscriptions whose patterns match, asks the ``EventGate`` whether each one's owner may read the event (the
  same rule as the event streams; an owner that is gone or disabled gets nothing), and inserts one delivery row
  per survivor. From that commit on, the delivery survives anything: it is in the database.
- ``webhooks:deliver`` claims due deliveries (at most ``concurrency`` in flight) and sends each in its own task:
  one signed POST (``signing``), whose outcome is recorded in one transaction with the retry it schedules
  (``backoff * 2**(n-1)``, capped) or the final failure, which may disable the subscription and emit
  ``webhook:disabled``. It wakes when something is queued or an attempt ends, else every ``poll_interval``.

A restarted dispatcher simply claims what is due, so pending deliveries resume (at-least-once: one that was in
flight when the process died is sent again once its claim lapses; receivers dedupe by ``Godel-Delivery-Id``).
Events committed while no dispatcher runs are not queued afterwards (the live position is taken at ``start``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from godel.auth.principal import Principal
from godel.core.clock import SystemClock
from godel.core.events import Event, EventFilter, EventMetadata, event_wire, matches_any
from godel.core.ids import new_id
from godel.core.ports import Clock, EventBus
from godel.errors import NotFoundError
from godel.settings import Settings
from godel.store.host import source_of
from godel.store.secrets import SecretBox
from godel.store.webhooks import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookSubscription
from godel.webhooks import signing
from godel.webhooks.ports import EventGate, WebhookStore
from godel.webhooks.subscriptions import PrivateAddressError, refuse_private

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryPolicy:
    max_attempts: int = 8  # attempts of one delivery before it fails for good
    backoff: float = 1.0  # seconds before the second attempt; doubles after each failure
    backoff_max: float = 300.0  # the longest wait between two attempts
    failure_threshold: int = 5  # failed deliveries in a row that disable a subscription
    timeout: float = 10.0  # seconds for one attempt (connect, send, answer)
    concurrency: int = 8  # attempts in flight at once
    poll_interval: float = 1.0  # how often the worker looks for due retries when nothing wakes it
    refresh_interval: float = 5.0  # how old the cached subscriptions may get (other servers change them too)
    stop_grace: float = 2.0  # seconds ``stop`` lets attempts in flight finish before cancelling them
    allow_private: bool = False  # deliver to loopback, private and link-local addresses (off: no SSRF into them)

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        return cls(
            max_attempts=settings.webhook_max_attempts,
            backoff=settings.webhook_backoff,
            backoff_max=settings.webhook_backoff_max,
            failure_threshold=settings.webhook_failure_threshold,
            timeout=settings.webhook_timeout,
            concurrency=settings.webhook_concurrency,
            allow_private=settings.webhook_allow_private,
        )

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after the ``failed_attempts``-th failed attempt."""
        return float(min(self.backoff * 2 ** (failed_attempts - 1), self.backoff_max))

    @property
    def lease(self) -> float:
        """How long a claimed delivery is left alone: well past one attempt, so only a dead sender's lapses."""
        return self.timeout + 30.0


def _json_default(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def event_body(event: Event) -> str:
    """The event as JSON, the shape of the API's event streams (``godel.api.schemas.event_json``)."""
    data = event_wire(event)
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def _default_client(policy: DeliveryPolicy) -> httpx.AsyncClient:
    # No redirects: a signed delivery goes where the subscription says, not where a receiver points it.
    return httpx.AsyncClient(timeout=httpx.Timeout(policy.timeout), follow_redirects=False)


class WebhookDispatcher:
    def __init__(
        self,
        store: WebhookStore,
        bus: EventBus,
        gate: EventGate,
        *,
        clock: Clock | None = None,
        policy: DeliveryPolicy | None = None,
        http_client_factory: Callable[[], httpx.AsyncClient] | None = None,
        secrets: SecretBox | None = None,
    ) -> None:
        self.store = store
        self._secrets = secrets  # subscriptions' secrets are stored sealed with it (None: stored as they are)
        self.policy = policy or DeliveryPolicy()
        self._bus = bus
        self._gate = gate
        self._clock: Clock = clock or SystemClock()
        self._client_factory = http_client_factory or (lambda: _default_client(self.policy))
        self._http: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._subs: list[WebhookSubscription] | None = None
        self._subs_read_at = 0.0

    def seal(self, secret: str) -> str:
        """A new subscription's secret as the database keeps it."""
        return self._secrets.seal(secret) if self._secrets is not None else secret

    def _open(self, stored: str) -> str:
        return self._secrets.open(stored) if self._secrets is not None else stored

    # ------------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._tasks:
            return
        since = await self.store.last_sequence()  # here, not in the task: nothing committed after start is missed
        self._http = self._client_factory()
        self._tasks = [
            # Why: every committed event must be matched against the subscriptions while the server runs.
            asyncio.create_task(self._listen(since), name="webhooks:listen"),
            # Why: the queue is sent (and retried) independently of how fast events arrive.
            asyncio.create_task(self._deliver(), name="webhooks:deliver"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        inflight = dict(self._inflight)
        if inflight:
            await asyncio.wait(inflight.values(), timeout=self.policy.stop_grace)
        cut = [delivery_id for delivery_id, task in inflight.items() if not task.done()]
        for delivery_id in cut:
            inflight[delivery_id].cancel()
        await asyncio.gather(*inflight.values(), return_exceptions=True)
        if cut:  # due again now, for whichever dispatcher runs next
            with contextlib.suppress(Exception):
                await self.store.release_webhook_deliveries(cut, self._clock.now())
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def subscriptions_changed(self) -> None:
        """A subscription was created, changed or deleted: read them again before matching the next event."""
        self._subs = None
        self._wake.set()  # a re-enabled subscription's pending deliveries are due

    async def ping(self, sub: WebhookSubscription) -> WebhookDelivery:
        """Queue a ``webhook:ping`` for one subscription (it goes through the same signing and retries)."""
        source = source_of(sub.owner, "webhooks")
        event = Event(
            type="webhook:ping",
            payload={"webhookId": sub.id},
            source=source,
            metadata=EventMetadata(user_id=source.instance if source.component == "user" else None),
            timestamp=self._clock.now(),
        )
        delivery = self._delivery(sub, event)
        await self.store.enqueue_webhook_deliveries([delivery])
        self._wake.set()
        return delivery

    # -------------------------------------------------------------------------------------------------- queuing

    async def _listen(self, since: int) -> None:
        async for event in self._bus.stream(EventFilter(), since=since):
            try:
                await self._enqueue(event)
            except Exception:  # a store outage must not end the listener; this event's deliveries are lost
                log.exception("webhooks: could not queue deliveries of event %s (%s)", event.id, event.type)

    async def _subscriptions(self) -> list[WebhookSubscription]:
        stale = self._clock.monotonic() - self._subs_read_at > self.policy.refresh_interval
        if self._subs is None or stale:
            self._subs = await self.store.list_webhooks(enabled=True)
            self._subs_read_at = self._clock.monotonic()
        return self._subs

    async def _enqueue(self, event: Event) -> None:
        matching = [s for s in await self._subscriptions() if s.patterns and matches_any(s.patterns, event.type)]
        principals: dict[str, Principal | None] = {}
        deliveries = []
        for sub in matching:
            if sub.owner not in principals:
                principals[sub.owner] = await self._gate.principal_of(sub.owner)
            principal = principals[sub.owner]
            if principal is not None and await self._gate.can_read_event(principal, event):
                deliveries.append(self._delivery(sub, event))
        if deliveries:
            await self.store.enqueue_webhook_deliveries(deliveries)
            self._wake.set()

    def _delivery(self, sub: WebhookSubscription, event: Event) -> WebhookDelivery:
        now = self._clock.now()
        return WebhookDelivery(
            id=new_id(),
            subscription_id=sub.id,
            event_id=event.id,
            event_type=event.type,
            body=event_body(event),
            status=DeliveryStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )

    # --------------------------------------------------------------------------------------------------- sending

    async def _deliver(self) -> None:
        while True:
            self._wake.clear()
            free = self.policy.concurrency - len(self._inflight)
            try:
                due = await self.store.claim_webhook_deliveries(self._clock.now(), limit=free, lease=self.policy.lease)
            except Exception:
                log.exception("webhooks: could not claim due deliveries")
                due = []
            for delivery in due:
                # Why: one slow receiver must not hold up the others (bounded by ``concurrency``).
                task = asyncio.create_task(self._attempt(delivery), name=f"webhooks:attempt:{delivery.id}")
                self._inflight[delivery.id] = task
                task.add_done_callback(functools.partial(self._attempt_done, delivery.id))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.policy.poll_interval):
                    await self._wake.wait()

    def _attempt_done(self, delivery_id: str, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(delivery_id, None)
        self._wake.set()

    async def _attempt(self, delivery: WebhookDelivery) -> None:
        try:
            try:
                sub = await self.store.get_webhook(delivery.subscription_id)
            except NotFoundError:
                return  # deleted since it was claimed (its deliveries with it)
            attempt = await self._send(sub, delivery)
            delivered = attempt.error is None
            retry_at = None
            if not delivered and attempt.attempt < self.policy.max_attempts:
                retry_at = self._clock.now() + timedelta(seconds=self.policy.delay(attempt.attempt))
            disabled = await self.store.finish_webhook_attempt(
                attempt, delivered=delivered, retry_at=retry_at, disable_after=self.policy.failure_threshold
            )
            if disabled is not None:
                log.warning("webhooks: disabled %s (%s): %s", disabled.id, disabled.url, disabled.disabled_reason)
                self.subscriptions_changed()
        except asyncio.CancelledError:
            raise
        except Exception:  # the claim lapses and the delivery is tried again
            log.exception("webhooks: attempt of delivery %s failed unexpectedly", delivery.id)

    async def _send(self, sub: WebhookSubscription, delivery: WebhookDelivery) -> WebhookAttempt:
        assert self._http is not None, "start() the dispatcher first"
        at = self._clock.now()
        headers = {
            "Content-Type": "application/json",
            signing.SIGNATURE_HEADER: signing.sign(self._open(sub.secret), delivery.body, int(at.timestamp())),
            signing.EVENT_ID_HEADER: delivery.event_id,
            signing.DELIVERY_ID_HEADER: delivery.id,
            "User-Agent": "Godel-Webhooks/1",
        }
        started = self._clock.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            if not self.policy.allow_private:  # checked as the name resolves now (a name may be rebound later)
                await refuse_private(sub.url)
            # Streamed and never read: the status is the answer, and a receiver cannot make us buffer its body.
            async with self._http.stream("POST", sub.url, content=delivery.body.encode(), headers=headers) as resp:
                status = resp.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        except PrivateAddressError as exc:
            error = str(exc)
        return WebhookAttempt(
            delivery_id=delivery.id,
            subscription_id=sub.id,
            attempt=delivery.attempts + 1,
            at=at,
            status_code=status,
            error=error,
            latency_ms=round((self._clock.monotonic() - started) * 1000, 3),
        )
