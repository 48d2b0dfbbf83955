"""gvisor: the start cost of a no-op agent in gVisor, beside ``runsc do true``, the bubblewrap sandbox and the local
runtime, all in the same run.

Each runtime runs ``/bin/sh -c true`` as an agent in a worktree prepared once (each sample is another ``start`` of
it, as a retry is). The figure is from the call to ``Runtime.start`` until the wrapper's exit file is there (the run
is over and its status recorded), polled every 0.5 ms. The raw baseline is ``runsc --network=none --platform=ptrace
do true`` with ``subprocess.run`` (the issue's baseline: gVisor's own shortest way to run a command). The gvisor
runtime adds writing the bundle, the wrapper, the entry shell and ``runsc run``'s own create/start/wait with the
binds of the confinement; no gateway relay (none configured). Each round runs the four in a rotated order.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from benchmarks.common import Config, Figure, make_repo, ms_since, workdir
from godel.core.ports import LaunchSpec, RuntimeHandle, WorkspaceSpec
from godel.runtimes.gvisor import GVisorRuntime, runsc_problem
from godel.runtimes.local import LocalRuntime
from godel.runtimes.processes import exit_file
from godel.runtimes.sandbox import SandboxRuntime, missing_tools

NAME = "gvisor"
NOOP = LaunchSpec(["/bin/sh", "-c", "true"])
ORDER = ("gvisor", "runsc do", "sandbox", "local")


def run(cfg: Config) -> list[Figure]:
    problem = runsc_problem()
    if problem is not None or missing_tools():
        cfg.log(f"gvisor: skipped ({problem or 'bubblewrap missing'}; apt-get install runsc bubblewrap socat)")
        return []
    with workdir(cfg, NAME) as root:
        return asyncio.run(_run(cfg, root))


async def _run(cfg: Config, root: Path) -> list[Figure]:
    make_repo(root / "repo", files=100, dirs=10)
    runtimes: dict[str, LocalRuntime] = {
        "local": LocalRuntime(root / "local" / "worktrees", root / "local" / "logs"),
        "sandbox": SandboxRuntime(root / "sandbox" / "worktrees", root / "sandbox" / "logs"),
        "gvisor": GVisorRuntime(root / "gvisor" / "worktrees", root / "gvisor" / "logs"),
    }
    handles = {
        name: await rt.prepare(WorkspaceSpec(agent_id=f"bench-{name}", repo=root / "repo"))
        for name, rt in runtimes.items()
    }
    do = ["runsc", "--root", str(root / "runsc-do"), "--network=none", "--platform=ptrace", "do", "true"]
    samples, warmup = cfg.pick(40, 4), cfg.pick(3, 1)
    times: dict[str, list[float]] = {name: [] for name in ORDER}
    for i in range(warmup + samples):
        for which in ORDER[i % 4 :] + ORDER[: i % 4]:
            if which == "runsc do":
                ms = await asyncio.to_thread(_time_run, do)
            else:
                ms = await _start_to_exit(runtimes[which], handles[which])
            if i >= warmup:
                times[which].append(ms)
        if i >= warmup and (i - warmup + 1) % 10 == 0:
            cfg.log(f"gvisor: {i - warmup + 1}/{samples} rounds")
    note = "exit file polled every 0.5 ms; no gateway relay (none configured); the four alternate, order rotated"
    figures = [
        Figure(
            bench=NAME,
            name="no-op agent: start → exit recorded, gvisor",
            unit="ms",
            godel=times["gvisor"],
            baseline=times["runsc do"],
            baseline_label="runsc --network=none --platform=ptrace do true",
            notes=[note],
        ),
        Figure(
            bench=NAME,
            name="↳ the same, gvisor against the bubblewrap sandbox",
            unit="ms",
            godel=times["gvisor"],
            baseline=times["sandbox"],
            baseline_label="the same agent in the sandbox runtime (bubblewrap)",
        ),
        Figure(
            bench=NAME,
            name="↳ the same, the bubblewrap sandbox against the local runtime",
            unit="ms",
            godel=times["sandbox"],
            baseline=times["local"],
            baseline_label="the same agent on the local runtime",
        ),
    ]
    for name, rt in runtimes.items():
        await rt.cleanup(handles[name])
    return figures


async def _start_to_exit(runtime: LocalRuntime, handle: RuntimeHandle) -> float:
    t0 = time.perf_counter()
    handle = await runtime.start(handle, NOOP)
    done = exit_file(handle)
    while not done.exists():  # noqa: ASYNC110 (the exit file is the signal; no event to wait on)
        await asyncio.sleep(0.0005)
    ms = ms_since(t0)
    await runtime.status(handle)  # reap it
    return ms


def _time_run(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, cwd="/", stdout=subprocess.DEVNULL)  # runsc do needs a cwd it can see
    return ms_since(t0)
