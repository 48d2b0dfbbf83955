"""Webhook deliveries end to end: a real store and bus, the dispatcher, and an independent receiver process that
verifies every signature with its own code."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from godel.api.schemas import event_json
from godel.bus.memory import MemoryBus
from godel.core.events import EventFilter, make_event
from godel.core.ids import new_id
from godel.core.ports import EventQuery
from godel.store import SqlStore
from godel.webhooks import DeliveryPolicy, DeliveryStatus, WebhookSubscription, sign, verify
from godel.webhooks.subscriptions import new_subscription
from tests.webhooks.conftest import FAST, AgentGate, Receiver, dispatching, eventually, free_port, running_store

AGENT_A, AGENT_B = new_id(), new_id()


async def subscribe(
    store: SqlStore, receiver: Receiver, hook: str, owner: str = "user:alice", patterns: tuple[str, ...] = ("agent:*",)
) -> WebhookSubscription:
    sub = await store.add_webhook(new_subscription(owner, receiver.url(hook), list(patterns)))
    receiver.add_secret(hook, sub.secret)
    return sub


async def publish(store: SqlStore, type_: str, agent_id: str = AGENT_A) -> None:
    await store.append_events([make_event(type_, {"n": 1}, component="test", agent_id=agent_id)])


def accepted(receiver: Receiver, hook: str | None = None) -> list[dict]:
    return [r for r in receiver.records(hook) if r["verdict"] == "accepted"]


def test_the_signature_scheme() -> None:
    body = '{"id":"e1"}'
    header = sign("whsec_x", body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify("whsec_x", header, body, now=1_700_000_100)
    assert not verify("whsec_y", header, body, now=1_700_000_100)  # another secret
    assert not verify("whsec_x", header, body + " ", now=1_700_000_100)  # another body
    assert not verify("whsec_x", header, body, now=1_700_000_000 + 301)  # replayed too late
    assert not verify("whsec_x", "v1=" + header.split("v1=")[1], body, now=1_700_000_000)  # no timestamp


async def test_deliveries_arrive_signed_and_are_verified_by_the_receiver(
    plane: tuple[SqlStore, MemoryBus], receiver: Receiver
) -> None:
    store, bus = plane
    await receiver.start()
    sub = await subscribe(store, receiver, "a")
    async with dispatching(store, bus, AgentGate({"user:alice": {AGENT_A}})):
        await publish(store, "team:created")  # matches no pattern: never sent
        await publish(store, "agent:tool:call")
        (got,) = await eventually(lambda: accepted(receiver))
    (stored,) = await store.query_events(EventQuery(filter=EventFilter(patterns=("agent:*",))))
    assert got["eventId"] == stored.id and got["contentType"] == "application/json"
    assert got["event"] == event_json(stored)  # the API's event shape, sequence included
    (delivery, attempts) = (await store.webhook_deliveries(sub.id))[0]
    assert got["deliveryId"] == delivery.id and delivery.status is DeliveryStatus.DELIVERED
    assert [(a.attempt, a.status_code, a.error) for a in attempts] == [(1, 200, None)]
    assert len(await store.webhook_deliveries(sub.id)) == 1 and len(receiver.records()) == 1


async def test_a_delivery_signed_with_another_secret_is_rejected_by_the_receiver(
    plane: tuple[SqlStore, MemoryBus], receiver: Receiver
) -> None:
    store, bus = plane
    await receiver.start()
    sub = await subscribe(store, receiver, "a")
    receiver.add_secret("a", sub.secret[:-1] + ("A" if sub.secret[-1] != "A" else "B"))  # the receiver's copy differs
    async with dispatching(store, bus, AgentGate({"user:alice": {AGENT_A}}), FAST):
        await publish(store, "agent:started")
        rejected = await eventually(lambda: receiver.records("a"))
        assert rejected[0]["verdict"] == "rejected" and rejected[0]["reason"] == "signature mismatch"

        async def logged() -> list:
            return (await store.webhook_deliveries(sub.id))[0][1]

        attempts = await eventually(logged)
    assert (attempts[0].status_code, attempts[0].error) == (401, "HTTP 401")
    assert accepted(receiver) == []


async def test_a_receiver_that_is_down_gets_retries_with_backoff_until_it_is_back(
    plane: tuple[SqlStore, MemoryBus], receiver: Receiver
) -> None:
    store, bus = plane
    receiver.port = free_port()  # nothing listens there yet
    sub = await subscribe(store, receiver, "a")
    policy = DeliveryPolicy(
        max_attempts=8, backoff=0.1, backoff_max=0.4, timeout=2.0, poll_interval=0.02, allow_private=True
    )

    async def attempts() -> list:
        found = await store.webhook_deliveries(sub.id)
        return found[0][1] if found else []

    async with dispatching(store, bus, AgentGate({"user:alice": {AGENT_A}}), policy):
        await publish(store, "agent:started")
        await eventually(lambda: _len_at_least(attempts, 3))
        await receiver.start()  # back, on the same port
        await eventually(lambda: accepted(receiver))
    log = await attempts()
    assert [a.status_code for a in log[:-1]] == [None] * (len(log) - 1) and log[-1].status_code == 200
    assert all("ConnectError" in (a.error or "") for a in log[:-1])
    for n, (before, after) in enumerate(itertools.pairwise(log), start=1):
        assert after.at - before.at >= timedelta(seconds=policy.delay(n)), (n, after.at - before.at)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.4]  # doubling, capped
    (delivery, _) = (await store.webhook_deliveries(sub.id))[0]
    assert delivery.status is DeliveryStatus.DELIVERED and delivery.attempts == len(log)


async def test_repeated_failed_deliveries_disable_the_subscription_with_an_event(
    plane: tuple[SqlStore, MemoryBus], receiver: Receiver
) -> None:
    store, bus = plane
    receiver.port = free_port()  # never listening
    sub = await subscribe(store, receiver, "a")
    marker = await subscribe(store, receiver, "marker", patterns=("team:*",))  # shows how far the listener got
    heard = bus.subscribe(EventFilter(patterns=("webhook:*",)))
    async with dispatching(store, bus, AgentGate({"user:alice": {AGENT_A}}), FAST):  # 3 attempts, 2 failures
        await publish(store, "agent:started")
        await publish(store, "agent:completed")
        disabled = await heard.get(timeout=10)
        assert disabled is not None and disabled.type == "webhook:disabled"
        assert disabled.payload["webhookId"] == sub.id and disabled.sequence is not None  # committed, in the log
        now = await store.get_webhook(sub.id)
        assert not now.enabled and now.consecutive_failures == 2
        assert now.disabled_reason == "2 consecutive failed deliveries"
        failed = await store.webhook_deliveries(sub.id)
        assert [(d.status, len(a)) for d, a in failed] == [(DeliveryStatus.FAILED, 3)] * 2
        await publish(store, "agent:started")  # a disabled subscription queues nothing…
        await publish(store, "team:created")  # …which is certain once the listener has queued this one
        await eventually(lambda: store.webhook_deliveries(marker.id))
        assert len(await store.webhook_deliveries(sub.id)) == 2
    assert (await store.get_webhook(marker.id)).enabled  # one failed delivery is below the threshold
    heard.close()


async def test_a_subscription_never_gets_an_event_its_owner_may_not_read(
    plane: tuple[SqlStore, MemoryBus], receiver: Receiver
) -> None:
    store, bus = plane
    await receiver.start()
    alice = await subscribe(store, receiver, "alice", owner="user:alice")
    bob = await subscribe(store, receiver, "bob", owner="user:bob")
    gone = await subscribe(store, receiver, "carol", owner="user:carol")  # the gate no longer knows carol
    gate = AgentGate({"user:alice": {AGENT_A}, "user:bob": {AGENT_B}})
    async with dispatching(store, bus, gate):
        await publish(store, "agent:started", AGENT_A)
        await publish(store, "agent:started", AGENT_B)
        await eventually(lambda: len(accepted(receiver)) >= 2)
    assert [r["event"]["metadata"]["agentId"] for r in accepted(receiver, "alice")] == [AGENT_A]
    assert [r["event"]["metadata"]["agentId"] for r in accepted(receiver, "bob")] == [AGENT_B]
    assert receiver.records("carol") == [] and await store.webhook_deliveries(gone.id) == []
    assert len(await store.webhook_deliveries(alice.id)) == len(await store.webhook_deliveries(bob.id)) == 1


async def test_a_pending_delivery_survives_a_restart(db_url: str, receiver: Receiver) -> None:
    receiver.port = free_port()
    slow_retry = DeliveryPolicy(
        max_attempts=5, backoff=0.5, timeout=2.0, poll_interval=0.02, stop_grace=0.5, allow_private=True
    )
    async with running_store(db_url) as (store, bus):
        sub = await subscribe(store, receiver, "a")
        async with dispatching(store, bus, AgentGate({"user:alice": {AGENT_A}}), slow_retry):
            await publish(store, "agent:started")

            async def failed_once() -> list:
                found = await store.webhook_deliveries(sub.id)
                return found if found and found[0][1] else []

            ((pending, _),) = await eventually(failed_once)
        assert pending.status is DeliveryStatus.PENDING  # stopped before its retry
    await receiver.start()
    async with running_store(db_url) as (store, bus):  # a new process, as far as the queue can tell
        async with dispatching(store, bus, AgentGate({"user:alice": {AGENT_A}}), slow_retry):
            (got,) = await eventually(lambda: accepted(receiver))
        ((delivery, attempts),) = await store.webhook_deliveries(sub.id)
    assert got["deliveryId"] == pending.id == delivery.id  # the same delivery, resumed
    assert delivery.status is DeliveryStatus.DELIVERED
    assert [a.status_code for a in attempts] == [None, 200]


async def _len_at_least(fetch: Callable[[], Awaitable[list[Any]]], n: int) -> bool:
    return len(await fetch()) >= n


async def test_private_addresses_are_refused_unless_allowed() -> None:
    """SSRF: a webhook must not reach what sits behind the server: loopback, private, link-local (cloud metadata)
    addresses, given as such or as a name that resolves to one (checked again at each delivery)."""
    import socket

    import pytest

    from godel.errors import ValidationError
    from godel.webhooks.subscriptions import PrivateAddressError, new_subscription, refuse_private

    for url in ("http://127.0.0.1:9/x", "http://[::1]/x", "http://10.1.2.3/x", "http://169.254.169.254/latest",
                "http://localhost:8080/x", "http://192.168.0.1/x"):  # fmt: skip
        with pytest.raises(ValidationError):
            new_subscription("user:a", url, ["*"], allow_private=False)
        with pytest.raises(PrivateAddressError):
            await refuse_private(url)
    with pytest.raises(PrivateAddressError):  # a name: this machine's own, which resolves to a private address
        await refuse_private(f"http://{socket.gethostname()}:8080/hook")
    assert new_subscription("user:a", "https://hooks.example.com/x", ["*"], allow_private=False).url
