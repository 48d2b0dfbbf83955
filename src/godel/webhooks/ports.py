"""What the webhooks need from the rest of Godel, as Protocols: who may read an event (``EventGate``, implemented
by ``godel.auth.service.AuthService``) and the store methods they use (``WebhookStore``, implemented by
``SqlStore`` through ``godel.store.webhooks.WebhookQueries``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from godel.auth.principal import Principal
from godel.core.events import Event
from godel.store.webhooks import WebhookAttempt, WebhookDelivery, WebhookSubscription


class EventGate(Protocol):
    """Who may read what (``godel.auth.service.AuthService``), so this package does not depend on how it is
    decided."""

    async def principal_of(self, principal_id: str) -> Principal | None: ...  # None: gone or disabled
    async def can_read_event(self, principal: Principal, event: Event) -> bool: ...


class WebhookStore(Protocol):
    """The store methods webhooks use (``godel.store.webhooks.WebhookQueries`` on ``SqlStore``)."""

    async def last_sequence(self) -> int: ...
    async def add_webhook(self, sub: WebhookSubscription) -> WebhookSubscription: ...
    async def get_webhook(self, subscription_id: str) -> WebhookSubscription: ...
    async def list_webhooks(
        self, *, owner: str | None = None, enabled: bool | None = None
    ) -> list[WebhookSubscription]: ...
    async def update_webhook(self, subscription_id: str, changes: dict[str, Any]) -> WebhookSubscription: ...
    async def delete_webhook(self, subscription_id: str) -> None: ...
    async def enqueue_webhook_deliveries(self, deliveries: list[WebhookDelivery]) -> None: ...
    async def claim_webhook_deliveries(self, now: datetime, *, limit: int, lease: float) -> list[WebhookDelivery]: ...
    async def release_webhook_deliveries(self, delivery_ids: list[str], at: datetime) -> None: ...
    async def finish_webhook_attempt(
        self, attempt: WebhookAttempt, *, delivered: bool, retry_at: datetime | None, disable_after: int
    ) -> WebhookSubscription | None: ...
    async def webhook_deliveries(
        self, subscription_id: str, *, limit: int = 100
    ) -> list[tuple[WebhookDelivery, list[WebhookAttempt]]]: ...
