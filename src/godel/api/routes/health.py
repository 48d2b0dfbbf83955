from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from godel import __version__
from godel.api.deps import Plane
from godel.api.schemas import ok

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(plane: Plane) -> dict[str, Any]:
    uptime = (plane.clock.now() - plane.started_at).total_seconds()
    return ok({"status": "healthy", "version": __version__, "uptime": uptime})


@router.get("/health/live")
async def live() -> dict[str, Any]:
    return ok({"status": "alive"})


@router.get("/health/ready")
async def ready(plane: Plane) -> dict[str, Any]:
    await plane.store.ping()  # raises StoreError (503) when the store does not answer
    return ok({"status": "ready"})


@router.get("/health/detailed")
async def detailed(plane: Plane) -> dict[str, Any]:
    return ok(await plane.detailed_health())


@router.get("/capabilities")
async def capabilities(plane: Plane) -> dict[str, Any]:
    return ok(plane.capabilities())
