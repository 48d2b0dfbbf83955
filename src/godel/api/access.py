"""Every route declares who may call it: ``allow("agent:read", on=AGENT)``, or ``public()``.

``allow`` is a FastAPI dependency that authenticates the caller (``AuthService.authenticate``: API key, bearer
token, session cookie, or ``?token=`` on streams), checks that one of its grants covers the permission at the scope
the resource needs (its own, its team's, anyone's: ``godel.auth.permissions``) and hands the handler the
``Principal``. With ``on=``, the resource is the one named by a path parameter and its owner is looked up; without,
the check is on the collection (``own`` scope suffices, and a listing then shows only what the caller may see).

The declaration is the dependency itself, so ``tests/api/test_rbac.py`` can walk the app's routes and fail for any
route that has neither.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request, WebSocket
from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from starlette.requests import HTTPConnection

from godel.auth.principal import Principal
from godel.auth.service import AuthService, Presented
from godel.errors import GodelError, OriginRefusedError, PermissionDeniedError, RateLimitedError, StoreError
from godel.scheduler.requests import SpawnRequest

PERMISSION_ATTR = "__godel_permission__"
ON_ATTR = "__godel_permission_on__"  # the Ref whose owner decides the scope, or None for the collection
COOKIE = "godel_session"
_SAFE = ("GET", "HEAD", "OPTIONS")


class ApiRateLimit:
    """Requests per credential (the ``limits`` library, on the gateway's shared storage: memory or Redis).
    When the storage cannot be reached the request is refused (503), never let through unlimited."""

    def __init__(self, spec: str, storage: Storage, *, exact: bool = False) -> None:
        self.item: RateLimitItem = parse(spec)
        # Two counters a key (O(1), like the gateway), whose estimate can let a request or two more through across
        # a window's edge; ``exact``: every hit's time kept (O(limit)), for a small limit that must hold to the try.
        self.limiter: SlidingWindowCounterRateLimiter | MovingWindowRateLimiter = (
            MovingWindowRateLimiter(storage) if exact else SlidingWindowCounterRateLimiter(storage)
        )

    async def hit(self, who: str) -> None:
        try:
            allowed = await self.limiter.hit(self.item, "api", who)
            if allowed:
                return
            stats = await self.limiter.get_window_stats(self.item, "api", who)
        except Exception as exc:  # a storage failure: redis-py raises its own tree, limits wraps some
            raise StoreError(f"the API rate limit cannot be checked ({type(exc).__name__}); try again shortly",
                             details={"retryAfter": 2}) from exc  # fmt: skip
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimitedError(f"{who} is over its rate limit of {self.item}", retry_after=retry)


def presented(conn: HTTPConnection) -> Presented:
    headers = conn.headers
    authorization = headers.get("authorization", "")
    bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
    # ``?token=`` only where a browser cannot send a header: the WebSocket handshake and EventSource streams (a
    # GET of a stream route); a token in a URL ends up in logs, so nowhere else.
    streaming = conn.scope["type"] == "websocket" or (
        conn.scope.get("method") == "GET"
        and "text/event-stream" in headers.get("accept", "")
        and (conn.url.path.endswith("/stream") or conn.url.path.endswith("/logs"))
    )
    return Presented(
        api_key=headers.get("x-api-key"),
        bearer=bearer,
        cookie=conn.cookies.get(COOKIE),
        query_token=conn.query_params.get("token") if streaming else None,
        client=conn.client.host if conn.client else None,
    )


def same_origin_shown(conn: HTTPConnection) -> bool:
    """A cookie-authenticated change must show it comes from a page of this server (CSRF): its ``Origin`` (already
    checked by ``BrowserGuard`` when present) or, failing that, a same-origin ``Referer``."""
    headers = conn.headers
    if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return False
    if headers.get("origin"):
        return True
    referer = headers.get("referer")
    return bool(referer) and urlsplit(referer).netloc.lower() == headers.get("host", "").lower()


async def authenticate(conn: HTTPConnection) -> Principal:
    """The caller of this request (computed once per request, rate-limited per credential)."""
    known: Principal | None = getattr(conn.state, "principal", None)
    if known is not None:
        return known
    creds = presented(conn)
    principal = await auth_of(conn).authenticate(creds)
    if (
        principal.method == "cookie"
        and conn.scope["type"] == "http"
        and conn.scope["method"] not in _SAFE
        and not same_origin_shown(conn)
    ):
        raise OriginRefusedError("a change authenticated by the session cookie must come from this server's pages")
    limit: ApiRateLimit | None = getattr(conn.app.state, "api_rate_limit", None)
    if limit is not None and principal.method != "local":
        await limit.hit(principal.id)
    conn.state.principal = principal
    return principal


@dataclass(frozen=True)
class Ref:
    """A path parameter naming a resource whose owner decides the scope: ``Ref("agent", "agent_id")``."""

    kind: str
    param: str


AGENT = Ref("agent", "agent_id")
TEAM = Ref("team", "team_id")
WORKFLOW = Ref("workflow", "workflow_id")
TASK = Ref("task", "task_id")
USER = Ref("user", "name")
MERGE = Ref("merge", "merge_id")


class StillValid:
    """For a connection that outlives its first check (a WebSocket, an SSE stream): whether the credential it
    opened with still holds — not logged out, revoked, expired or its user disabled — checked at most once every
    ``every`` seconds (through the service's caches: microseconds)."""

    def __init__(self, conn: HTTPConnection, every: float = 1.0) -> None:
        self.auth = auth_of(conn)
        self.presented = presented(conn)
        self.every = every
        self.checked = time.monotonic()

    async def principal(self) -> Principal:
        """The caller as of now; raises ``AuthenticationError`` once its credential stopped working."""
        principal = await self.auth.authenticate(self.presented)
        self.checked = time.monotonic()
        return principal

    async def holds(self) -> bool:
        if time.monotonic() - self.checked < self.every:
            return True
        try:
            await self.principal()
        except GodelError:
            return False
        return True


def auth_of(request: HTTPConnection | Request | WebSocket) -> AuthService:
    service: AuthService = request.app.state.auth
    return service


def allow(permission: str, *, on: Ref | None = None) -> Any:
    """A dependency (use as ``Annotated[Principal, allow(...)]``) that admits callers holding ``permission``."""
    resource, action = permission.split(":")

    async def check(request: Request) -> Principal:
        auth = auth_of(request)
        principal = await authenticate(request)
        owner = None
        if on is not None:
            owner = await auth.owner_of(on.kind, str(request.path_params[on.param]))
        if not principal.may(resource, action, owner):
            raise PermissionDeniedError(
                f"{principal.id} may not {action} this {resource}"
                + ("" if on is None else f" ({on.kind} {request.path_params[on.param]})"),
                details={"permission": permission, "roles": list(principal.roles)},
            )
        return principal

    setattr(check, PERMISSION_ATTR, permission)
    setattr(check, ON_ATTR, on)
    return Depends(check)


def signed_in() -> Any:
    """A route any authenticated caller may use about itself (``/auth/me``, ``/auth/logout``)."""

    async def check(request: Request) -> Principal:
        return await authenticate(request)

    setattr(check, PERMISSION_ATTR, "authenticated")
    return Depends(check)


def checked_inside(what: str) -> Any:
    """A route that authenticates its caller itself and checks each thing it does (the WebSocket: the handshake,
    then each command and each event). ``what`` says which permissions it checks."""

    async def marker() -> None:
        return None

    setattr(marker, PERMISSION_ATTR, f"authenticated; {what}")
    return Depends(marker)


def public() -> Any:
    """A route anyone may call (health, capabilities, the OpenAPI document, login): says nothing sensitive."""

    async def nobody() -> None:
        return None

    setattr(nobody, PERMISSION_ATTR, "public")
    return Depends(nobody)


def caller(permission: str, *, on: Ref | None = None) -> Any:
    """``Annotated[Principal, allow(permission, on=on)]``, the type to give a handler's caller parameter."""
    return Annotated[Principal, allow(permission, on=on)]


async def visible_owners(conn: HTTPConnection, caller: Principal, resource: str) -> list[str] | None:
    """Whose resources a listing may show this caller: None for anyone's (``all``), else its own and, with
    ``team``, those of the people of its team."""
    scope = caller.scope_of(resource, "read")
    if scope == "all":
        return None
    owners = [caller.id]
    if scope == "team" and caller.team:
        users = await auth_of(conn).store.list_users()
        owners += [f"user:{u['name']}" for u in users if u["team"] == caller.team and u["name"] != caller.name]
    return owners


# Metadata keys Godel sets itself; a caller's body may not forge them.
OWNER_KEY = "godel:owner"  # where teams and tasks record who made them (a name no user's own key will take)
# godel:hold: scheduler.holding; parentAgent: the agent whose own credential spawned it (held to its runtime and repo);
# resourceLimits: the limits the agent runs under (scheduler.requests.LIMITS_KEY)
RESERVED_METADATA = (OWNER_KEY, "onBehalfOf", "allowSubagents", "parentAgent", "godel:hold", "resourceLimits")


def owned_metadata(metadata: dict[str, Any] | None, caller: Principal) -> dict[str, Any]:
    """The caller's metadata with Godel's ownership keys set from who is calling, never from the body."""
    out = {k: v for k, v in (metadata or {}).items() if k not in RESERVED_METADATA}
    out[OWNER_KEY] = caller.id
    return out


def spawn_request(body: dict[str, Any], caller: Principal) -> SpawnRequest:
    """A spawn owned by its caller. An agent's own credential spawns sub-agents owned by the agent and on behalf of
    the agent's owner; they never get the right to spawn in turn."""
    metadata = {k: v for k, v in (body.pop("metadata", None) or {}).items() if k not in RESERVED_METADATA}
    allow_subagents = bool(body.pop("allow_subagents", False))
    if caller.kind == "agent":
        allow_subagents = False
        metadata["parentAgent"] = caller.agent_id
    return SpawnRequest(**body, metadata=metadata, owner=caller.id, allow_subagents=allow_subagents)


async def may_steer(
    conn: HTTPConnection, caller: Principal, *, agent_id: str | None = None, team_id: str | None = None,
    workflow_id: str | None = None,
) -> None:  # fmt: skip
    """Refuse (403) a request that would put work on, or attach something to, an agent, team or workflow the
    caller may not change: assigning a task to someone else's agent, spawning into someone else's team."""
    auth = auth_of(conn)
    for kind, ref in (("agent", agent_id), ("team", team_id), ("workflow", workflow_id)):
        if ref is not None and not caller.may(kind, "update", await auth.owner_of(kind, ref)):
            raise PermissionDeniedError(
                f"{caller.id} may not attach work to {kind} {ref}", details={"permission": f"{kind}:update"}
            )
