"""Health and capabilities: what a load balancer, a dashboard or ``godel status`` asks first."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from godel import __version__
from godel.agents import adapter_names
from godel.api.access import authenticate, public
from godel.api.deps import Plane
from godel.api.schemas import ok
from godel.core.models import CleanupPolicy
from godel.core.ports import Backpressure
from godel.errors import GodelError
from godel.runtimes import runtime_names

router = APIRouter(tags=["health"])


@router.get("/health", dependencies=[public()])
async def health(plane: Plane) -> dict[str, Any]:
    uptime = (plane.clock.now() - plane.started_at).total_seconds()
    return ok({"status": "healthy", "version": __version__, "uptime": uptime})


@router.get("/health/live", dependencies=[public()])
async def live() -> dict[str, Any]:
    return ok({"status": "alive"})


@router.get("/health/ready", dependencies=[public()])
async def ready(plane: Plane) -> dict[str, Any]:
    """503 when the store, or the Redis the gateway's budgets and limits share, does not answer: a load
    balancer then sends callers to a server that can meter them (this one refuses budgeted requests meanwhile)."""
    from godel.errors import SharedStateUnavailableError
    from godel.gateway.shared import SharedStateDown

    await plane.store.ping()  # raises StoreError (503) when the store does not answer
    try:
        await plane.gateway.shared.ping()
    except SharedStateDown as exc:
        raise SharedStateUnavailableError(
            f"degraded: {exc.message}",
            details={"status": "degraded", "gateway": {"sharedState": "down", "budgetedRequests": "refused (503)"}},
        ) from exc
    return ok({"status": "ready"})


@router.get("/health/detailed", dependencies=[public()])
async def detailed(plane: Plane, request: Request) -> dict[str, Any]:
    """Public: whether the parts are up. The counts, the node and the background tasks' last errors only to a
    caller who may read every agent (``godel status`` sends its credential)."""
    from godel.gateway.shared import SharedStateDown

    t0 = plane.clock.monotonic()
    await plane.store.ping()
    store_ms = (plane.clock.monotonic() - t0) * 1000
    node = plane.node
    shared: dict[str, Any] = {"kind": "redis" if plane.gateway.shared.shared else "memory", "status": "up"}
    try:
        await plane.gateway.shared.ping()
    except SharedStateDown as exc:
        shared.update(status="down", error=exc.message)
    public_part: dict[str, Any] = {
        "status": "healthy" if shared["status"] == "up" else "degraded",
        "version": __version__,
        "uptime": (plane.clock.now() - plane.started_at).total_seconds(),
        "store": {"status": "up", "latencyMs": round(store_ms, 2)},
        "gatewaySharedState": {"kind": shared["kind"], "status": shared["status"]},
    }
    try:
        caller = await authenticate(request)
    except GodelError:
        caller = None
    if caller is None or caller.scope_of("agent", "read") != "all":
        return ok(public_part)
    return ok(
        {
            **public_part,
            "store": {**public_part["store"], "lastSequence": await plane.store.last_sequence()},
            # Where agents run by default, and why when that is unconfined (``godel status`` shows it loudly).
            "isolation": {
                "runtime": plane.runtimes.default.name,
                "level": plane.runtimes.default.capabilities().isolation,
                "warning": plane.settings.unconfined_warning if plane.runtimes.default.name == "local" else None,
            },
            "bus": plane.bus.stats(),
            "tasks": plane.tasks.describe(),
            "node": {
                "id": node.id,
                "name": node.name,
                "maxAgents": node.max_agents,
                "watched": len(plane.supervisor.runs),
            },
            "agents": await plane.counts(),
            "reconcile": plane.reconcile_report,
            "gatewaySharedState": shared,
        }
    )


@router.get("/capabilities", dependencies=[public()])
async def capabilities(plane: Plane) -> dict[str, Any]:
    caps = plane.runtime.capabilities()
    return ok(
        {
            "version": __version__,
            "apiVersion": "v1",
            "mode": "embedded" if plane.settings.resolved_database_url.startswith("sqlite") else "server",
            "runtimes": runtime_names(),
            # The runtimes a spawn may name here (config.sandbox.runtime), the default first, and the default chain.
            "enabledRuntimes": list(plane.runtimes.enabled),
            "runtimeFallback": list(plane.settings.runtime_fallback),
            # What confines agents here: "worktree" (a workspace of their own, nothing else) or "namespace" (the
            # sandbox runtime: bubblewrap namespaces, no network but the gateway).
            "isolation": caps.isolation,
            "runtime": {
                "name": caps.name,
                "isolation": caps.isolation,
                "networkIsolation": caps.network_isolation,
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
