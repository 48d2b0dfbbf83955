"""``/auth/…`` (log in, refresh, log out, who am I) and ``/api/v1/users|roles|api-keys|audit``: who may call Godel.

Login answers with an access token (a 15-minute JWT) and a refresh token in the body, for scripts, and sets them as
HttpOnly ``SameSite=Strict`` cookies, for browsers. ``/auth/refresh`` takes the refresh token from the body or its
cookie and gives new tokens (the old one is spent: using it again closes the session).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from godel.api.access import COOKIE, USER, allow, auth_of, public, signed_in
from godel.api.schemas import Body, ok
from godel.auth.accounts import MAX_KEY_TTL, Accounts
from godel.auth.permissions import ASSIGNABLE_BUILTINS, BUILTIN_ROLES
from godel.auth.principal import Principal
from godel.auth.service import Tokens
from godel.errors import AuthenticationError, NotFoundError

router = APIRouter(prefix="/auth", tags=["auth"])
admin = APIRouter(tags=["access"])
REFRESH_COOKIE = "godel_refresh"

Name = Annotated[str, Field(min_length=1, max_length=100)]
Secret = Annotated[str, Field(min_length=1, max_length=1024)]


class Login(Body):
    username: Name
    password: Secret


class Refresh(Body):
    refresh_token: Secret | None = None


def _accounts(request: Request) -> Accounts:
    accounts: Accounts = request.app.state.accounts
    return accounts


def _tokens_response(request: Request, tokens: Tokens) -> JSONResponse:
    body = ok({
        "tokenType": "Bearer",
        "accessToken": tokens.access_token,
        "expiresAt": tokens.access_expires.isoformat(),
        "refreshToken": tokens.refresh_token,
        "refreshExpiresAt": tokens.refresh_expires.isoformat(),
        "user": me_json(tokens.principal),
    })  # fmt: skip
    response = JSONResponse(body)
    secure = bool(request.app.state.cookie_secure)
    ttl = int((tokens.access_expires - auth_of(request).clock.now()).total_seconds())
    response.set_cookie(COOKIE, tokens.access_token, max_age=ttl, httponly=True, samesite="strict", secure=secure)
    refresh_ttl = int((tokens.refresh_expires - auth_of(request).clock.now()).total_seconds())
    response.set_cookie(REFRESH_COOKIE, tokens.refresh_token, max_age=refresh_ttl, httponly=True, samesite="strict",
                        secure=secure, path="/auth")  # fmt: skip
    return response


def me_json(p: Principal) -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "kind": p.kind, "roles": list(p.roles), "team": p.team,
            "permissions": [str(g) for g in p.grants], "authenticatedBy": p.method}  # fmt: skip


@router.post("/login", dependencies=[public()])
async def login(body: Login, request: Request) -> JSONResponse:
    request.state.audit = {"user": body.username}
    limit = request.app.state.login_rate_limit
    if limit is not None:
        await limit.hit(f"login:{body.username}")
    tokens = await auth_of(request).login(body.username, body.password)
    return _tokens_response(request, tokens)


@router.post("/refresh", dependencies=[public()])
async def refresh(request: Request, body: Refresh | None = None) -> JSONResponse:
    token = (body.refresh_token if body else None) or request.cookies.get(REFRESH_COOKIE)
    if not token:
        raise AuthenticationError("send the refresh token in the body (refreshToken) or its cookie")
    tokens = await auth_of(request).refresh(token)
    request.state.audit = {"user": tokens.principal.name}
    return _tokens_response(request, tokens)


@router.post("/logout")
async def logout(request: Request, caller: Annotated[Principal, signed_in()]) -> JSONResponse:
    """Close this session: its refresh tokens and the access tokens issued from them stop working."""
    if caller.method in ("bearer", "cookie") and caller.credential_id:
        await auth_of(request).logout(caller.credential_id)
    response = JSONResponse(ok({"loggedOut": True}))
    response.delete_cookie(COOKIE)
    response.delete_cookie(REFRESH_COOKIE, path="/auth")
    return response


@router.get("/me")
async def me(caller: Annotated[Principal, signed_in()]) -> dict[str, Any]:
    return ok(me_json(caller))


# --- users ---
class CreateUser(Body):
    name: Name
    roles: list[Name] = Field(default_factory=lambda: ["developer"], max_length=20)
    team: Annotated[str, Field(max_length=255)] | None = None
    password: Annotated[str, Field(min_length=12, max_length=1024)] | None = None


class UpdateUser(Body):
    roles: list[Name] | None = Field(default=None, max_length=20)
    team: Annotated[str, Field(max_length=255)] | None = None
    password: Annotated[str, Field(min_length=12, max_length=1024)] | None = None
    disabled: bool | None = None


def user_json(u: dict[str, Any]) -> dict[str, Any]:
    return {"name": u["name"], "roles": u["roles"], "team": u["team"], "disabled": u["disabled"],
            "sso": u["oidc_subject"] is not None, "hasPassword": u["password_hash"] is not None,
            "createdAt": u["created_at"].isoformat(), "updatedAt": u["updated_at"].isoformat()}  # fmt: skip


@admin.post("/users", status_code=201)
async def create_user(
    body: CreateUser, request: Request, caller: Annotated[Principal, allow("user:create")]
) -> JSONResponse:
    user = await _accounts(request).create_user(body.name, roles=body.roles, team=body.team, password=body.password)
    request.state.audit = {"user": body.name, "roles": body.roles}
    return JSONResponse(ok(user_json(user)), status_code=201)


@admin.get("/users")
async def list_users(request: Request, caller: Annotated[Principal, allow("user:read")]) -> dict[str, Any]:
    return ok({"items": [user_json(u) for u in await _accounts(request).store.list_users()]})


@admin.get("/users/{name}")
async def get_user(name: str, request: Request, caller: Annotated[Principal, allow("user:read", on=USER)]) -> Any:
    user = await _accounts(request).store.get_user(name)
    if user is None:
        raise NotFoundError(f"user {name!r} not found", details={"user": name})
    return ok(user_json(user))


@admin.patch("/users/{name}")
async def update_user(
    name: str, body: UpdateUser, request: Request, caller: Annotated[Principal, allow("user:update", on=USER)]
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    user = await _accounts(request).update_user(name, changes)
    request.state.audit = {"user": name, "changed": sorted(k for k in changes if k != "password")}
    return ok(user_json(user))


@admin.delete("/users/{name}")
async def delete_user(
    name: str, request: Request, caller: Annotated[Principal, allow("user:delete", on=USER)]
) -> dict[str, Any]:
    await _accounts(request).delete_user(name)
    return ok({"name": name, "deleted": True})


# --- users' API keys ---
class CreateApiKey(Body):
    name: Annotated[str, Field(max_length=255)] | None = None
    expires_in: Annotated[float, Field(gt=0, le=MAX_KEY_TTL, allow_inf_nan=False)] | None = None  # seconds


def api_key_json(k: dict[str, Any]) -> dict[str, Any]:
    def at(v: Any) -> str | None:
        return v.isoformat() if v is not None else None

    return {"id": k["id"], "user": k["user_name"], "name": k["name"], "prefix": k["prefix"],
            "createdAt": at(k["created_at"]), "expiresAt": at(k["expires_at"]), "revokedAt": at(k["revoked_at"]),
            "lastUsedAt": at(k["last_used_at"])}  # fmt: skip


@admin.post("/users/{name}/api-keys", status_code=201)
async def create_api_key(
    name: str, request: Request, caller: Annotated[Principal, allow("apikey:create", on=USER)],
    body: CreateApiKey | None = None,
) -> JSONResponse:  # fmt: skip
    body = body or CreateApiKey()
    text, row = await _accounts(request).create_api_key(name, name=body.name, expires_in=body.expires_in)
    request.state.audit = {"user": name, "keyId": row["id"]}
    # The key's text is in this answer and nowhere else, ever.
    return JSONResponse(ok({**api_key_json(row), "key": text}), status_code=201)


@admin.get("/users/{name}/api-keys")
async def list_api_keys(
    name: str, request: Request, caller: Annotated[Principal, allow("apikey:read", on=USER)],
    revoked: bool = False,
) -> dict[str, Any]:  # fmt: skip
    keys = await _accounts(request).store.list_api_keys(user_name=name, revoked=revoked)
    return ok({"items": [api_key_json(k) for k in keys]})


@admin.delete("/users/{name}/api-keys/{key_id}")
async def revoke_api_key(
    name: str, key_id: str, request: Request, caller: Annotated[Principal, allow("apikey:delete", on=USER)]
) -> dict[str, Any]:
    row = await _accounts(request).store.get_api_key(key_id)
    if row is None or row["user_name"] != name:
        raise NotFoundError(f"API key {key_id!r} of user {name!r} not found", details={"keyId": key_id})
    revoked = await _accounts(request).revoke_api_key(key_id)
    request.state.audit = {"user": name, "keyId": key_id}
    return ok(api_key_json(revoked))


# --- roles ---
class SetRole(Body):
    permissions: list[Annotated[str, Field(min_length=3, max_length=100)]] = Field(min_length=1, max_length=100)
    description: Annotated[str, Field(max_length=1000)] | None = None


@admin.get("/roles")
async def list_roles(request: Request, caller: Annotated[Principal, allow("role:read")]) -> dict[str, Any]:
    builtin = [{"name": n, "permissions": list(BUILTIN_ROLES[n]), "builtin": True, "description": None}
               for n in (*ASSIGNABLE_BUILTINS, "agent")]  # fmt: skip
    custom = [{"name": r["name"], "permissions": r["permissions"], "builtin": False, "description": r["description"]}
              for r in await _accounts(request).store.list_roles()]  # fmt: skip
    return ok({"items": builtin + custom})


@admin.put("/roles/{role}")
async def set_role(
    role: str, body: SetRole, request: Request, caller: Annotated[Principal, allow("role:update")]
) -> dict[str, Any]:
    row = await _accounts(request).set_role(role, body.permissions, body.description)
    request.state.audit = {"role": role, "permissions": body.permissions}
    return ok({"name": row["name"], "permissions": row["permissions"], "builtin": False,
               "description": row["description"]})  # fmt: skip


@admin.delete("/roles/{role}")
async def delete_role(role: str, request: Request, caller: Annotated[Principal, allow("role:delete")]) -> Any:
    await _accounts(request).delete_role(role)
    return ok({"name": role, "deleted": True})


# --- audit ---
def audit_json(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "seq": r["seq"], "at": r["at"].isoformat(), "actor": r["actor"], "action": r["action"],
        "resource": r["resource"], "outcome": r["outcome"], "statusCode": r["status_code"],
        "requestId": r["request_id"], "client": r["client"], "details": r["details"], "hash": r["hash"],
    }  # fmt: skip


@admin.get("/audit")
async def audit(
    request: Request,
    caller: Annotated[Principal, allow("audit:read")],
    actor: Annotated[str | None, Query(max_length=255)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Newest first; page with ``before`` = the last row's ``seq``."""
    rows = await request.app.state.audit.store.audit_rows(
        after=before or 0, limit=limit, actor=actor, action=action, descending=True
    )
    return ok({"items": [audit_json(r) for r in rows], "before": rows[-1]["seq"] if rows else None})


@admin.get("/audit/verify")
async def verify_audit(request: Request, caller: Annotated[Principal, allow("audit:read")]) -> dict[str, Any]:
    verdict = await request.app.state.audit.verify()
    return ok({"ok": verdict.ok, "rows": verdict.rows, "firstBadSeq": verdict.first_bad, "reason": verdict.reason})
