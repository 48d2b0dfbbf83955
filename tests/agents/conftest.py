"""A rig for driving the real agent CLIs through Godel against the scripted model server.

Each test gets a control plane (SQLite on tmpfs) whose configuration has one provider per wire API pointing
at a ``ScriptedModel``, plus ``down-*`` providers pointing at a port nobody listens on. The CLIs come from
``scripts/install-agent-clis`` (``GODEL_AGENTS_DIR``); when one is missing the test is skipped, unless
``GODEL_REQUIRE_AGENT_CLIS=1`` (set by ``scripts/test``), where a missing CLI is a failure.

The plane runs on the local runtime unless a test asks for more with ``@in_the_sandbox_too``: then it also runs
with runtime ``sandbox`` (bubblewrap), where the CLI's only way out is the gateway, served on the Unix socket the
sandbox's relay reaches (``godel.api.gateway_socket``), as ``godel serve`` does; the scripted model is then the
gateway's upstream. Sandboxed are the tests of what the sandbox could break in a CLI: every CLI's follow-up (its
session state, kept on disk in its private directory between runs) and pause and kill of its process tree (pause is
then the cgroup freezer, whose frozen tasks ``proc_state`` counts as stopped). Each CLI's edit runs sandboxed in
tests/gateway/test_agents_through_gateway.py. Left local, for the suite's time, are the tests with nothing
sandbox-specific (scripted failures, tool options, the sessions API, ten at once) and, because the gateway changes
what they test, those of a dead provider: in a sandbox the CLI gets the gateway's 502 instead of a refused
connection, the gateway itself serves the route's fallback within the request (so the supervisor's fallback never
runs), and no provider key ever reaches the CLI (tests/gateway covers all three).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from godel.agents import get_adapter
from godel.api.gateway_socket import GatewaySocket
from godel.core.events import Event, EventFilter
from godel.core.models import Agent
from godel.core.ports import EventQuery
from godel.core.states import AgentState
from godel.errors import AgentSpawnError
from godel.scheduler.plane import ControlPlane
from godel.scheduler.requests import SpawnRequest
from godel.settings import Settings
from godel.testing import ScriptedModel
from tests.conftest import held_by_vfork, make_repo
from tests.e2e.serverproc import free_port
from tests.sandbox.conftest import require_sandbox

CGROUPS = Path("/sys/fs/cgroup")
ENDED = (AgentState.COMPLETED, AgentState.FAILED, AgentState.KILLED)
MODEL = "scripted-model"
# provider name per wire API, as the rig configures them
PROVIDER = {"openai-chat": "scripted", "openai-responses": "scripted-responses", "anthropic": "scripted-anthropic",
            "gemini": "scripted-gemini"}  # fmt: skip


RUNTIMES = ("local", "sandbox")
# Runs a test on both runtimes (its ids end in [local] and [sandbox]); the rig reads the parameter.
in_the_sandbox_too = pytest.mark.parametrize("runtime", RUNTIMES)


def agents_dir() -> Path:
    return Settings().agents_dir


def require_cli(kind: str) -> None:
    try:
        get_adapter(kind).locate(agents_dir(), {})
    except AgentSpawnError as exc:
        if os.environ.get("GODEL_REQUIRE_AGENT_CLIS") == "1":
            pytest.fail(f"{kind} CLI missing although GODEL_REQUIRE_AGENT_CLIS=1: {exc.message}")
        pytest.skip(f"{kind} CLI not installed (scripts/install-agent-clis {kind})")


def frozen(pid: int) -> bool:
    """Whether ``pid`` is in a cgroup that the freezer holds frozen: how the sandbox pauses where the machine has
    cgroups. The kernel shows a frozen task as D (v1) or S (v2), never T, so a state alone cannot say it."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return False
    paths = {controllers: path for _, controllers, path in (line.split(":", 2) for line in lines)}
    v1 = next((path for controllers, path in paths.items() if "freezer" in controllers.split(",")), None)
    try:
        if v1 is not None:
            return (CGROUPS / "freezer" / v1.lstrip("/") / "freezer.state").read_text().strip() == "FROZEN"
        if "" in paths:
            return "frozen 1" in (CGROUPS / paths[""].lstrip("/") / "cgroup.events").read_text().splitlines()
    except OSError:
        pass
    return False


def proc_state(pid: int) -> str | None:
    """The state (R/S/T/Z…) of a process, from /proc; None once it is gone. A task the freezer holds, and a parent
    held in vfork by a stopped child (``held_by_vfork``), count as stopped (T): a pause they cannot run through."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
    return "T" if state != "Z" and (frozen(pid) or held_by_vfork(pid)) else state


async def eventually(check: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)  # polling an observable condition


async def tree_stops(pid: int, timeout: float = 20.0) -> None:
    """Until the process tree of ``pid`` is paused: some process stopped (T, or frozen), none running (zombies are
    helpers that exited just before the stop, which their stopped parent cannot reap). A process in uninterruptible
    I/O (D) when the stop came stops as soon as that I/O ends. On a timeout, says what each process was doing."""
    deadline = time.monotonic() + timeout
    while not ("T" in (states := proc_states(pid)) and states <= {"T", "t", "Z"}):
        if time.monotonic() >= deadline:
            pytest.fail(f"the tree of {pid} did not stop within {timeout:g} s: {states}\n{describe_tree(pid)}")
        await asyncio.sleep(0.05)  # polling an observable condition


def describe_tree(pid: int) -> str:
    """One line per process of the tree: pid, command, state, where it waits in the kernel, its freezer's state."""
    lines, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in _read(f"/proc/{p}/task/{task}/children").split()]
        except OSError:
            continue  # gone meanwhile
        comm, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat.rsplit(")", 1)[1].split()[0]
        cgroups = [line.split(":", 2) for line in _read(f"/proc/{p}/cgroup").splitlines() if line.count(":") >= 2]
        freezer = next((path for _, names, path in cgroups if "freezer" in names.split(",")), None)
        held = _read(CGROUPS / "freezer" / freezer.lstrip("/") / "freezer.state").strip() if freezer else ""
        lines.append(f"  {p} {comm} {state} wchan={_read(f'/proc/{p}/wchan') or '-'} freezer={held or '-'}")
    return "\n".join(lines)


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def proc_states(pid: int) -> set[str]:
    """States (``proc_state``) of a process and all its descendants."""
    states, todo = set(), [pid]
    while todo:
        p = todo.pop()
        state = proc_state(p)
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        if state is not None:
            states.add(state)
        for task in tasks:
            try:
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
            except OSError:
                pass
    return states


