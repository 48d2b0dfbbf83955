"""The remote runtimes against their fakes at the HTTP edge (``fake_k8s``, ``fake_e2b``), over real repositories.

The fakes run each pod's or sandbox's command as a real process in bubblewrap: without it these tests skip (and fail
under ``GODEL_REQUIRE_SANDBOX=1``, as the sandbox tests do). One fake of each kind serves the whole test process
(started on first use, stopped at exit), as a cluster serves many servers.
"""

from __future__ import annotations

import atexit
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from godel.core.ids import new_id
from godel.core.ports import LaunchSpec, ProcessState, RuntimeHandle, WorkspaceSpec
from godel.runtimes.e2b import E2BRuntime
from godel.runtimes.kubernetes import KubernetesRuntime
from godel.runtimes.remote.base import RemoteRuntime
from tests.conftest import remove_tree
from tests.remote.fake_e2b import API_KEY, FakeE2B
from tests.remote.fake_k8s import FakeKubernetes
from tests.sandbox.conftest import require_sandbox

DONE = {ProcessState.EXITED, ProcessState.GONE}
NAMESPACE = "agents"
_FAKES: dict[str, FakeKubernetes | FakeE2B] = {}


def _scratch(prefix: str) -> Path:
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix=prefix, dir=shm if shm.is_dir() else None))


def fake_kubernetes() -> FakeKubernetes:
    require_sandbox()  # the fake's containers are bubblewrap sandboxes
    fake = _FAKES.get("kubernetes")
    if fake is None:
        root = _scratch("fake-k8s-")
        fake = _FAKES["kubernetes"] = FakeKubernetes(root)
        atexit.register(_stop, fake, root)
    assert isinstance(fake, FakeKubernetes)
    return fake


def fake_e2b() -> FakeE2B:
    require_sandbox()
    fake = _FAKES.get("e2b")
    if fake is None:
        root = _scratch("fake-e2b-")
        fake = _FAKES["e2b"] = FakeE2B(root)
        atexit.register(_stop, fake, root)
    assert isinstance(fake, FakeE2B)
    return fake


def _stop(fake: FakeKubernetes | FakeE2B, root: Path) -> None:
    fake.stop()
    remove_tree(root)


def kubernetes_runtime(base: Path, **kwargs: object) -> KubernetesRuntime:
    fake = fake_kubernetes()
    kubeconfig = fake.kubeconfig(base / "kubeconfig", NAMESPACE)
    options: dict[str, object] = {"image": "godel-agent:test", "namespace": NAMESPACE, "kubeconfig": kubeconfig}
    options.update(kwargs)
    return KubernetesRuntime(base / "worktrees", base / "logs", **options)  # type: ignore[arg-type]


def e2b_runtime(base: Path, **kwargs: object) -> E2BRuntime:
    fake = fake_e2b()
    options: dict[str, object] = {"api_key": API_KEY, "api_url": fake.url, "sandbox_url": fake.url}
    options.update(kwargs)
    return E2BRuntime(base / "worktrees", base / "logs", **options)  # type: ignore[arg-type]


def g(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@dataclass
class Rig:
    name: str
    base: Path
    repo: Path
    runtime: RemoteRuntime
    handles: list[RuntimeHandle] = field(default_factory=list)

    def fresh(self) -> RemoteRuntime:
        """What a restarted server builds: another instance over the same directories."""
        return kubernetes_runtime(self.base) if self.name == "kubernetes" else e2b_runtime(self.base)

    async def run(
        self, script: str, env: dict[str, str] | None = None, files: dict[Path, str] | None = None, **spec: object
    ) -> RuntimeHandle:
        handle = await self.runtime.prepare(WorkspaceSpec(agent_id=new_id(), repo=self.repo, **spec))  # type: ignore[arg-type]
        handle = await self.runtime.start(handle, LaunchSpec(["/bin/sh", "-c", script], env or {}, files=files or {}))
        self.handles.append(handle)
        return handle

    async def output(self, handle: RuntimeHandle) -> tuple[list[str], list[str]]:
        lines, _ = await self.runtime.read_output(handle, {}, final=True)
        return [x.text for x in lines if x.stream == "stdout"], [x.text for x in lines if x.stream == "stderr"]


@pytest.fixture(params=["kubernetes", "e2b"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    base = _scratch("godel-remote-")
    repo = base / "repo"
    repo.mkdir()
    g(repo, "init", "-q", "-b", "main")
    g(repo, "config", "user.name", "Test")
    g(repo, "config", "user.email", "test@example.com")
    (repo / "README.md").write_text("hello\n")
    g(repo, "add", "-A")
    g(repo, "commit", "-q", "-m", "first")
    runtime = kubernetes_runtime(base) if request.param == "kubernetes" else e2b_runtime(base)
    r = Rig(request.param, base, repo, runtime)
    try:
        yield r
    finally:
        for handle in r.handles:
            await r.runtime.terminate(handle, grace=0.0)
            await r.runtime.cleanup(handle)
        remove_tree(base)  # unmounts what is left mounted under it (a workspace's overlay) first
