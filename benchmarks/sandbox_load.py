"""sandbox-load: the API's list under 200 sandboxed agents running at once, and what one idle sandboxed agent costs in
memory, beside a local-runtime agent's cost.

One real ``godel serve`` (``tests/e2e/serverproc.ServerProcess``, SQLite and workspaces on tmpfs), ``runtime =
"sandbox"`` with ``local`` also offered, the production default periods (watch 0.1 s, reconcile 1 s). Phases, as in
``benchmarks/load.py``:

1. idle: GET /api/v1/agents?limit=50, open loop (Poisson arrivals, one every 25 ms on average), nothing spawned.
2. 200 ``sleep 600`` command agents in the sandbox, POSTed 16 at a time; once all are ``executing`` and 3 s have
   passed, the same GET (the load figure), then the memory of each agent's process tree (the wrapper shell, ``env``,
   bwrap and its init, the entry shell, the gateway relay ``socat``, the agent's ``sleep``): PSS and RSS summed
   from ``/proc/<pid>/smaps_rollup``, and the usage of the agent's memory cgroup (v1 ``memory.usage_in_bytes``,
   which also counts the page cache and kernel memory its processes caused).
3. every agent killed; the same GET over the same rows with nothing running (the baseline of the target).
4. 50 ``sleep 600`` agents on the local runtime (``config.sandbox.runtime = "local"``): the same memory figures
   (no cgroup unless limits are set there), then killed.

Before spawning, the machine's limits are checked against what 200 sandboxes need (processes, open files, memory).
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import Config, Figure, make_repo, ms_since, workdir
from benchmarks.load import count, kill_all, list_page, spawn_all, wait_all_executing
from benchmarks.rigs import real_server

NAME = "sandbox-load"
TARGET_RATIO = 2.0
PROCS_PER_AGENT = 8  # wrapper sh, env, bwrap, bwrap's init, entry sh, socat, sleep, and one spare


def run(cfg: Config) -> list[Figure]:
    with workdir(cfg, NAME) as root:
        return asyncio.run(_run(cfg, root))


def _check_capacity(n: int) -> dict[str, Any]:
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    free_mib = psutil.virtual_memory().available / 2**20
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    need = n * PROCS_PER_AGENT + len(psutil.pids())
    problems = [f"{what} {have} < {want}" for what, have, want in (
        ("RLIMIT_NPROC", nproc, need), ("pid_max", pid_max, need), ("available MiB", free_mib, n * 10),
    ) if have != resource.RLIM_INFINITY and have < want]  # fmt: skip
    if problems:
        raise RuntimeError(f"this machine cannot hold {n} sandboxed agents: {'; '.join(problems)}")
    return {"rlimitNproc": nproc, "rlimitNofile": nofile, "availableMiB": round(free_mib), "pidMax": pid_max}


async def _run(cfg: Config, root: Path) -> list[Figure]:
    n, m = cfg.pick(200, 20), cfg.pick(50, 10)
    samples = cfg.pick(300, 40)
    extra: dict[str, Any] = {"agents": n, "localAgents": m, "capacity": _check_capacity(n)}
    repo = root / "repo"
    make_repo(repo, files=20, dirs=4)
    env = {"GODEL_RUNTIME": "sandbox", "GODEL_RUNTIMES": '["local"]', "GODEL_MAX_CONCURRENT_AGENTS": str(n + m + 50)}
    async with real_server(root / "home", **env) as (proc, http):
        rng = random.Random(7)
        await list_page(http, 20, rng)  # warm-up
        idle = await list_page(http, samples, rng)
        rss_idle = proc.memory_info().rss

        t0 = time.perf_counter()
        ids = await spawn_all(http, repo, n)
        agents = await wait_all_executing(cfg, http, n)
        extra["allExecutingSeconds"] = round(ms_since(t0) / 1000, 2)
        runtimes = {a["isolation"]["runtime"] for a in agents}
        if runtimes != {"sandbox"}:
            raise RuntimeError(f"agents ran in {runtimes}, not the sandbox")
        cfg.log(f"{NAME}: all {n} sandboxed agents executing after {extra['allExecutingSeconds']} s")
        await asyncio.sleep(3)  # steady state: launches done, only the watch pass left
        loaded = await list_page(http, samples, rng)
        rss_load = proc.memory_info().rss
        sandboxed = _per_agent(proc)
        if len(sandboxed) != n or await count(http, "running") != n:
            raise RuntimeError(f"{len(sandboxed)} agent process trees found for {n} running agents")

        await kill_all(http, ids)
        if await count(http, "killed") != n:
            raise RuntimeError(f"not all {n} agents were killed")
        after = await list_page(http, samples, rng)
        left = proc.children(recursive=True)
        extra["processesLeftAfterKill"] = len(left)

        local_ids = await spawn_all(http, repo, m, {"config": {"sandbox": {"runtime": "local"}}})
        local_agents = await wait_all_executing(cfg, http, m)
        if {a["isolation"]["runtime"] for a in local_agents} != {"local"}:
            raise RuntimeError("the local agents did not run on the local runtime")
        await asyncio.sleep(1)
        local = _per_agent(proc)
        await kill_all(http, local_ids)

    extra.update(rssIdleMiB=round(rss_idle / 2**20, 1), rssLoadMiB=round(rss_load / 2**20, 1),
                 serverRssPerAgentKiB=round((rss_load - rss_idle) / n / 1024, 1))  # fmt: skip
    fig = Figure(
        bench=NAME,
        name=f"GET /api/v1/agents?limit=50 with {n} sandboxed agents executing (real server)",
        unit="ms",
        godel=loaded,
        baseline=after,
        baseline_label=f"same server, same {n} rows, none running",
        target=f"≤ {TARGET_RATIO:g}x idle at p95",
        extra=extra,
    )
    fig.met = (fig.ratio("p95") or 99.0) <= TARGET_RATIO
    vs_empty = Figure(bench=NAME, name="↳ same, against the server before spawning (empty list)", unit="ms",
                      godel=loaded, baseline=idle, baseline_label="same server before spawning (0 rows)")  # fmt: skip
    figures = [fig, vs_empty]
    for key, label in (("pss", "PSS"), ("rss", "RSS summed"), ("cgroup", "memory cgroup usage")):
        local_values = [a[key] for a in local if a[key] is not None]
        figures.append(
            Figure(
                bench=NAME,
                name=f"memory per idle agent ({label}): sandbox, {n} agents",
                unit="KiB",
                godel=[a[key] for a in sandboxed if a[key] is not None],
                baseline=local_values or None,
                baseline_label=f"a local-runtime agent ({m} agents)" if local_values else "",
                extra={
                    "processesPerAgent": sorted({a["processes"] for a in sandboxed}),
                    "localProcessesPerAgent": sorted({a["processes"] for a in local}),
                },
            )
        )
    figures.append(Figure(bench=NAME, name="↳ server RSS per live sandboxed agent", unit="KiB",
                          godel=[extra["serverRssPerAgentKiB"]]))  # fmt: skip
    return figures


def _per_agent(server: psutil.Process) -> list[dict[str, Any]]:
    """Per agent (a direct child of the server leading its own session: the wrapper), its process tree's PSS and RSS
    (KiB) and its memory cgroup's usage (KiB; None without one)."""
    found = []
    for wrapper in server.children():
        try:
            if os.getsid(wrapper.pid) != wrapper.pid:
                continue  # not an agent's wrapper (git, a relay of the server's own)
            tree = [wrapper, *wrapper.children(recursive=True)]
            pss = rss = 0
            for p in tree:
                rollup = _rollup(p.pid)
                pss, rss = pss + rollup.get("Pss", 0), rss + rollup.get("Rss", 0)
            found.append({"pss": pss, "rss": rss, "cgroup": _cgroup_kib(wrapper.pid), "processes": len(tree)})
        except (psutil.Error, OSError):
            continue
    return found


def _rollup(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0])
    return out


def _cgroup_kib(pid: int) -> float | None:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            usage = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.usage_in_bytes"
            if "godel" in path and usage.is_file():
                return int(usage.read_text()) / 1024
    return None
