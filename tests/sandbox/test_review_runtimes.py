"""Review of per-agent runtimes: what happens to agents when the server's runtimes change, and to forks."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import httpx
import psutil
import pytest

from godel.api.app import create_app
from godel.scheduler.plane import ControlPlane
from tests.api.conftest import kill_runs, settings_for, spawn, wait_state
from tests.conftest import admin_headers
from tests.sandbox.conftest import require_sandbox


def _alive(pid: int) -> bool:
    """Running, not a zombie: the test process may be the wrapper's parent (its first plane started it), and a
    child that ended stays a zombie until reaped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_a_sandboxed_agent_can_still_be_killed_after_the_operator_drops_the_sandbox(
    fast_tmp: Path, git_repo: Path
) -> None:
    """A server offered the sandbox (``runtimes = ["sandbox"]``), an agent runs there, the server restarts (agents
    are left running: ``on_shutdown = "leave"``) without it. Every call on that agent goes to a runtime that is no
    longer enabled (``Runtimes.get`` raises RUNTIME_UNAVAILABLE): it cannot be adopted, killed nor cleaned up, and its
    sandbox runs on, out of Godel's hands."""
    require_sandbox()
    home = fast_tmp / "home"
    first = ControlPlane(settings_for(home, runtimes=["sandbox"], on_shutdown="leave"))
    await first.start()
    pid = 0
    try:
        headers = await admin_headers(first)
        transport = httpx.ASGITransport(app=create_app(plane=first))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers) as client:
            boxed = await spawn(client, git_repo, "sleep 300", config={"sandbox": {"runtime": "sandbox"}}, timeout=600)
            running = await wait_state(client, boxed["id"], "executing", timeout=30)
            pid = int(running["pid"])
        await first.stop()  # leaves it running, as configured

        second = ControlPlane(settings_for(home))  # the same home; the sandbox no longer offered
        await second.start()
        try:
            transport = httpx.ASGITransport(app=create_app(plane=second))
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers) as client:
                killed = await client.post(f"/api/v1/agents/{boxed['id']}/kill")
                shown = (await client.get(f"/api/v1/agents/{boxed['id']}")).json()["data"]
        finally:
            await kill_runs(second)
            await second.stop()
        assert killed.status_code == 200 and not _alive(pid), (
            f"kill of an agent whose runtime ({shown['isolation']}) is no longer enabled answered "
            f"{killed.status_code} {killed.text[:120]}; its process {pid} alive: {_alive(pid)}, "
            f"state {shown['state']}. "
            "An agent already running must stay manageable (route by its recorded runtime even when a spawn may "
            "no longer name it)."
        )
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # the sandbox this test started, if the kill did not end it


async def test_a_fork_of_a_sandboxed_agent_runs_in_the_sandbox(fast_tmp: Path, git_repo: Path) -> None:
    """A fork with another agent kind drops the source's whole ``config`` (fork_request), its resolved
    ``config.sandbox`` with it: the fork of a sandboxed agent, over the working tree that agent wrote, runs in the
    server's default runtime, here ``local``, unconfined."""
    require_sandbox()
    provider = {"kind": "openai-chat", "base_url": "http://127.0.0.1:9/v1", "models": ["m"], "api_key_env": "NONE"}
    plane = ControlPlane(
        settings_for(fast_tmp / "home", runtimes=["sandbox"], on_shutdown="terminate", providers={"p": provider})
    )
    await plane.start()
    try:
        headers = await admin_headers(plane)
        transport = httpx.ASGITransport(app=create_app(plane=plane))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers) as client:
            source = await spawn(client, git_repo, "true", config={"sandbox": {"runtime": "sandbox"}})
            await wait_state(client, source["id"], "completed", timeout=30)
            r = await client.post(f"/api/v1/agents/{source['id']}/fork", json={"agent": "command", "command": "true"})
            assert r.status_code == 201, r.text
            same_kind = r.json()["data"]
            r = await client.post(f"/api/v1/agents/{source['id']}/fork", json={"agent": "pi", "model": "p/m"})
            other_kind = r.json()["data"] if r.status_code == 201 else {"isolation": r.text[:200]}
    finally:
        await kill_runs(plane)
        await plane.stop()
    assert same_kind["isolation"]["runtime"] == "sandbox", same_kind["isolation"]
    assert other_kind["isolation"] == {"runtime": "sandbox", "level": "namespace"}, (
        "a fork of a sandboxed agent with another agent kind lost the source's runtime and runs "
        f"{other_kind['isolation']}: fork_request drops config (and config.sandbox) when the kind changes"
    )


pytestmark = pytest.mark.timeout(180)
