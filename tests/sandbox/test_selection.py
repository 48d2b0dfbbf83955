"""Choosing the runtime: ``runtime = "sandbox"`` builds the sandbox, and fails closed where bubblewrap is missing."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from godel.api.app import create_app
from godel.errors import RuntimeFailure
from godel.runtimes import runtime_for
from godel.runtimes.sandbox import SandboxRuntime
from godel.scheduler.plane import ControlPlane
from godel.settings import Settings, load_settings
from godel.settings_files import SettingsError
from tests.api.conftest import eventually, kill_runs, settings_for, spawn, wait_state
from tests.conftest import admin_headers
from tests.sandbox.conftest import require_sandbox
from tests.sandbox.containers import require_container


def test_the_default_runtime_is_the_sandbox_where_bubblewrap_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_sandbox()
    monkeypatch.delenv("GODEL_RUNTIME", raising=False)  # the tests pin `local`; a user's machine does not
    settings = Settings(home=tmp_path)
    assert settings.runtime == "sandbox" and settings.unconfined_warning is None
    assert runtime_for(settings).name == "sandbox"
    # Without the gateway, a sandbox would have no way out at all: agents then run on local, and it is said.
    without = Settings(home=tmp_path, use_gateway=False)
    assert without.runtime == "local" and "use_gateway is off" in (without.unconfined_warning or "")
    # Without bubblewrap: local, with the fix in the warning (an explicit "sandbox" refuses to start instead).
    monkeypatch.setenv("PATH", str(tmp_path))
    bare = Settings(home=tmp_path)
    assert bare.runtime == "local"
    assert "UNCONFINED" in (bare.unconfined_warning or "") and "apt-get install bubblewrap socat" in (
        bare.unconfined_warning or ""
    )


def test_runtime_sandbox_builds_the_sandbox_with_the_gateway_relay(tmp_path: Path) -> None:
    require_sandbox()
    settings = Settings(home=tmp_path, runtime="sandbox", port=7399)
    runtime = runtime_for(settings)
    assert isinstance(runtime, SandboxRuntime)
    assert runtime.gateway_socket == tmp_path / "gateway" / "proxy.sock" and runtime.gateway_port == 7399
    assert runtime.worktrees_root == settings.worktrees_dir and runtime.run_root == tmp_path / "run"
    without = runtime_for(Settings(home=tmp_path, runtime="sandbox", use_gateway=False))
    assert isinstance(without, SandboxRuntime) and without.gateway_socket is None  # then no way out at all


def test_without_bubblewrap_the_sandbox_refuses_to_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither bwrap nor socat on it
    with pytest.raises(SettingsError) as info:
        load_settings(home=tmp_path, runtime="sandbox")
    assert "--runtime" in str(info.value) and "apt-get install bubblewrap socat" in str(info.value)
    monkeypatch.setenv("GODEL_RUNTIME", "sandbox")
    with pytest.raises(SettingsError, match=r"environment variable GODEL_RUNTIME.*apt-get install bubblewrap socat"):
        load_settings(home=tmp_path)
    with pytest.raises(RuntimeFailure, match="apt-get install bubblewrap socat"):
        SandboxRuntime(tmp_path / "w", tmp_path / "l")


# ------------------------------------------------------------------------------------------ per agent, on a server


@asynccontextmanager
async def _server(home: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    plane = ControlPlane(settings_for(home, **overrides))
    await plane.start()
    app = create_app(plane=plane)
    try:
        headers = await admin_headers(plane)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers) as client:
            yield client
    finally:
        await app.state.teams.stop()  # as the app's lifespan does (ASGITransport runs none): a team may still drive
        await kill_runs(plane)
        await plane.stop()


HOSTNAME = "cat /proc/sys/kernel/hostname"


async def _output(client: httpx.AsyncClient, agent_id: str) -> str:
    logs = (await client.get(f"/api/v1/agents/{agent_id}/logs?tail=50")).json()["data"]["items"]
    return "\n".join(line["line"] for line in logs)


async def test_each_agent_runs_in_the_runtime_it_names(fast_tmp: Path, git_repo: Path) -> None:
    require_sandbox()
    async with _server(fast_tmp / "home", runtimes=["sandbox"]) as client:
        boxed = await spawn(client, git_repo, HOSTNAME, config={"sandbox": {"runtime": "sandbox"}})
        plain = await spawn(client, git_repo, HOSTNAME)
        assert boxed["isolation"] == {"runtime": "sandbox", "level": "namespace"}
        assert plain["isolation"] == {"runtime": "local", "level": "worktree"}
        assert boxed["config"]["sandbox"] == {"runtime": "sandbox", "fallback": []}  # the resolved choice, shown
        for agent in (boxed, plain):
            assert (await wait_state(client, agent["id"], "completed", timeout=30))["exitCode"] == 0
        assert (await _output(client, boxed["id"])).strip() == "godel-sandbox"  # its own uts namespace
        assert (await _output(client, plain["id"])).strip() == socket.gethostname()
        caps = (await client.get("/capabilities")).json()["data"]
        assert caps["enabledRuntimes"] == ["local", "sandbox"] and caps["isolation"] == "worktree"


async def test_a_runtime_the_server_does_not_offer_is_refused_and_nothing_is_made(
    fast_tmp: Path, git_repo: Path
) -> None:
    async with _server(fast_tmp / "home") as client:  # offers its default (local) only
        body = {"task": "t", "repo": str(git_repo), "command": "true"}
        bad = {
            "config.sandbox.runtime": {"runtime": "sandbox"},  # a stronger one, not enabled here
            "config.sandbox.fallback[0]": {"runtime": "local", "fallback": ["gvisor"]},
            "config.sandbox.fallback": {"fallback": "sandbox"},
            "config.sandbox.nope": {"nope": 1},
            "config.sandbox": "sandbox",
        }
        for field, section in bad.items():
            r = await client.post("/api/v1/agents", json={**body, "config": {"sandbox": section}})
            assert r.status_code == 400, (field, r.text)
            assert field in [d["field"] for d in r.json()["error"]["details"]["fields"]], (field, r.text)
        assert (await client.get("/api/v1/agents")).json()["data"]["items"] == []
        team = {"strategy": "parallel", "repo": str(git_repo), "task": "t", "agent": "command", "command": "true"}
        r = await client.post("/api/v1/teams", json={**team, "sandbox": {"runtime": "gvisor"}})
        assert r.status_code == 400 and "not enabled" in r.json()["error"]["message"], r.text
        assert (await client.get("/api/v1/teams")).json()["data"]["items"] == []


def _path_without(tools: tuple[str, ...], into: Path) -> str:
    """A PATH with every program of this one but ``tools``: a machine where they are not installed."""
    into.mkdir(parents=True)
    for folder in os.environ["PATH"].split(os.pathsep):
        for program in Path(folder).glob("*") if Path(folder).is_dir() else ():
            link = into / program.name
            if program.name not in tools and not link.exists() and not link.is_symlink():
                link.symlink_to(program)
    return str(into)


async def test_a_runtime_that_cannot_start_hands_the_agent_to_the_next_of_its_chain(
    fast_tmp: Path, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _server(fast_tmp / "home", runtimes=["sandbox"]) as client:
        # bubblewrap is "uninstalled" before the sandbox runtime is first needed (it is built on first use)
        monkeypatch.setenv("PATH", _path_without(("bwrap", "socat"), fast_tmp / "bin"))
        chain = {"sandbox": {"runtime": "sandbox", "fallback": ["local"]}}
        chained = await spawn(client, git_repo, HOSTNAME, config=chain)
        alone = await spawn(client, git_repo, HOSTNAME, config={"sandbox": {"runtime": "sandbox"}})
        done = await wait_state(client, chained["id"], "completed", timeout=30)
        assert done["isolation"] == {"runtime": "local", "level": "worktree"}
        assert (await _output(client, chained["id"])).strip() == socket.gethostname()
        events = (await client.get(f"/api/v1/agents/{chained['id']}/events?type=agent:runtime:fallback")).json()
        (moved,) = events["data"]["items"]
        assert moved["payload"]["from"] == "sandbox" and moved["payload"]["to"] == "local"
        assert moved["payload"]["code"] == "RUNTIME_UNAVAILABLE" and "bwrap" in moved["payload"]["error"]
        # Without a chain, the spawn fails, naming the fix; nothing ran unconfined in its place.
        failed = await wait_state(client, alone["id"], "failed", timeout=30)
        assert "apt-get install bubblewrap socat" in failed["lastError"] and failed["isolation"]["runtime"] == "sandbox"
        assert await _output(client, alone["id"]) == ""


async def test_a_team_names_the_runtime_of_its_agents(fast_tmp: Path, git_repo: Path) -> None:
    require_sandbox()
    async with _server(fast_tmp / "home", runtimes=["sandbox"]) as client:
        team = {"strategy": "parallel", "repo": str(git_repo), "task": "t", "agent": "command", "command": HOSTNAME}
        r = await client.post(
            "/api/v1/teams", json={**team, "size": 1, "start": True, "sandbox": {"runtime": "sandbox"}}
        )
        assert r.status_code == 201, r.text
        team_id = r.json()["data"]["id"]

        async def agents() -> list[dict[str, Any]]:
            items = (await client.get(f"/api/v1/teams/{team_id}/agents")).json()["data"]["items"]
            return items if items and all(a["state"] == "completed" for a in items) else []

        (agent,) = await eventually(agents, timeout=30)
        assert agent["isolation"]["runtime"] == "sandbox"
        assert (await _output(client, agent["id"])).strip() == "godel-sandbox"


async def test_the_image_of_a_containers_agent_comes_from_the_agent_else_its_team(
    fast_tmp: Path, git_repo: Path
) -> None:
    tag = require_container()
    async with _server(fast_tmp / "home", runtimes=["container"]) as client:
        show = "cat /etc/godel-image"
        own = await spawn(client, git_repo, show, config={"sandbox": {"runtime": "container", "image": tag}})
        done = await wait_state(client, own["id"], "completed", "failed", timeout=90)
        assert done["state"] == "completed", done["lastError"]
        assert (await _output(client, own["id"])).strip() == tag  # the image it named, built by the script

        # A team's image is its agents' default: an image the storage lacks fails the agent, naming that image.
        missing = {"runtime": "container", "image": "localhost/no-such-image:7"}
        team = {"strategy": "parallel", "repo": str(git_repo), "task": "t", "agent": "command", "command": show,
                "size": 1, "start": True, "sandbox": missing}  # fmt: skip
        r = await client.post("/api/v1/teams", json=team)
        assert r.status_code == 201, r.text
        team_id = r.json()["data"]["id"]

        async def ended() -> list[dict[str, Any]]:
            items = (await client.get(f"/api/v1/teams/{team_id}/agents")).json()["data"]["items"]
            return items if items and all(a["state"] in ("completed", "failed") for a in items) else []

        (member,) = await eventually(ended, timeout=90)
        assert member["state"] == "failed", member["config"]
        assert "localhost/no-such-image:7" in member["lastError"]
        assert member["isolation"]["runtime"] == "container"
