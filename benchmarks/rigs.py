"""The Godel under test, set up the ways several benchmarks share (so that two benchmarks meant to differ in one thing,
a runtime say, do not drift apart in the rest):

- ``in_process_api``: a started ``ControlPlane`` behind ``create_app`` and an ``httpx.ASGITransport`` client, and
  ``post_and_wait``/``Ends`` to start an agent or a team through it and wait for its end on the bus;
- ``real_server``: one real ``godel serve`` at the production default periods, for the load benchmarks.

(The runtimes' own rig, ``noop_agents``, is in ``common``: it needs none of the API, which is slow to import.)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

import httpx
import psutil
from tests.conftest import admin_headers  # a real signed access token, as a user's
from tests.e2e.serverproc import ServerProcess

from benchmarks.common import ms_since, utcnow
from godel.api.app import create_app
from godel.core.events import Event, EventFilter
from godel.scheduler.plane import ControlPlane
from godel.settings import Settings

# ------------------------------------------------------------------------------------- in-process API

# Loop periods short enough that no figure waits on them (admission normally happens in the creating transaction).
_QUICK_LOOPS: dict[str, Any] = {
    "watch_interval": 0.02,
    "reconcile_interval": 0.05,
    "kill_grace": 1.0,
    "log_level": "warning",
}

Kind = Literal["agent", "team"]

# What ends an agent or a team on the bus, and whose end an event is.
_ENDS: dict[Kind, tuple[tuple[str, ...], Callable[[Event], str | None]]] = {
    "agent": (("agent:complete", "agent:error", "agent:kill"), lambda event: event.metadata.agent_id),
    "team": (("team:completed", "team:failed"), lambda event: event.metadata.team_id),
}


@contextlib.asynccontextmanager
async def in_process_api(
    home: Path, *, max_concurrent_agents: int, timeout: float = 60, **settings: Any
) -> AsyncIterator[tuple[ControlPlane, httpx.AsyncClient]]:
    """A started ``ControlPlane`` (SQLite under ``home``) behind ``create_app`` and an ``httpx.ASGITransport`` client
    with an admin token, so a figure has no TCP or uvicorn in it; stopped, its team orchestrator first, on exit."""
    plane = ControlPlane(Settings(home=home, max_concurrent_agents=max_concurrent_agents, **(_QUICK_LOOPS | settings)))
    await plane.start()
    try:
        app = create_app(plane=plane)
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://localhost",
                headers=await admin_headers(plane), timeout=timeout,
            ) as client:  # fmt: skip
                yield plane, client
        finally:
            await app.state.teams.stop()  # a no-op unless teams were started
    finally:
        await plane.stop()


class Ends:
    """The end events of agents or teams on the bus, subscribed to before the request that starts them so that no end
    is missed; waiting on them costs no polling."""

    def __init__(self, plane: ControlPlane, kind: Kind) -> None:
        patterns, self._whose = _ENDS[kind]
        self.kind = kind
        self._subscription = plane.bus.subscribe(EventFilter(patterns=patterns))

    def __enter__(self) -> Ends:
        return self

    def __exit__(self, *exc: object) -> None:
        self._subscription.close()

    async def wait(self, ids: Iterable[str], timeout: float) -> None:
        """Return once every one of ``ids`` has ended; fail if no end comes for ``timeout`` s."""
        left = set(ids)
        while left:
            event = await self._subscription.get(timeout=timeout)
            if event is None:
                raise RuntimeError(
                    f"{len(left)} {self.kind}(s) did not finish within {timeout:g} s: {sorted(left)[:3]}"
                )
            left.discard(self._whose(event) or "")


class Posted(NamedTuple):
    sent: datetime  # wall clock just before the POST, to compare with the store's timestamps
    post_ms: float  # the POST until its answer
    id: str


async def post_and_wait(
    plane: ControlPlane, client: httpx.AsyncClient, kind: Kind, body: dict[str, Any], *, timeout: float = 60
) -> Posted:
    """POST one agent or team and wait for its end on the bus, so that the store's timestamps are final when read."""
    with Ends(plane, kind) as ends:
        sent = utcnow()
        t0 = time.perf_counter()
        r = await client.post(f"/api/v1/{kind}s", json=body)
        post_ms = ms_since(t0)
        if r.status_code != 201:
            raise RuntimeError(f"POST /api/v1/{kind}s failed: {r.status_code} {r.text}")
        new_id = str(r.json()["data"]["id"])
        await ends.wait([new_id], timeout)
    return Posted(sent, post_ms, new_id)


# ------------------------------------------------------------------------------------------- real server


@contextlib.asynccontextmanager
async def real_server(home: Path, **env: str) -> AsyncIterator[tuple[psutil.Process, httpx.AsyncClient]]:
    """A real ``godel serve`` (``ServerProcess``) at the production default periods, watch 0.1 s and reconcile 1 s
    (ServerProcess's test values would make the watch pass five times as frequent), and a client of it; on exit it
    is stopped, or killed if it will not stop, and its agents with it."""
    server = ServerProcess(
        home,
        None,  # a free port
        cwd=None,
        GODEL_WATCH_INTERVAL="0.1",
        GODEL_RECONCILE_INTERVAL="1.0",
        GODEL_ON_SHUTDOWN="terminate",  # a safety net: nothing outlives the server if a phase fails
        **env,
    ).start()
    assert server.proc is not None
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=120) as http:
            yield psutil.Process(server.proc.pid), http
    finally:
        try:
            server.stop(timeout=120)
        except Exception:
            server.kill9()
