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
from pathlib import Path

from benchmarks.common import Config, Figure, interleaved, noop_agents, sandbox_missing, time_run, versus, workdir
from godel.runtimes.local import LocalRuntime
from godel.runtimes.sandbox import SandboxRuntime
from godel.runtimes.sandbox.bwrap import Confinement, bwrap_argv, write_etc

NAME = "sandbox"


def run(cfg: Config) -> list[Figure]:
    if sandbox_missing(cfg, NAME):
        return []
    with workdir(cfg, NAME) as root:
        return asyncio.run(_run(cfg, root))


async def _run(cfg: Config, root: Path) -> list[Figure]:
    samples, warmup = cfg.pick(60, 8), cfg.pick(5, 1)
    async with noop_agents(cfg, root, {"local": LocalRuntime, "sandbox": SandboxRuntime}) as agents:
        starts = await interleaved(
            cfg, NAME, {"local": agents.series("local"), "sandbox": agents.series("sandbox")},
            samples=samples, warmup=warmup, every=20,
        )  # fmt: skip
        figures = versus(
            NAME, starts,
            [("no-op agent: start → exit recorded, sandbox", "sandbox", "local",
              "the same agent on the local runtime")],
            note="exit file polled every 0.5 ms; no gateway relay (none configured)",
        )  # fmt: skip

        ws = agents.handles["sandbox"].workspace
        confinement = Confinement(cwd=ws, home=root / "home", etc=root / "etc", writable=[ws])
        write_etc(confinement.etc)
        argv = [*bwrap_argv(confinement), "/bin/true"]

        async def bwrap() -> float:
            return time_run(argv)

        async def true() -> float:
            return time_run(["/bin/true"])

        raw = await interleaved(
            cfg, NAME, {"bwrap": bwrap, "true": true}, samples=samples, warmup=warmup, every=samples
        )
    return figures + versus(NAME, raw, [("bwrap (the runtime's arguments) /bin/true", "bwrap", "true", "/bin/true")])
