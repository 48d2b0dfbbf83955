"""``/api/v1/webhooks``: signed webhook subscriptions, their delivery log, and a test ping (docs/webhooks.md).

A subscription belongs to the principal that created it. Every route declares its permission (``allow``), and the
routes on one subscription also check that the caller may act on *that* subscription (its owner's, its team's or
anyone's, per the caller's grants): 403 otherwise. A listing shows the caller's own subscriptions, or all of them
to a caller holding ``webhook:read:all``. The secret is in the answer to the creation and nowhere else, ever.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from godel.api.access import allow
from godel.api.schemas import Body, ok
from godel.auth.permissions import Owner
from godel.auth.principal import Principal
from godel.errors import ConflictError, PermissionDeniedError
from godel.webhooks import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookDispatcher, WebhookSubscription
from godel.webhooks.subscriptions import check, new_subscription

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


def _hooks(request: Request) -> WebhookDispatcher:
    hooks: WebhookDispatcher = request.app.state.webhooks
    return hooks


Hooks = Annotated[WebhookDispatcher, Depends(_hooks)]
Description = Annotated[str, Field(max_length=1000)]


class CreateWebhook(Body):
    url: Annotated[str, Field(min_length=1)]
    patterns: list[str]
    description: Description | None = None


class UpdateWebhook(Body):
    url: Annotated[str, Field(min_length=1)] | None = None
    patterns: list[str] | None = None
    description: Description | None = None
    enabled: bool | None = None


def _t(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def webhook_json(s: WebhookSubscription) -> dict[str, Any]:
    return {
        "id": s.id,
        "owner": s.owner,
        "url": s.url,
        "patterns": s.patterns,
        "description": s.description,
        "enabled": s.enabled,
        "consecutiveFailures": s.consecutive_failures,
        "disabledReason": s.disabled_reason,
        "createdAt": _t(s.created_at),
        "updatedAt": _t(s.updated_at),
    }


def attempt_json(a: WebhookAttempt) -> dict[str, Any]:
    return {
        "attempt": a.attempt,
        "at": _t(a.at),
        "statusCode": a.status_code,
        "error": a.error,
        "latencyMs": a.latency_ms,
    }


def delivery_json(d: WebhookDelivery, attempts: list[WebhookAttempt] | None = None) -> dict[str, Any]:
    return {
        "id": d.id,
        "webhookId": d.subscription_id,
        "eventId": d.event_id,
        "eventType": d.event_type,
        "status": d.status.value,
        "attempts": d.attempts,
        "nextAttemptAt": _t(d.next_attempt_at) if d.status is DeliveryStatus.PENDING else None,
        "createdAt": _t(d.created_at),
        "completedAt": _t(d.completed_at),
        "log": [attempt_json(a) for a in attempts or []],
    }


async def _owned(hooks: WebhookDispatcher, caller: Principal, action: str, webhook_id: str) -> WebhookSubscription:
    sub = await hooks.store.get_webhook(webhook_id)  # 404 for an unknown one
    if not caller.may("webhook", action, Owner(sub.owner)):
        raise PermissionDeniedError(
            f"{caller.id} may not {action} webhook {webhook_id}",
            details={"permission": f"webhook:{action}", "owner": sub.owner},
        )
    return sub


@router.post("", status_code=201)
async def create_webhook(
    body: CreateWebhook, hooks: Hooks, caller: Annotated[Principal, allow("webhook:create")]
) -> JSONResponse:
    made = new_subscription(
        caller.id, body.url, body.patterns, body.description, allow_private=hooks.policy.allow_private
    )
    sub = await hooks.store.add_webhook(dataclasses.replace(made, secret=hooks.seal(made.secret)))
    hooks.subscriptions_changed()
    # The secret is in this answer (in clear) and nowhere else, ever; the database holds it sealed.
    return JSONResponse(ok({**webhook_json(sub), "secret": made.secret}), status_code=201)


@router.get("")
async def list_webhooks(hooks: Hooks, caller: Annotated[Principal, allow("webhook:read")]) -> dict[str, Any]:
    everyone = caller.scope_of("webhook", "read") == "all"
    subs = await hooks.store.list_webhooks(owner=None if everyone else caller.id)
    return ok({"items": [webhook_json(s) for s in subs]})


@router.get("/{webhook_id}")
async def get_webhook(
    webhook_id: str, hooks: Hooks, caller: Annotated[Principal, allow("webhook:read")]
) -> dict[str, Any]:
    return ok(webhook_json(await _owned(hooks, caller, "read", webhook_id)))


@router.patch("/{webhook_id}")
async def update_webhook(
    webhook_id: str, body: UpdateWebhook, hooks: Hooks, caller: Annotated[Principal, allow("webhook:update")]
) -> dict[str, Any]:
    # Before anything else: a bad request changes nothing.
    check(url=body.url, patterns=body.patterns, allow_private=hooks.policy.allow_private)
    await _owned(hooks, caller, "update", webhook_id)
    changes = body.model_dump(exclude_unset=True)
    for key in ("url", "patterns", "enabled"):
        if key in changes and changes[key] is None:
            del changes[key]  # null for these means "unchanged"; a description may be cleared
    if "patterns" in changes:
        changes["patterns"] = list(dict.fromkeys(changes["patterns"]))
    sub = await hooks.store.update_webhook(webhook_id, changes)
    hooks.subscriptions_changed()
    return ok(webhook_json(sub))


@router.delete("/{webhook_id}")
async def delete_webhook(
    webhook_id: str, hooks: Hooks, caller: Annotated[Principal, allow("webhook:delete")]
) -> dict[str, Any]:
    await _owned(hooks, caller, "delete", webhook_id)
    await hooks.store.delete_webhook(webhook_id)
    hooks.subscriptions_changed()
    return ok({"id": webhook_id, "deleted": True})


@router.get("/{webhook_id}/deliveries")
async def list_deliveries(
    webhook_id: str,
    hooks: Hooks,
    caller: Annotated[Principal, allow("webhook:read")],
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    await _owned(hooks, caller, "read", webhook_id)
    found = await hooks.store.webhook_deliveries(webhook_id, limit=limit)
    return ok({"items": [delivery_json(d, attempts) for d, attempts in found]})


@router.post("/{webhook_id}/test", status_code=202)
async def test_webhook(
    webhook_id: str, hooks: Hooks, caller: Annotated[Principal, allow("webhook:update")]
) -> JSONResponse:
    sub = await _owned(hooks, caller, "update", webhook_id)
    if not sub.enabled:
        raise ConflictError(
            f"webhook {webhook_id} is disabled ({sub.disabled_reason}); enable it first",
            details={"webhookId": webhook_id},
        )
    delivery = await hooks.ping(sub)
    return JSONResponse(ok(delivery_json(delivery)), status_code=202)
