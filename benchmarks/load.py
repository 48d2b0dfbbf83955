"""load: the API under 1,000 concurrently running agents on one real ``godel serve``.

One server (``tests/e2e/serverproc.ServerProcess``, SQLite and worktrees on tmpfs) with
``GODEL_MAX_CONCURRENT_AGENTS`` above the agent count and the production default periods
(``GODEL_WATCH_INTERVAL=0.1``, ``GODEL_RECONCILE_INTERVAL=1.0``: ServerProcess's test values would make the
watch pass five times as frequent). Phases, in order:

1. idle: GET /api/v1/agents?limit=50 over HTTP, open loop (Poisson arrivals, one every 25 ms on average,
   each timed on its own); server RSS (psutil).
2. spawn: 1,000 ``sleep 600`` command agents, POSTed 16 at a time, on a small generated repo; time until all
   are ``executing`` = the newest ``startedAt`` (set as the agent enters executing) - the first POST's send
   time, read from the agents themselves (no polling granularity; the poll only decides when to look).
3. load: the same GET while all of them run (the watch pass visits every one of them each period); RSS.
4. killed: every agent killed (POST …/kill); the same GET again over the same 1,000 rows, nothing running.

The load figure is compared with phase 4, which lists the same rows (a page of 50 agents) with nothing
running, and with phase 1 (an empty list, cheaper to render) as a second baseline. Phases cannot interleave;
each is a few hundred requests. RSS per live agent = (RSS under load - idle RSS) / agents: the
agents themselves are separate processes and are reported apart.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.common import Config, Figure, make_repo, ms_between, ms_since, parse_time, utcnow, workdir
from benchmarks.rigs import real_server

NAME = "load"
TARGET_RATIO = 2.0
CONCURRENT_POSTS = 16
MEAN_GAP_MS = 25.0  # mean time between two GETs of the open-loop sampler


def run(cfg: Config) -> list[Figure]:
    with workdir(cfg, NAME) as root:
        return asyncio.run(_run(cfg, root))


async def _run(cfg: Config, root: Path) -> list[Figure]:
    n = cfg.pick(1000, 50)
    samples = cfg.pick(300, 40)
    repo = root / "repo"
    make_repo(repo, files=20, dirs=4)
    extra: dict[str, Any] = {"agents": n}
    async with real_server(root / "home", GODEL_MAX_CONCURRENT_AGENTS=str(n + 100)) as (proc, http):
        rng = random.Random(7)
        await list_page(http, 20, rng)  # warm-up
        idle = await list_page(http, samples, rng)
        rss_idle = proc.memory_info().rss
        cfg.log(f"load: idle list p50 {sorted(idle)[len(idle) // 2]:.2f} ms, RSS {rss_idle / 2**20:.0f} MiB")

        first_sent = utcnow()
        t0 = time.perf_counter()
        ids = await spawn_all(http, repo, n)
        extra["postAllSeconds"] = round(ms_since(t0) / 1000, 2)
        agents = await wait_all_executing(cfg, http, n)
        newest = max(parse_time(a["startedAt"]) for a in agents)
        extra["allExecutingSeconds"] = round(ms_between(first_sent, newest) / 1000, 2)
        per_agent = [ms_between(parse_time(a["spawnedAt"]), parse_time(a["startedAt"])) for a in agents]
        cfg.log(f"load: all {n} executing after {extra['allExecutingSeconds']} s")
        await asyncio.sleep(3)  # steady state: launches done, only the watch pass left
        loaded = await list_page(http, samples, rng)
        rss_load = proc.memory_info().rss
        extra["agentProcesses"], extra["agentProcessesPssMiB"] = _agent_processes(proc)
        still = await count(http, "running")
        if still != n:
            raise RuntimeError(f"only {still} of {n} agents were running during the measurement")
        cfg.log(f"load: loaded list p50 {sorted(loaded)[len(loaded) // 2]:.2f} ms")

        t0 = time.perf_counter()
        await kill_all(http, ids)
        extra["killAllSeconds"] = round(ms_since(t0) / 1000, 2)
        killed = await count(http, "killed")
        if killed != n:
            raise RuntimeError(f"{killed} of {n} agents were killed")
        after = await list_page(http, samples, rng)
        rss_after = proc.memory_info().rss

    extra.update(
        rssIdleMiB=round(rss_idle / 2**20, 1),
        rssLoadMiB=round(rss_load / 2**20, 1),
        rssAfterKillMiB=round(rss_after / 2**20, 1),
        rssPerLiveAgentKiB=round((rss_load - rss_idle) / n / 1024, 1),
    )
    label = f"GET /api/v1/agents?limit=50 with {n:,} agents executing (real server)"
    fig = Figure(
        bench=NAME,
        name=label,
        unit="ms",
        godel=loaded,
        baseline=after,
        baseline_label=f"same server, same {n:,} rows, none running",
        target=f"≤ {TARGET_RATIO:g}x idle at p95",
        extra=extra,
    )
    fig.judge_ratio(TARGET_RATIO)
    fig.notes.append(
        f"idle RSS {extra['rssIdleMiB']} MiB → {extra['rssLoadMiB']} MiB with {n} live agents "
        f"= {extra['rssPerLiveAgentKiB']} KiB per agent; agents' own processes: {extra['agentProcesses']} "
        f"using {extra['agentProcessesPssMiB']} MiB PSS in all"
    )
    vs_empty = Figure(
        bench=NAME,
        name="↳ same, against the idle server before spawning (empty list)",
        unit="ms",
        godel=loaded,
        baseline=idle,
        baseline_label="same server before spawning (0 rows)",
        target=f"≤ {TARGET_RATIO:g}x idle at p95",
    )
    vs_empty.judge_ratio(TARGET_RATIO)
    spawn = Figure(
        bench=NAME,
        name=f"↳ each agent: spawnedAt → executing, {n:,} spawned at once",
        unit="ms",
        godel=per_agent,
    )
    spawn.notes.append(
        f"all {n} executing {extra['allExecutingSeconds']} s after the first POST "
        f"(POSTs took {extra['postAllSeconds']} s, {CONCURRENT_POSTS} at a time)"
    )
    rss = Figure(
        bench=NAME,
        name="↳ server RSS per live agent",
        unit="KiB",
        godel=[extra["rssPerLiveAgentKiB"]],
    )
    return [fig, vs_empty, spawn, rss]


async def list_page(http: httpx.AsyncClient, samples: int, rng: random.Random) -> list[float]:
    """GET the first page ``samples`` times, open loop: requests start at random (Poisson) times whether or
    not the previous one has answered, as independent clients would. A closed loop (one request after the
    other) would mostly start right after a stall ends and under-report it (coordinated omission)."""
    out: list[float] = []

    async def one() -> None:
        t0 = time.perf_counter()
        r = await http.get("/api/v1/agents", params={"limit": 50})
        out.append(ms_since(t0))
        if r.status_code != 200:
            raise RuntimeError(f"list failed: {r.status_code} {r.text[:300]}")

    tasks = []
    for _ in range(samples):
        tasks.append(asyncio.create_task(one()))
        await asyncio.sleep(rng.expovariate(1000 / MEAN_GAP_MS))  # the arrival process itself
    await asyncio.gather(*tasks)
    return out


async def spawn_all(http: httpx.AsyncClient, repo: Path, n: int, extra: dict[str, Any] | None = None) -> list[str]:
    gate = asyncio.Semaphore(CONCURRENT_POSTS)

    async def one(i: int) -> str:
        async with gate:
            r = await http.post(
                "/api/v1/agents",
                json={"task": f"sleep {i}", "repo": str(repo), "command": "sleep 600", "label": "load"} | (extra or {}),
            )
        if r.status_code != 201:
            raise RuntimeError(f"spawn failed: {r.status_code} {r.text[:300]}")
        return str(r.json()["data"]["id"])

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def count(http: httpx.AsyncClient, status: str) -> int:
    health = (await http.get("/health/detailed")).json()
    counts = health.get("data", health).get("agents", {})
    return int(counts.get(status, 0))


async def wait_all_executing(cfg: Config, http: httpx.AsyncClient, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 900
    last_log = 0.0
    while True:
        running = await count(http, "running")
        if running >= n:
            break
        failed = await count(http, "failed")
        if failed:
            raise RuntimeError(f"{failed} agents failed while spawning")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {running} of {n} agents executing after 900 s")
        if time.monotonic() - last_log > 10:
            cfg.log(f"load: {running}/{n} executing")
            last_log = time.monotonic()
        await asyncio.sleep(0.5)  # only decides when to read the timestamps; the figure comes from them
    agents: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 500, "status": "running"}
        if cursor:
            params["cursor"] = cursor
        data = (await http.get("/api/v1/agents", params=params)).json()["data"]
        agents += data["items"]
        cursor = data["pagination"]["cursor"]
        if not data["pagination"]["hasMore"]:
            break
    not_executing = [a["id"] for a in agents if a["state"] != "executing"]
    if len(agents) != n or not_executing:
        raise RuntimeError(f"{len(agents)} running agents listed, {len(not_executing)} not executing")
    return agents


def _agent_processes(server: psutil.Process) -> tuple[int, float]:
    """How many processes the agents are, and their proportional set size (shared pages split, not
    counted once per process as RSS would)."""
    procs = server.children(recursive=True)
    pss = 0
    for p in procs:
        try:
            pss += p.memory_full_info().pss
        except psutil.Error:
            continue
    return len(procs), round(pss / 2**20, 1)


async def kill_all(http: httpx.AsyncClient, ids: list[str]) -> None:
    gate = asyncio.Semaphore(CONCURRENT_POSTS)

    async def one(agent_id: str) -> None:
        async with gate:
            r = await http.post(f"/api/v1/agents/{agent_id}/kill", json={"reason": "benchmark over"})
        if r.status_code != 200:
            raise RuntimeError(f"kill failed: {r.status_code} {r.text[:300]}")

    await asyncio.gather(*(one(i) for i in ids))
