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
from pathlib import Path

from benchmarks.common import Config, Figure, interleaved, noop_agents, time_run, versus, workdir
from godel.runtimes.gvisor import GVisorRuntime, runsc_problem
from godel.runtimes.local import LocalRuntime
from godel.runtimes.sandbox import SandboxRuntime, missing_tools

NAME = "gvisor"
ORDER = ("gvisor", "runsc do", "sandbox", "local")


def run(cfg: Config) -> list[Figure]:
    problem = runsc_problem()
    if problem is not None or missing_tools():
        cfg.log(f"gvisor: skipped ({problem or 'bubblewrap missing'}; apt-get install runsc bubblewrap socat)")
        return []
    with workdir(cfg, NAME) as root:
        return asyncio.run(_run(cfg, root))


async def _run(cfg: Config, root: Path) -> list[Figure]:
    kinds = {"local": LocalRuntime, "sandbox": SandboxRuntime, "gvisor": GVisorRuntime}
    do = ["runsc", "--root", str(root / "runsc-do"), "--network=none", "--platform=ptrace", "do", "true"]

    async def runsc_do() -> float:
        return await asyncio.to_thread(time_run, do, cwd="/")  # runsc do needs a cwd it can see

    async with noop_agents(cfg, root, kinds) as agents:
        series = {name: (runsc_do if name == "runsc do" else agents.series(name)) for name in ORDER}
        times = await interleaved(cfg, NAME, series, samples=cfg.pick(40, 4), warmup=cfg.pick(3, 1))
    note = "exit file polled every 0.5 ms; no gateway relay (none configured); the four alternate, order rotated"
    return versus(
        NAME, times,
        [
            ("no-op agent: start → exit recorded, gvisor", "gvisor", "runsc do",
             "runsc --network=none --platform=ptrace do true"),
            ("↳ the same, gvisor against the bubblewrap sandbox", "gvisor", "sandbox",
             "the same agent in the sandbox runtime (bubblewrap)"),
            ("↳ the same, the bubblewrap sandbox against the local runtime", "sandbox", "local",
             "the same agent on the local runtime"),
        ],
        note=note,
    )  # fmt: skip
