"""The FastAPI application: routes under ``/api/v1`` (and the ``/api`` alias), health at the root, ``/auth``, the
WebSocket at ``/events``, one error mapping, request ids on every response.

The middleware, outermost first: ``BrowserGuard`` (Host allowlist, cross-site ``Origin``), the gateway's
``/proxy`` (plain ASGI, skips the rest), request ids, the audit log, CORS when configured, then the routes, each of
which declares its permission (``godel.api.access``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import structlog
from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from limits.aio.storage import MemoryStorage

from godel import __version__
from godel.api import docs, errors, proxy
from godel.api.access import ApiRateLimit
from godel.api.auditing import AuditMiddleware
from godel.api.limits import RequestLimits
from godel.api.middleware import RequestIdMiddleware
from godel.api.ownership import owner_lookups
from godel.api.routes import agents, events, gateway, health
from godel.api.routes import auth as auth_routes
from godel.api.routes import oidc as oidc_routes
from godel.api.routes import webhooks as webhook_routes
from godel.api.routes import workflows as workflow_routes
from godel.api.routes.merges import router as merges_router
from godel.api.routes.tasks import router as tasks_router
from godel.api.routes.teams import router as teams_router
from godel.api.security import BrowserGuard
from godel.api.ws import router as ws_router
from godel.auth.accounts import Accounts
from godel.auth.audit import AuditLog
from godel.auth.oidc import OidcLogin
from godel.scheduler.plane import ControlPlane
from godel.settings import Settings
from godel.store.sql import SqlStore
from godel.teams import TeamOrchestrator
from godel.webhooks import DeliveryPolicy, WebhookDispatcher
from godel.workflow.engine import WorkflowEngine

log = structlog.get_logger("godel.api")
LAST_USED_FLUSH_SECONDS = 10.0


def sql_store(plane: ControlPlane) -> SqlStore:
    """The plane's store as the SQL store, whose narrower ports (webhooks) the ``Store`` Protocol does not list."""
    if not isinstance(plane.store, SqlStore):
        raise TypeError(f"the API server needs Godel's SQL store, not {type(plane.store).__name__}")
    return plane.store


def allowed_hosts(settings: Settings) -> list[str]:
    hosts = [*settings.allowed_hosts, settings.host]
    if settings.gateway_url:
        hosts.append(urlsplit(settings.gateway_url).hostname or "")
    hosts.append(urlsplit(settings.url).hostname or "")
    return [h for h in hosts if h and h not in ("0.0.0.0", "::")]


def create_app(settings: Settings | None = None, *, plane: ControlPlane | None = None) -> FastAPI:
    """With ``plane`` the caller owns its lifecycle (tests); otherwise the app starts and stops its own."""
    owned = plane is None
    the_plane = plane or ControlPlane(settings or Settings())
    settings = the_plane.settings
    workflows = WorkflowEngine(the_plane)
    teams = TeamOrchestrator(the_plane)
    auth = the_plane.auth
    auth.owner_lookups.update(owner_lookups(the_plane, teams, workflows))
    accounts = Accounts(auth)
    sso = OidcLogin.from_settings(settings, accounts)  # None unless single sign-on is configured
    audit = AuditLog(the_plane.store, the_plane.clock)
    hooks = WebhookDispatcher(sql_store(the_plane), the_plane.bus, auth, clock=the_plane.clock,
                              policy=DeliveryPolicy.from_settings(settings), secrets=the_plane.secrets)  # fmt: skip

    async def flush_last_used() -> None:
        while True:
            await asyncio.sleep(LAST_USED_FLUSH_SECONDS)  # a batch of "last used" times per interval, not a write each
            try:
                await auth.flush_last_used()
            except Exception:
                log.exception("could not record when API keys were last used")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owned:
            await the_plane.start()
        if settings.auth_enabled:
            made = await accounts.bootstrap(settings.home, settings.local_url)
            if made is not None:
                log.info("created the first administrator; its API key is in the credentials file", path=str(made))
        flusher = asyncio.create_task(flush_last_used(), name="auth:last-used")
        await hooks.start()  # deliveries left pending by the last run go out again
        await workflows.start()  # carries on the workflows that were running when the server stopped
        await teams.start()  # and the teams
        try:
            yield
        finally:
            await teams.stop()
            await workflows.stop()
            await hooks.stop()
            flusher.cancel()
            await auth.flush_last_used()
            await proxy.settle()  # usage of responses that just ended is recorded before the store closes
            if owned:
                await the_plane.stop()

    app = FastAPI(
        title="Godel",
        version=__version__,
        description="Control plane for AI coding agents.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load from a CDN; godel.api.docs serves them from local assets
        redoc_url=None,
    )
    app.state.plane = the_plane
    app.state.workflows = workflows
    app.state.teams = teams
    app.state.gateway = the_plane.gateway
    app.state.auth = auth
    app.state.accounts = accounts
    app.state.oidc = sso
    app.state.audit = audit
    app.state.webhooks = hooks
    app.state.cookie_secure = settings.cookie_secure if settings.cookie_secure is not None else bool(settings.tls_cert)
    app.state.api_rate_limit = ApiRateLimit(settings.api_rate_limit, the_plane.gateway.shared.windows())
    # Password guessing: a few tries a minute per user name, in this server's memory.
    app.state.login_rate_limit = ApiRateLimit("10/minute", MemoryStorage())
    errors.install(app)
    docs.install(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID", "Last-Event-ID"],
        )  # fmt: skip
    app.add_middleware(RequestLimits, max_body_bytes=settings.max_request_bytes)
    app.add_middleware(AuditMiddleware, audit=audit)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(proxy.ProxyMiddleware, gateway=the_plane.gateway)  # /proxy/… skips the rest
    app.add_middleware(
        BrowserGuard, allowed_hosts=allowed_hosts(settings), cors_origins=settings.cors_origins, audit=audit
    )
    app.include_router(health.router)
    app.include_router(auth_routes.router)
    app.include_router(oidc_routes.router)
    v1 = APIRouter()
    v1.include_router(agents.router)
    v1.include_router(events.router)
    v1.include_router(gateway.router)
    v1.include_router(tasks_router)
    v1.include_router(teams_router)
    v1.include_router(workflow_routes.router)
    v1.include_router(merges_router)
    v1.include_router(auth_routes.admin)
    v1.include_router(webhook_routes.router)
    app.include_router(v1, prefix="/api/v1")
    app.include_router(v1, prefix="/api", include_in_schema=False)
    app.include_router(ws_router)
    return app
