"""The FastAPI application: routes under ``/api/v1`` (and the ``/api`` alias), health at the root, ``/auth``, the
WebSocket at ``/events``, one error mapping, request ids on every response.

The middleware, outermost first: ``BrowserGuard`` (Host allowlist, cross-site ``Origin``), the gateway's
``/proxy`` (plain ASGI, skips the rest), request ids, the audit log, CORS when configured, then the routes, each of
which declares its permission (``godel.api.access``).
"""

from __future__ import annotations

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
from godel.api.egress import EgressProxy
from godel.api.gateway_socket import GatewaySocket
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
from godel.scheduler.egress import EgressTokens
from godel.scheduler.plane import ControlPlane
from godel.services import Services
from godel.settings import Settings

log = structlog.get_logger("godel.api")


def allowed_hosts(settings: Settings) -> list[str]:
    hosts = [*settings.allowed_hosts, settings.host]
    if settings.gateway_url:
        hosts.append(urlsplit(settings.gateway_url).hostname or "")
    hosts.append(urlsplit(settings.url).hostname or "")
    return [h for h in hosts if h and h not in ("0.0.0.0", "::")]


def create_app(settings: Settings | None = None, *, plane: ControlPlane | None = None) -> FastAPI:
    """With ``plane`` the caller owns its lifecycle (tests); otherwise the app starts and stops its own. The
    services themselves are built (and started, stopped) by ``godel.services``; this puts HTTP in front of them."""
    services = Services.build(settings, plane=plane)
    the_plane, settings = services.plane, services.settings
    auth = the_plane.auth
    auth.owner_lookups.update(owner_lookups(the_plane, services.teams, services.workflows, services.merges))

    # Sandboxed agents have no network: the gateway alone, on a Unix socket bound into each sandbox, is their way out.
    sandboxed = settings.confines_agents and settings.use_gateway
    gateway_socket = (
        GatewaySocket(the_plane.gateway, settings.gateway_socket, auth=auth if settings.auth_enabled else None)
        if sandboxed
        else None
    )
    # ... and the egress proxy beside it, their way to the hosts their allowlist names (config.sandbox.egress).
    egress = (
        EgressProxy(
            settings.egress_socket, tokens=EgressTokens.in_home(settings.home), store=the_plane.store,
            allow_private=settings.egress_allow_private,
        )
        if sandboxed
        else None
    )  # fmt: skip

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.unconfined_warning:
            log.warning(settings.unconfined_warning)
        await services.start()
        try:
            if gateway_socket is not None:
                await gateway_socket.start()
            if egress is not None:
                await egress.start()
            yield
        finally:
            if egress is not None:
                await egress.stop()
            if gateway_socket is not None:
                await gateway_socket.stop()
            await services.stop()

    app = FastAPI(
        title="Godel",
        version=__version__,
        description="Control plane for AI coding agents.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load from a CDN; godel.api.docs serves them from local assets
        redoc_url=None,
    )
    app.state.services = services
    app.state.plane = the_plane
    app.state.workflows = services.workflows
    app.state.teams = services.teams
    app.state.merges = services.merges
    app.state.gateway = the_plane.gateway
    app.state.auth = auth
    app.state.accounts = services.accounts
    app.state.oidc = services.sso
    app.state.audit = services.audit
    app.state.webhooks = services.webhooks
    app.state.cookie_secure = settings.cookie_secure if settings.cookie_secure is not None else bool(settings.tls_cert)
    app.state.api_rate_limit = ApiRateLimit(settings.api_rate_limit, the_plane.gateway.shared.windows())
    # Password guessing: ten tries a minute per user name, in this server's memory, counted exactly.
    app.state.login_rate_limit = ApiRateLimit("10/minute", MemoryStorage(), exact=True)
    errors.install(app)
    docs.install(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID", "Last-Event-ID"],
        )  # fmt: skip
    app.add_middleware(RequestLimits, max_body_bytes=settings.max_request_bytes)
    app.add_middleware(AuditMiddleware, audit=services.audit)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(proxy.ProxyMiddleware, gateway=the_plane.gateway)  # /proxy/… skips the rest
    app.add_middleware(
        BrowserGuard, allowed_hosts=allowed_hosts(settings), cors_origins=settings.cors_origins, audit=services.audit
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
    if gateway_socket is not None:
        gateway_socket.agents.api = app  # agents' run credentials reach the API through the sandbox's socket
    return app
