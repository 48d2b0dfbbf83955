"""sandbox: the start cost of a sandboxed no-op agent, beside the same agent on the local runtime.

Both runtimes run ``/bin/sh -c true`` as an agent in a prepared worktree (prepared once per runtime; each sample is
another ``start`` of it, as a retry is). The figure is from the call to ``Runtime.start`` until the wrapper's exit
file is there (the run is over and its status recorded), polled every 0.5 ms. The sandbox adds bubblewrap
(namespaces, the binds) and the entry shell; without a gateway socket no relay is started, so that cost is not in it.

A second figure isolates bubblewrap itself: ``bwrap <the runtime's own arguments> /bin/true`` against ``/bin/true``,
both with ``subprocess.run``. Samples alternate which goes first.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from benchmarks.common import Config, Figure, make_repo, ms_since, workdir
from godel.core.ports import LaunchSpec, RuntimeHandle, WorkspaceSpec
from godel.runtimes.local import LocalRuntime
from godel.runtimes.processes import exit_file
from godel.runtimes.sandbox import SandboxRuntime, missing_tools
from godel.runtimes.sandbox.bwrap import Confinement, bwrap_argv, write_etc

NAME = "sandbox"
NOOP = LaunchSpec(["/bin/sh", "-c", "true"])


def run(cfg: Config) -> list[Figure]:
    if missing_tools():
        cfg.log(f"sandbox: skipped, {', '.join(missing_tools())} not installed (apt-get install bubblewrap socat)")
        return []
    with workdir(cfg, NAME) as root:
        return asyncio.run(_run(cfg, root))


async def _run(cfg: Config, root: Path) -> list[Figure]:
    make_repo(root / "repo", files=100, dirs=10)
    local = LocalRuntime(root / "local" / "worktrees", root / "local" / "logs")
    sandbox = SandboxRuntime(root / "sandbox" / "worktrees", root / "sandbox" / "logs")
    handles = {
        "local": await local.prepare(WorkspaceSpec(agent_id="bench-local", repo=root / "repo")),
        "sandbox": await sandbox.prepare(WorkspaceSpec(agent_id="bench-sandbox", repo=root / "repo")),
    }
    samples, warmup = cfg.pick(60, 8), cfg.pick(5, 1)
    starts: dict[str, list[float]] = {"local": [], "sandbox": []}
    for i in range(warmup + samples):
        order = ("local", "sandbox") if i % 2 == 0 else ("sandbox", "local")
        for which in order:
            runtime = local if which == "local" else sandbox
            ms = await _start_to_exit(runtime, handles[which])
            if i >= warmup:
                starts[which].append(ms)
        if i >= warmup and (i - warmup + 1) % 20 == 0:
            cfg.log(f"sandbox: {i - warmup + 1}/{samples} pairs")
    start = Figure(
        bench=NAME,
        name="no-op agent: start → exit recorded, sandbox",
        unit="ms",
        godel=starts["sandbox"],
        baseline=starts["local"],
        baseline_label="the same agent on the local runtime",
    )
    start.notes.append("exit file polled every 0.5 ms; no gateway relay (none configured)")

    ws = handles["sandbox"].workspace
    confinement = Confinement(cwd=ws, home=root / "home", etc=root / "etc", writable=[ws])
    write_etc(confinement.etc)
    argv = [*bwrap_argv(confinement), "/bin/true"]
    raw: dict[str, list[float]] = {"bwrap": [], "true": []}
    for i in range(warmup + samples):
        order = ("bwrap", "true") if i % 2 == 0 else ("true", "bwrap")
        for which in order:
            ms = _time_run(argv if which == "bwrap" else ["/bin/true"])
            if i >= warmup:
                raw[which].append(ms)
    bare = Figure(
        bench=NAME,
        name="bwrap (the runtime's arguments) /bin/true",
        unit="ms",
        godel=raw["bwrap"],
        baseline=raw["true"],
        baseline_label="/bin/true",
    )
    return [start, bare]


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
    subprocess.run(argv, check=True)
    return ms_since(t0)