def providers_for(model: ScriptedModel | None) -> dict[str, Any]:
    """One provider per wire API at the scripted model, and the same set at a dead port (``down-…``)."""
    dead = f"http://127.0.0.1:{free_port()}"
    out: dict[str, Any] = {}
    for kind, name in PROVIDER.items():
        for prefix, root in (("", model.url if model else dead), ("down-", dead)):
            base = f"{root}/v1" if kind.startswith("openai") else root
            out[prefix + name] = {"kind": kind, "base_url": base, "api_key_env": None, "models": [MODEL]}
    return out


def model_for(kind: str, *, down: bool = False) -> str:
    """The ``provider/model`` name a CLI of adapter ``kind`` uses at the scripted model (its first wire API)."""
    wire = get_adapter(kind).wire_apis[0]
    return f"{'down-' if down else ''}{PROVIDER[wire]}/{MODEL}"


@dataclass
class Rig:
    plane: ControlPlane
    repo: Path
    model: ScriptedModel | None

    @property
    def runtime(self) -> str:
        return self.plane.runtime.name

    async def spawn(self, kind: str, task: str, *, model: str | None = None, **kw: Any) -> Agent:
        req = SpawnRequest(task=task, repo=str(self.repo), agent=kind, model=model or model_for(kind), **kw)
        return await self.plane.spawn(req, actor="test")

    async def wait_state(self, agent_id: str, *states: AgentState, timeout: float = 60.0) -> Agent:
        deadline = time.monotonic() + timeout
        while True:
            agent = await self.plane.get(agent_id)
            if agent.state in states:
                return agent
            if time.monotonic() > deadline:
                log = await self.plane.logs(agent_id, tail=30)
                lines = "\n".join(e.payload.get("line", "")[:300] for e in log)
                raise AssertionError(f"agent {agent_id} is {agent.state.value}, not {states} after {timeout}s\n{lines}")
            await asyncio.sleep(0.05)  # polling the store for the state the supervisor records

    async def wait_ended(self, agent_id: str, timeout: float = 60.0) -> Agent:
        return await self.wait_state(agent_id, *ENDED, timeout=timeout)

    async def events(self, agent_id: str, *patterns: str) -> list[Event]:
        flt = EventFilter(patterns=patterns or ("*",), agent_id=agent_id)
        return await self.plane.events(EventQuery(filter=flt, limit=10_000))


RigFactory = Callable[..., Any]


@pytest.fixture
def runtime() -> str:
    """Where the rig's agents run: local, unless the test is parametrized (``in_the_sandbox_too``)."""
    return "local"


@pytest.fixture
def rig(fast_tmp: Path, runtime: str) -> RigFactory:
    """``async with rig(turns, **settings) as r:`` -- a started control plane over a fresh repo and a scripted
    model playing ``turns`` (None: no model server at all), its agents on ``runtime``."""
    if runtime == "sandbox":
        require_sandbox()

    @asynccontextmanager
    async def make(turns: Any, *, files: dict[str, str] | None = None, **overrides: Any) -> AsyncIterator[Rig]:
        n = len(list(fast_tmp.iterdir()))
        root = fast_tmp / f"rig{n}"
        repo = make_repo(root / "repo", files)
        model = ScriptedModel(turns) if turns is not None else None
        if model:
            model.start()
        values: dict[str, Any] = {
            "home": root / "home",
            "watch_interval": 0.02,
            "reconcile_interval": 0.05,
            "kill_grace": 2.0,
            "retry_backoff": 0.05,
            "retry_backoff_max": 0.2,
            "max_concurrent_agents": 16,
            "agents_dir": agents_dir(),
            "agent_cli_retries": 0,
            # Local: no HTTP server here, agents go to the provider. Sandbox: the gateway is their only way out.
            "runtime": runtime,
            "use_gateway": runtime == "sandbox",
            "providers": providers_for(model),
            "default_timeout": 120.0,
        }
        values.update(overrides)
        plane = ControlPlane(Settings(**values))
        await plane.start()
        # What the sandbox's relay reaches (``godel serve`` serves it beside its TCP port): the gateway alone.
        gateway = GatewaySocket(plane.gateway, plane.settings.gateway_socket) if runtime == "sandbox" else None
        try:
            if gateway is not None:
                await gateway.start()
            yield Rig(plane, repo, model)
        finally:
            for agent_id in list(plane.supervisor.runs):
                await plane.kill(agent_id, actor="test", reason="test teardown")
            if gateway is not None:
                await gateway.stop()
            await plane.stop()
            if model:
                model.stop()

    return make
