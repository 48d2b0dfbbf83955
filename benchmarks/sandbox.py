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

from benchmarks.common import Config, Figure, interleaved, make_repo, start_to_exit, time_run, versus, workdir
from godel.core.ports import LaunchSpec, WorkspaceSpec
from godel.runtimes.local import LocalRuntime
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
    # Ids of this run: an agent's cgroups are named by its id, machine-wide.
    handles = {
        "local": await local.prepare(WorkspaceSpec(agent_id=f"bench-{cfg.run_id}-local", repo=root / "repo")),
        "sandbox": await sandbox.prepare(WorkspaceSpec(agent_id=f"bench-{cfg.run_id}-sandbox", repo=root / "repo")),
    }
    samples, warmup = cfg.pick(60, 8), cfg.pick(5, 1)
    starts = await interleaved(
        cfg, NAME,
        {
            "local": lambda: start_to_exit(local, handles["local"], NOOP),
            "sandbox": lambda: start_to_exit(sandbox, handles["sandbox"], NOOP),
        },
        samples=samples, warmup=warmup, every=20,
    )  # fmt: skip
    figures = versus(
        NAME, starts,
        [("no-op agent: start → exit recorded, sandbox", "sandbox", "local", "the same agent on the local runtime")],
        note="exit file polled every 0.5 ms; no gateway relay (none configured)",
    )  # fmt: skip

    ws = handles["sandbox"].workspace
    confinement = Confinement(cwd=ws, home=root / "home", etc=root / "etc", writable=[ws])
    write_etc(confinement.etc)
    argv = [*bwrap_argv(confinement), "/bin/true"]

    async def bwrap() -> float:
        return time_run(argv)

    async def true() -> float:
        return time_run(["/bin/true"])

    raw = await interleaved(cfg, NAME, {"bwrap": bwrap, "true": true}, samples=samples, warmup=warmup, every=samples)
    figures += versus(NAME, raw, [("bwrap (the runtime's arguments) /bin/true", "bwrap", "true", "/bin/true")])
    await local.cleanup(handles["local"])
    await sandbox.cleanup(handles["sandbox"])  # its cgroups too
    return figures
