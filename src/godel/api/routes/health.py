"""Health and capabilities: what a load balancer, a dashboard or ``godel status`` asks first."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from godel import __version__
from godel.agents import adapter_names
from godel.api.deps import Plane
from godel.api.schemas import ok
from godel.core.models import CleanupPolicy
from godel.core.ports import Backpressure
from godel.runtimes import runtime_names

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
    t0 = plane.clock.monotonic()
    await plane.store.ping()
    store_ms = (plane.clock.monotonic() - t0) * 1000
    node = plane.node
    return ok(
        {
            "status": "healthy",
            "version": __version__,
            "uptime": (plane.clock.now() - plane.started_at).total_seconds(),
            "store": {
                "status": "up",
                "latencyMs": round(store_ms, 2),
                "lastSequence": await plane.store.last_sequence(),
            },
            "bus": plane.bus.stats(),
            "tasks": plane.tasks.describe(),
            "node": {
                "id": node.id,
                "name": node.name,
                "maxAgents": node.max_agents,
                "watched": len(plane.supervisor.watched),
            },
            "agents": await plane.counts(),
            "reconcile": plane.reconcile_report,
        }
    )


@router.get("/capabilities")
async def capabilities(plane: Plane) -> dict[str, Any]:
    caps = plane.runtime.capabilities()
    return ok(
        {
            "version": __version__,
            "apiVersion": "v1",
            "mode": "embedded" if plane.settings.resolved_database_url.startswith("sqlite") else "server",
            "runtimes": runtime_names(),
            "runtime": {
                "name": caps.name,
                "isolation": caps.isolation,
                "pause": caps.pause,
                "snapshot": caps.snapshot,
                "resourceLimits": list(caps.resource_limits),
            },
            "agents": adapter_names(),
            "cleanupPolicies": [p.value for p in CleanupPolicy],
            "backpressure": [p.value for p in Backpressure],
            "websocket": {"path": "/events", "protocol": "godel-events-v1"},
            "limits": {"maxConcurrentAgents": plane.settings.max_concurrent_agents},
        }
    )
