"""``/api/v1/keys`` and ``/api/v1/usage``: the gateway's virtual keys, and what was spent through it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from godel.api.access import allow, auth_of
from godel.api.deps import Plane
from godel.api.schemas import Body, ok
from godel.auth.accounts import MAX_KEY_TTL
from godel.auth.permissions import Owner
from godel.auth.principal import Principal
from godel.core.models import Budget, VirtualKey
from godel.errors import FieldError, PermissionDeniedError, ValidationError
from godel.providers.config import RateLimit

router = APIRouter(tags=["gateway"])


class CreateKey(Body):
    scope: Literal["agent", "team", "user"]
    id: Annotated[str, Field(min_length=1, max_length=255)]
    models: list[str] = Field(default_factory=list)  # "provider/model"; empty: every configured model
    expires_in: Annotated[float, Field(gt=0, le=MAX_KEY_TTL)] | None = None  # seconds; a date past 9999 is none
    limits: RateLimit | None = None  # this key's own rate limits, instead of [rate_limits.key]


async def _owner(request: Request, scope: str | None, scope_id: str | None) -> Owner | None:
    """Whose a key, budget or usage line is: the user it is for, or the owner of its agent or team."""
    if scope is None or scope_id is None:
        return Owner(None)
    if scope == "user":
        return Owner(f"user:{scope_id}", await auth_of(request).team_of(f"user:{scope_id}"))
    return await auth_of(request).owner_of(scope, scope_id)


async def _may(
    request: Request, caller: Principal, resource: str, action: str, scope: str | None, scope_id: Any
) -> bool:
    if caller.scope_of(resource, action) == "all":
        return True
    return caller.may(resource, action, await _owner(request, scope, scope_id if isinstance(scope_id, str) else None))


async def _check_scope(
    request: Request, caller: Principal, resource: str, action: str, scope: str, scope_id: str
) -> None:
    if not await _may(request, caller, resource, action, scope, scope_id):
        raise PermissionDeniedError(
            f"{caller.id} may not {action} a {resource} of {scope} {scope_id}",
            details={"permission": f"{resource}:{action}"},
        )


def key_json(k: VirtualKey) -> dict[str, Any]:
    return {
        "id": k.id,
        "prefix": k.prefix,
        "scopeType": k.scope_type,
        "scopeId": k.scope_id,
        "models": k.models,
        "limits": k.metadata.get("limits"),
        "expiresAt": k.expires_at.isoformat() if k.expires_at else None,
        "revokedAt": k.revoked_at.isoformat() if k.revoked_at else None,
        "createdAt": k.created_at.isoformat() if k.created_at else None,
    }


@router.post("/keys", status_code=201)
async def create_key(
    body: CreateKey, plane: Plane, request: Request, caller: Annotated[Principal, allow("key:create")]
) -> JSONResponse:
    await _check_scope(request, caller, "key", "create", body.scope, body.id)
    known = {f"{p}/{m}" for p, c in plane.settings.providers.items() for m in c.models}
    unknown = [m for m in body.models if m not in known and not _any_model_of(plane, m)]
    if unknown:
        raise ValidationError(
            f"unknown models: {', '.join(unknown)}",
            [
                FieldError(
                    "models",
                    "provider/model names from the configuration"
                    + (f", e.g. {', '.join(sorted(known)[:3])}" if known else " (none is configured)"),
                )
            ],
        )
    if body.scope in ("agent", "team") and len(body.id) > 36:
        raise ValidationError(
            f"a {body.scope} id is at most 36 characters (a Godel id)", [FieldError("id", "at most 36 characters")]
        )
    ttl = timedelta(seconds=body.expires_in) if body.expires_in else None
    metadata = {"limits": body.limits.model_dump(exclude_none=True)} if body.limits else None
    text, key = await plane.gateway.issue(body.scope, body.id, models=body.models, ttl=ttl, metadata=metadata)
    # The key's text is in this answer and nowhere else, ever.
    return JSONResponse(ok({**key_json(key), "key": text}), status_code=201)


def _any_model_of(plane: Any, name: str) -> bool:
    provider, _, model = name.partition("/")
    config = plane.settings.providers.get(provider)
    return bool(config is not None and model and not config.models)


@router.get("/keys")
async def list_keys(
    plane: Plane,
    request: Request,
    caller: Annotated[Principal, allow("key:read")],
    scope: Literal["agent", "team", "user"] | None = None,
    scope_id: Annotated[str | None, Query(alias="id")] = None,
    revoked: bool = False,
) -> dict[str, Any]:
    keys = await plane.store.list_keys(scope_type=scope, scope_id=scope_id, revoked=revoked)
    shown = [k for k in keys if await _may(request, caller, "key", "read", k.scope_type, k.scope_id)]
    return ok({"items": [key_json(k) for k in shown]})


@router.delete("/keys/{key_id}")
async def revoke_key(
    key_id: str, plane: Plane, request: Request, caller: Annotated[Principal, allow("key:delete")]
) -> dict[str, Any]:
    key = await plane.store.get_key(key_id)  # 404 for an unknown key
    await _check_scope(request, caller, "key", "delete", key.scope_type, key.scope_id)
    await plane.gateway.revoke(key_id)
    return ok(key_json(await plane.store.get_key(key_id)))


@router.get("/usage")
async def usage(
    plane: Plane,
    request: Request,
    caller: Annotated[Principal, allow("usage:read")],
    by: Literal["agent", "team", "user", "model", "day"] = "agent",
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    if by in ("model", "day") and caller.scope_of("usage", "read") != "all":
        raise PermissionDeniedError(
            f"usage by {by} adds up everyone's spending: it needs usage:read:all; ask by agent, team or user",
            details={"permission": "usage:read:all"},
        )
    rows = await plane.store.usage_summary(by, since=since, until=until)
    rows = [r for r in rows if await _may(request, caller, "usage", "read", by, r["key"])]
    items = [
        {
            "key": r["key"],
            "requests": int(r["requests"]),
            "inputTokens": int(r["input_tokens"] or 0),
            "outputTokens": int(r["output_tokens"] or 0),
            "cachedTokens": int(r["cached_tokens"] or 0),
            "costUsd": round(float(r["cost_usd"]), 8) if r["cost_usd"] is not None else None,
        }
        for r in rows
    ]
    return ok({"by": by, "items": items})


class SetBudget(Body):
    scope: Literal["agent", "team", "user"]
    id: Annotated[str, Field(min_length=1, max_length=255)]
    usd: Annotated[float, Field(gt=0, lt=1e9)]
    period: Literal["daily", "monthly", "total"] = "total"


async def budget_json(plane: Any, b: Budget) -> dict[str, Any]:
    status = await plane.budgets.status(b)
    return {
        "id": b.id,
        "scope": b.entity_type,
        "scopeId": b.entity_id,
        "limitUsd": b.total_budget,
        "period": b.period,
        "spentUsd": round(status["spent"], 8),
        "remainingUsd": round(status["remaining"], 8),
        "periodStart": status["start"].isoformat() if status["start"] else None,
        "periodEnd": status["end"].isoformat() if status["end"] else None,
        "updatedAt": b.updated_at.isoformat() if b.updated_at else None,
    }


@router.put("/budgets")
async def set_budget(
    body: SetBudget, plane: Plane, request: Request, caller: Annotated[Principal, allow("budget:update")]
) -> dict[str, Any]:
    await _check_scope(request, caller, "budget", "update", body.scope, body.id)
    budget = await plane.budgets.set(body.scope, body.id, body.usd, body.period)
    return ok(await budget_json(plane, budget))


@router.get("/budgets")
async def list_budgets(
    plane: Plane,
    request: Request,
    caller: Annotated[Principal, allow("budget:read")],
    scope: Literal["agent", "team", "user"] | None = None,
    scope_id: Annotated[str | None, Query(alias="id")] = None,
) -> dict[str, Any]:
    budgets = await plane.store.list_budgets(entity_type=scope, entity_id=scope_id)
    budgets = [b for b in budgets if await _may(request, caller, "budget", "read", b.entity_type, b.entity_id)]
    return ok({"items": [await budget_json(plane, b) for b in budgets]})


@router.delete("/budgets/{budget_id}")
async def delete_budget(
    budget_id: str, plane: Plane, request: Request, caller: Annotated[Principal, allow("budget:delete")]
) -> dict[str, Any]:
    found = [b for b in await plane.store.list_budgets() if b.id == budget_id]
    if found:
        await _check_scope(request, caller, "budget", "delete", found[0].entity_type, found[0].entity_id)
    await plane.store.delete_budget(budget_id)
    plane.gateway.budgets.forget(budget_id)
    return ok({"id": budget_id, "deleted": True})
