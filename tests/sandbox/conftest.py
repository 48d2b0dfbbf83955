"""A sandbox runtime over a real repository on tmpfs, and a way to run a script inside it as an agent.

Without bubblewrap or socat the sandbox tests skip and say how to install them; with ``GODEL_REQUIRE_SANDBOX=1``
(set by ``.ci/run``) they fail instead, so CI cannot pass vacuously. The gvisor runtime's tests do the same with
runsc and ``GODEL_REQUIRE_GVISOR=1``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from godel.core.ids import new_id
from godel.core.ports import LaunchSpec, ProcessState, RuntimeHandle, WorkspaceSpec
from godel.runtimes.gvisor import GVisorRuntime, runsc_problem
from godel.runtimes.gvisor.runtime import INSTALL_HINT as GVISOR_HINT
from godel.runtimes.local import LocalRuntime
from godel.runtimes.sandbox import SandboxRuntime, missing_tools
from godel.runtimes.sandbox.runtime import INSTALL_HINT
from tests.conftest import make_repo, remove_tree

DONE = {ProcessState.EXITED, ProcessState.GONE}


def require_sandbox() -> None:
    missing = missing_tools()
    if missing:
        if os.environ.get("GODEL_REQUIRE_SANDBOX") == "1":
            pytest.fail(f"GODEL_REQUIRE_SANDBOX=1 but {', '.join(missing)} is missing: {INSTALL_HINT}")
        pytest.skip(f"the sandbox runtime needs {', '.join(missing)}: {INSTALL_HINT}")


def require_gvisor() -> None:
    problem = runsc_problem()
    if problem is not None:
        if os.environ.get("GODEL_REQUIRE_GVISOR") == "1":
            pytest.fail(f"GODEL_REQUIRE_GVISOR=1 but {problem}: {GVISOR_HINT}")
        pytest.skip(f"the gvisor runtime cannot run here ({problem}): {GVISOR_HINT}")


@dataclass
class Rig:
    base: Path
    repo: Path
    runtime: LocalRuntime  # a SandboxRuntime, or the local runtime as the control that shows an attack is real
    handles: list[RuntimeHandle] = field(default_factory=list)

    async def run(self, script: str, env: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, str]:
        """Run ``script`` as an agent to its end: (exit code, stdout + stderr)."""
        handle = await self.start(script, env)
        status = await self.runtime.wait_for_state(handle, DONE, timeout=timeout)
        lines, _ = await self.runtime.read_output(handle, {}, final=True)
        return status.exit_code if status.exit_code is not None else -1, "\n".join(x.text for x in lines)

    async def start(self, script: str, env: dict[str, str] | None = None) -> RuntimeHandle:
        handle = await self.runtime.prepare(WorkspaceSpec(agent_id=new_id(), repo=self.repo))
        handle = await self.runtime.start(handle, LaunchSpec(["/bin/sh", "-c", script], env or {}))
        self.handles.append(handle)
        return handle


def _scratch() -> Path:
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="godel-sbx-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None))


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    require_sandbox()
    base = _scratch()
    repo = make_repo(base / "repo")
    runtime = SandboxRuntime(base / "worktrees", base / "logs")
    r = Rig(base, repo, runtime)
    try:
        yield r
    finally:
        for handle in r.handles:  # never leak a process, whatever the test did
            await r.runtime.terminate(handle, grace=0.0)
        remove_tree(base)


@pytest.fixture
async def local_rig() -> AsyncIterator[Rig]:
    """The same over the local runtime: where an attack must work, to show the test would see it."""
    base = _scratch()
    r = Rig(base, make_repo(base / "repo"), LocalRuntime(base / "worktrees", base / "logs"))
    try:
        yield r
    finally:
        for handle in r.handles:
            await r.runtime.terminate(handle, grace=0.0)
        kill_strays(base)  # the control's daemons escape the local runtime by design: they must not outlive the test
        remove_tree(base)


def kill_strays(base: Path) -> None:
    """SIGKILL every process of this user working under ``base`` (its cwd there): what a control run left."""
    for proc in psutil.process_iter(["pid"]):
        try:
            if Path(proc.cwd()).is_relative_to(base) or proc.cwd().removesuffix(" (deleted)").startswith(str(base)):
                proc.kill()
        except (psutil.Error, ValueError):
            continue


@pytest.fixture
async def gvisor_rig() -> AsyncIterator[Rig]:
    """The same over the gvisor runtime."""
    require_gvisor()
    base = _scratch()
    r = Rig(base, make_repo(base / "repo"), GVisorRuntime(base / "worktrees", base / "logs"))
    try:
        yield r
    finally:
        for handle in r.handles:
            await r.runtime.terminate(handle, grace=0.0)
        remove_tree(base)
