"""The container runtime for tests: Godel's podman storage with the image built by scripts/build-agent-image
(built here, once per test process, when it is missing), every container labelled with this process's token and
removed at exit whatever the tests did.

Without podman or runc the container tests skip and say how to install them; with ``GODEL_REQUIRE_CONTAINER=1``
(for CI) they fail instead. Not running as root is a skip too: the runtime supports a root server only.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import time
from pathlib import Path

import pytest

from godel.core.ports import RuntimeHandle
from godel.runtimes.container import ContainerRuntime, missing_tools
from godel.runtimes.container.podman import INSTALL_HINT, Podman, default_storage, global_flags

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "scripts" / "build-agent-image"
TEST_LABEL = "org.godel.test"
TOKEN = f"{os.getpid()}-{time.time_ns()}"  # this process's containers
_built: str | None = None  # the image tag, once the build script has run in this process


def _unavailable(reason: str) -> None:
    if os.environ.get("GODEL_REQUIRE_CONTAINER") == "1":
        pytest.fail(f"GODEL_REQUIRE_CONTAINER=1 but {reason}")
    pytest.skip(reason)


def require_container() -> str:
    """Skip (or fail under GODEL_REQUIRE_CONTAINER=1) without podman, runc, root or debootstrap; build the image
    when it is missing (about a minute the first time, well under a second once built). The image's tag."""
    global _built
    missing = missing_tools()
    if missing:
        _unavailable(f"the container runtime needs {', '.join(missing)}: {INSTALL_HINT}")
    if os.getuid() != 0:
        _unavailable("the container runtime needs a root server (rootless podman is not supported yet)")
    if _built is None:
        started = time.monotonic()
        done = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            _unavailable(f"{BUILD.name} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        _built = done.stdout.strip().splitlines()[-1]
        if time.monotonic() - started > 5:
            print(f"\nbuilt the agent image {_built} in {time.monotonic() - started:.0f}s")
        atexit.register(_remove_test_containers)
    return _built


def container_runtime(base: Path, **kwargs: object) -> ContainerRuntime:
    require_container()
    kwargs.setdefault("labels", {TEST_LABEL: TOKEN})
    return ContainerRuntime(worktrees_root=base / "worktrees", logs_root=base / "logs", run_root=base / "run", **kwargs)  # type: ignore[arg-type]


def podman_argv(*args: str) -> list[str]:
    """``podman`` with the runtime's global flags, for a test's own look at the storage."""
    tools = Podman(default_storage())
    return [tools.podman, *global_flags(default_storage(), tools.runc), *args]


def _remove_test_containers() -> None:
    ids = subprocess.run(
        podman_argv("ps", "--all", "--quiet", "--filter", f"label={TEST_LABEL}={TOKEN}"),
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    if ids:
        subprocess.run(podman_argv("rm", "--force", "--time", "0", *ids), capture_output=True, check=False)


def container_pid(handle: RuntimeHandle) -> int | None:
    """The host pid of the agent's container's init (None: no container running)."""
    done = subprocess.run(
        podman_argv("container", "inspect", "--format", "{{.State.Pid}}", ContainerRuntime.container_name(handle)),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    pid = done.stdout.strip()
    return int(pid) if done.returncode == 0 and pid.isdigit() and int(pid) > 0 else None
