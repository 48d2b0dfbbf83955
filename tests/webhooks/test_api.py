"""``/api/v1/webhooks`` over HTTP (ASGI): validation, ownership, the secret shown once, ping and re-enabling.

The app here is the webhooks router with the real authentication (``godel.auth.AuthService`` on the test's store:
users with roles, bearer access tokens signed by its key), the real access checks (``godel.api.access``) and the
real error mapping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from godel.api import errors
from godel.api.routes import webhooks
from godel.auth.accounts import Accounts
from godel.auth.service import AuthService
from godel.auth.tokens import TokenSigner
from godel.bus.memory import MemoryBus
from godel.core.clock import SystemClock
from godel.store import SqlStore
from godel.webhooks import WebhookDispatcher
from tests.webhooks.conftest import FAST, AgentGate, Receiver, eventually

BASE = "/api/v1/webhooks"


SIGNER = TokenSigner(b"webhook-tests-signing-key-" * 3)
USERS = {"alice": "developer", "bob": "developer", "root": "admin", "vic": "viewer"}


def as_(name: str, role: str = "developer") -> dict[str, str]:
    """A real access token of user ``name`` (made with role ``USERS[name]`` by the client fixture)."""
    assert USERS[name] == role or role == "developer", (name, role)
    token, _ = SIGNER.issue(f"user:{name}", "webhook-tests", datetime.now(UTC), 3600)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def hooks(plane: tuple[SqlStore, MemoryBus]) -> AsyncIterator[WebhookDispatcher]:
    store, bus = plane
    dispatcher = WebhookDispatcher(store, bus, AgentGate({}), policy=FAST)
    await dispatcher.start()
    yield dispatcher
    await dispatcher.stop()


@pytest.fixture
async def client(plane: tuple[SqlStore, MemoryBus], hooks: WebhookDispatcher) -> AsyncIterator[httpx.AsyncClient]:
    store, _ = plane
    auth = AuthService(store=store, clock=SystemClock(), signer=SIGNER)
    for name, role in USERS.items():
        await Accounts(auth).create_user(name, roles=[role])
    app = FastAPI()
    errors.install(app)
    app.include_router(webhooks.router, prefix="/api/v1")
    app.state.auth = auth
    app.state.webhooks = hooks
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://godel.test") as c:
        yield c


GOOD = {"url": "https://example.test/hook", "patterns": ["agent:*", "budget:exceeded"]}


@pytest.mark.parametrize(
    "body",
    [
        {**GOOD, "url": "ftp://example.test/hook"},
        {**GOOD, "url": "file:///etc/passwd"},
        {**GOOD, "url": "not a url"},
        {**GOOD, "url": "http://"},
        {**GOOD, "url": "http://user:pw@example.test/"},
        {**GOOD, "url": "http://example.test:99999/"},
        {**GOOD, "url": ""},
        {**GOOD, "patterns": []},
        {**GOOD, "patterns": ["agent:**"]},
        {**GOOD, "patterns": ["agent::start"]},
        {**GOOD, "patterns": "agent:*"},
        {"patterns": ["agent:*"]},
        {**GOOD, "secret": "whsec_mine"},  # Godel makes the secret; unknown fields are refused
    ],
)
async def test_bad_input_is_a_400_that_creates_nothing(
    client: httpx.AsyncClient, hooks: WebhookDispatcher, body: dict
) -> None:
    r = await client.post(BASE, json=body, headers=as_("alice"))
    assert r.status_code == 400, r.text
    assert r.json()["success"] is False and r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert await hooks.store.list_webhooks() == []


async def test_a_bad_change_is_a_400_that_changes_nothing(client: httpx.AsyncClient) -> None:
    created = (await client.post(BASE, json=GOOD, headers=as_("alice"))).json()["data"]
    changes: list[dict[str, object]] = [
        {"url": "gopher://x"},
        {"patterns": ["*x"]},
        {"patterns": []},
        {"owner": "user:bob"},
    ]
    for change in changes:
        r = await client.patch(f"{BASE}/{created['id']}", json=change, headers=as_("alice"))
        assert r.status_code == 400, (change, r.text)
    now = (await client.get(f"{BASE}/{created['id']}", headers=as_("alice"))).json()["data"]
    assert {k: now[k] for k in ("url", "patterns", "owner")} == {k: created[k] for k in ("url", "patterns", "owner")}


async def test_the_secret_is_shown_once_and_only_the_owner_reaches_a_subscription(client: httpx.AsyncClient) -> None:
    r = await client.post(BASE, json=GOOD, headers=as_("alice"))
    assert r.status_code == 201
    data = r.json()["data"]
    secret, hook = data["secret"], data["id"]
    assert secret.startswith("whsec_") and data["owner"] == "user:alice" and data["enabled"] is True
    answers = [
        await client.get(BASE, headers=as_("alice")),
        await client.get(f"{BASE}/{hook}", headers=as_("alice")),
        await client.patch(f"{BASE}/{hook}", json={"description": "ci"}, headers=as_("alice")),
        await client.get(f"{BASE}/{hook}/deliveries", headers=as_("alice")),
        await client.get(BASE, headers=as_("root", "admin")),
    ]
    assert all(a.status_code == 200 for a in answers)
    assert not any(secret in a.text or '"secret"' in a.text for a in answers)  # never again
    # Another developer: not theirs, so 403 on every route about it, and absent from their listing.
    for method, path, body in [
        ("GET", f"{BASE}/{hook}", None),
        ("PATCH", f"{BASE}/{hook}", {"enabled": False}),
        ("DELETE", f"{BASE}/{hook}", None),
        ("GET", f"{BASE}/{hook}/deliveries", None),
        ("POST", f"{BASE}/{hook}/test", None),
    ]:
        r = await client.request(method, path, json=body, headers=as_("bob"))
        assert r.status_code == 403, (method, path, r.text)
    assert (await client.get(BASE, headers=as_("bob"))).json()["data"]["items"] == []
    assert [w["id"] for w in (await client.get(BASE, headers=as_("root", "admin"))).json()["data"]["items"]] == [hook]
    assert (await client.post(BASE, json=GOOD, headers=as_("vic", "viewer"))).status_code == 403  # no webhook grant
    assert (await client.get(BASE)).status_code == 401
    assert (await client.delete(f"{BASE}/{hook}", headers=as_("alice"))).status_code == 200
    assert (await client.get(f"{BASE}/{hook}", headers=as_("alice"))).status_code == 404


async def test_ping_disable_and_enable_through_the_api(client: httpx.AsyncClient, receiver: Receiver) -> None:
    await receiver.start()
    r = await client.post(BASE, json={"url": receiver.url("a"), "patterns": ["agent:*"]}, headers=as_("alice"))
    hook = r.json()["data"]
    receiver.add_secret("a", hook["secret"])
    assert (await client.post(f"{BASE}/{hook['id']}/test", headers=as_("alice"))).status_code == 202
    (got,) = await eventually(lambda: [x for x in receiver.records("a") if x["verdict"] == "accepted"])
    assert got["event"]["type"] == "webhook:ping" and got["event"]["payload"] == {"webhookId": hook["id"]}

    async def delivered() -> list:
        items = (await client.get(f"{BASE}/{hook['id']}/deliveries", headers=as_("alice"))).json()["data"]["items"]
        return [d for d in items if d["status"] == "delivered"]

    (delivery,) = await eventually(delivered)
    assert delivery["id"] == got["deliveryId"] and [a["statusCode"] for a in delivery["log"]] == [200]
    assert delivery["log"][0]["latencyMs"] >= 0 and delivery["log"][0]["at"]

    off = await client.patch(f"{BASE}/{hook['id']}", json={"enabled": False}, headers=as_("alice"))
    assert off.json()["data"]["enabled"] is False
    refused = await client.post(f"{BASE}/{hook['id']}/test", headers=as_("alice"))
    assert refused.status_code == 409
    on = await client.patch(f"{BASE}/{hook['id']}", json={"enabled": True}, headers=as_("alice"))
    assert on.json()["data"]["enabled"] is True and on.json()["data"]["consecutiveFailures"] == 0
