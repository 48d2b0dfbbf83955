"""The FastAPI application: routes under ``/api/v1`` (and the ``/api`` alias), health at the root,
the WebSocket at ``/events``, one error mapping, request ids on every response."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from godel import __version__
from godel.api import errors, proxy
from godel.api.middleware import RequestIdMiddleware
from godel.api.routes import agents, events, gateway, health
from godel.api.routes import workflows as workflow_routes
from godel.api.routes.merges import router as merges_router
from godel.api.routes.tasks import router as tasks_router
from godel.api.routes.teams import router as teams_router
from godel.api.ws import router as ws_router
from godel.scheduler.plane import ControlPlane
from godel.settings import Settings
from godel.teams import TeamOrchestrator
from godel.workflow.engine import WorkflowEngine


def create_app(settings: Settings | None = None, *, plane: ControlPlane | None = None) -> FastAPI:
    """With ``plane`` the caller owns its lifecycle (tests); otherwise the app starts and stops its own."""
    owned = plane is None
    the_plane = plane or ControlPlane(settings or Settings())
    workflows = WorkflowEngine(the_plane)
    teams = TeamOrchestrator(the_plane)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owned:
            await the_plane.start()
        await workflows.start()  # carries on the workflows that were running when the server stopped
        await teams.start()  # and the teams
        try:
            yield
        finally:
            await teams.stop()
            await workflows.stop()
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
    app.state.workflows = workflows
    app.state.teams = teams
    app.state.gateway = the_plane.gateway
    errors.install(app)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(proxy.ProxyMiddleware, gateway=the_plane.gateway)  # outermost: /proxy/… skips the rest
    app.include_router(health.router)
    v1 = APIRouter()
    v1.include_router(agents.router)
    v1.include_router(events.router)
    v1.include_router(gateway.router)
    v1.include_router(tasks_router)
    v1.include_router(teams_router)
    v1.include_router(workflow_routes.router)
    v1.include_router(merges_router)
    app.include_router(v1, prefix="/api/v1")
    app.include_router(v1, prefix="/api", include_in_schema=False)
    app.include_router(ws_router)
    return app
