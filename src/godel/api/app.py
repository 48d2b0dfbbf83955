"""The FastAPI application: routes under ``/api/v1`` (and the ``/api`` alias), health at the root,
the WebSocket at ``/events``, one error mapping, request ids on every response."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from godel import __version__
from godel.api import errors
from godel.api.middleware import RequestIdMiddleware
from godel.api.routes import agents, events, gateway, health, proxy
from godel.api.ws import router as ws_router
from godel.scheduler.plane import ControlPlane
from godel.settings import Settings


def create_app(settings: Settings | None = None, *, plane: ControlPlane | None = None) -> FastAPI:
    """With ``plane`` the caller owns its lifecycle (tests); otherwise the app starts and stops its own."""
    owned = plane is None
    the_plane = plane or ControlPlane(settings or Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owned:
            await the_plane.start()
        try:
            yield
        finally:
            await proxy.settle()  # usage of responses that just ended is recorded before the store closes
            if owned:
                await the_plane.stop()

    app = FastAPI(
        title="Godel",
        version=__version__,
        description="Control plane for AI coding agents.",
        lifespan=lifespan,
    )
    app.state.plane = the_plane
    app.state.gateway = the_plane.gateway
    app.state.gateway_http = the_plane.gateway_http
    errors.install(app)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health.router)
    v1 = APIRouter()
    v1.include_router(agents.router)
    v1.include_router(events.router)
    v1.include_router(gateway.router)
    app.include_router(v1, prefix="/api/v1")
    app.include_router(v1, prefix="/api", include_in_schema=False)
    app.include_router(ws_router)
    app.include_router(proxy.router)
    return app
