"""Signed webhooks: subscriptions by event pattern, each delivery an HTTP POST of the event as JSON, signed with
the subscription's secret, retried with backoff from a durable queue, and filtered by what the subscription's owner
may read (docs/webhooks.md).

``WebhookDispatcher`` does the work (``start``/``stop``); ``signing`` is the signature scheme, which a receiver
written in Python may import; ``subscriptions`` validates and creates subscriptions; ``ports`` declares what the
package needs (the RBAC gate, the store). The tables and queries are in ``godel.store.webhooks``.
"""

from godel.store.webhooks import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookSubscription
from godel.webhooks.dispatcher import DeliveryPolicy, WebhookDispatcher, event_body
from godel.webhooks.ports import EventGate, WebhookStore
from godel.webhooks.signing import sign, verify

__all__ = [
    "DeliveryPolicy",
    "DeliveryStatus",
    "EventGate",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookDispatcher",
    "WebhookStore",
    "WebhookSubscription",
    "event_body",
    "sign",
    "verify",
]
