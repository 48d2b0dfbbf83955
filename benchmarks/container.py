"""container: the start cost of a no-op agent in a container (podman + runc), beside the same agent in the bwrap
sandbox and on the local runtime, all in the same run; and the bare ``podman run --rm … true`` beside ``/bin/true``.

Each runtime runs ``/bin/sh -c true`` as an agent in a worktree prepared once (each sample is another ``start`` of
it, as a retry is); the figure is from the call to ``Runtime.start`` until the wrapper's exit file is there (the
container has exited and been removed: ``podman run --rm`` returns after the removal), polled every 0.5 ms. Samples
rotate which runtime goes first. No gateway socket is configured, so no relay is started in either confined runtime.

The bare figure is ``podman <the runtime's flags> run --rm <the runtime's arguments> <image> /bin/true`` (the same
user namespace, seccomp profile, read-only root, ``--network none``, ``--init``) against ``/bin/true``. The image
build is timed once: the up-to-date check (``scripts/build-agent-image`` when the image exists), and, in a full run,
a forced rebuild (``--force``: debootstrap from the Debian mirror, trim, import).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from benchmarks.common import Config, Figure, interleaved, make_repo, ms_since, start_to_exit, time_run, versus, workdir
from godel.core.ports import LaunchSpec, WorkspaceSpec
from godel.runtimes.container import ContainerRuntime, missing_tools
from godel.runtimes.container.podman import Spec, run_argv
from godel.runtimes.local import LocalRuntime
from godel.runtimes.sandbox import SandboxRuntime
from godel.runtimes.sandbox import missing_tools as sandbox_missing

NAME = "container"
NOOP = LaunchSpec(["/bin/sh", "-c", "true"])
BUILD = Path(__file__).resolve().parents[1] / "scripts" / "build-agent-image"


def run(cfg: Config) -> list[Figure]:
    if missing_tools() or sandbox_missing():
        cfg.log(
            "container: skipped, needs podman, runc, bwrap and socat (apt-get install podman runc bubblewrap socat)"
        )
        return []
    build = _timed([str(BUILD)])
    if build is None:
        cfg.log(f"container: skipped, {BUILD.name} failed")
        return []
    with workdir(cfg, NAME) as root:
        figures = asyncio.run(_run(cfg, root))
    check = Figure(bench=NAME, name="scripts/build-agent-image, image up to date", unit="ms", godel=[build])
    figures.append(check)
    if not cfg.quick:
        forced = _timed([str(BUILD), "--force"])
        if forced is not None:
            figures.append(
                Figure(bench=NAME, name="scripts/build-agent-image --force (full build)", unit="ms", godel=[forced])
            )
    return figures


async def _run(cfg: Config, root: Path) -> list[Figure]:
    make_repo(root / "repo", files=100, dirs=10)
    container = ContainerRuntime(
        root / "container" / "worktrees", root / "container" / "logs", labels={"org.godel.bench": cfg.run_id}
    )
    runtimes: dict[str, LocalRuntime] = {
        "local": LocalRuntime(root / "local" / "worktrees", root / "local" / "logs"),
        "sandbox": SandboxRuntime(root / "sandbox" / "worktrees", root / "sandbox" / "logs"),
        "container": container,
    }
    handles = {
        name: await rt.prepare(WorkspaceSpec(agent_id=f"bench-{cfg.run_id}-{name}", repo=root / "repo"))
        for name, rt in runtimes.items()
    }
    samples, warmup = cfg.pick(40, 6), cfg.pick(4, 1)

    def agent(name: str) -> Callable[[], Awaitable[float]]:
        return lambda: start_to_exit(runtimes[name], handles[name], NOOP)

    starts = await interleaved(cfg, NAME, {name: agent(name) for name in runtimes}, samples=samples, warmup=warmup)
    figures = versus(
        NAME, starts,
        [
            ("no-op agent: start → exit recorded, container", "container", "local",
             "the same agent on the local runtime"),
            ("no-op agent: start → exit recorded, container vs sandbox", "container", "sandbox",
             "the same agent in the sandbox"),
        ],
        note="exit file polled every 0.5 ms; no gateway relay (none configured)",
    )  # fmt: skip

    ws = handles["container"].workspace
    made = iter(range(10**6))

    async def podman() -> float:
        spec = Spec(
            name=f"godel-bench-{cfg.run_id}-{next(made)}",
            image=container.image,
            cwd=ws,
            argv=["/bin/true"],
            env_names=[],
            writable=[ws],
            labels={"org.godel.bench": cfg.run_id},
            seccomp=container.podman.seccomp,
        )
        return time_run(run_argv(container.podman.podman, container.podman.flags, spec))

    async def true() -> float:
        return time_run(["/bin/true"])

    raw = await interleaved(cfg, NAME, {"podman": podman, "true": true}, samples=samples, warmup=warmup)
    figures += versus(
        NAME, raw, [("podman run --rm (the runtime's arguments) /bin/true", "podman", "true", "/bin/true")]
    )
    await container.podman.remove_labelled(f"org.godel.bench={cfg.run_id}")
    for name, rt in runtimes.items():
        await rt.cleanup(handles[name])  # the sandbox's cgroups too
    return figures


def _timed(argv: list[str]) -> float | None:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, check=False)
    return ms_since(t0) if done.returncode == 0 else None
