"""spawn: POST /api/v1/agents → the agent is ``executing``, for a no-op command agent on a 1,000-file repo.

Godel runs in-process: a started ``ControlPlane`` (admission and watch loops running, SQLite on tmpfs) behind
``create_app`` and an ``httpx.ASGITransport`` client, so the figure has no TCP or uvicorn in it. The figure is
taken from the store's own timestamps, so no polling granularity enters it: the time from just before the
POST is sent (wall clock) to the ``at`` of the transition into ``executing`` (read afterwards from GET
/api/v1/agents/{id}/transitions). That transition is committed right after the agent's process was forked.
The wait for the agent to finish before the next sample listens on the bus (no polling either).

The admission path: with a slot free and nothing queued, ``ControlPlane.spawn`` admits the agent in the
transaction that creates it and starts its launch at once (``Supervisor.create``); the admission loop, woken
otherwise, is only the fallback (``reconcile_interval``, 0.05 s here). So "spawnedAt → admitted" is the part of
that one transaction before the admission, not a round trip.

Baseline, interleaved sample by sample (alternating which goes first): ``git worktree add --quiet -b
<branch> <dir> <base>`` run with ``subprocess.run``, then fork/exec of the same command (``/bin/sh -c
true``) in its own session, timed until ``Popen`` returns (Godel records ``executing`` once its ``Popen``
returned too).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from tests.conftest import admin_headers  # a real signed access token, as a user's

from benchmarks.common import (
    Config,
    Figure,
    git_env,
    make_repo,
    ms_between,
    ms_since,
    parse_time,
    utcnow,
    workdir,
)
from godel.api.app import create_app
from godel.core.events import EventFilter
from godel.scheduler.plane import ControlPlane
from godel.settings import Settings

NAME = "spawn"
COMMAND = "true"
_ENDED = ("agent:complete", "agent:error", "agent:kill")


def run(cfg: Config) -> list[Figure]:
    with workdir(cfg, NAME) as root:
        return asyncio.run(_run(cfg, root))


async def _run(cfg: Config, root: Path) -> list[Figure]:
    repo = root / "repo"
    t0 = time.perf_counter()
    base = make_repo(repo, files=1000, dirs=50)
    cfg.log(f"spawn: generated a 1,000-file repo in {ms_since(t0):.0f} ms")
    settings = Settings(
        home=root / "home",
        watch_interval=0.02,
        reconcile_interval=0.05,
        max_concurrent_agents=64,
        kill_grace=1.0,
        log_level="warning",
    )
    plane = ControlPlane(settings)
    await plane.start()
    samples, warmup = cfg.pick(60, 6), cfg.pick(4, 1)
    godel: list[float] = []
    baseline: list[float] = []
    parts: dict[str, list[float]] = {k: [] for k in ("post", "queued", "worktree", "launch", "toCompleted")}
    try:
        app = create_app(plane=plane)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", headers=await admin_headers(plane), timeout=60
        ) as client:
            for i in range(warmup + samples):
                keep = i >= warmup
                order = (True, False) if i % 2 == 0 else (False, True)
                for godel_turn in order:
                    if godel_turn:
                        total, breakdown = await spawn_once(plane, client, repo)
                        if keep:
                            godel.append(total)
                            for k, v in breakdown.items():
                                parts[k].append(v)
                    else:
                        ms = _baseline_once(repo, base, root / "baseline" / f"w{i}", f"bench/w{i}")
                        if keep:
                            baseline.append(ms)
                if keep and (i - warmup + 1) % 10 == 0:
                    cfg.log(f"spawn: {i - warmup + 1}/{samples} pairs")
    finally:
        await plane.stop()

    fig = Figure(
        bench=NAME,
        name="POST → executing (1,000-file repo, in-process API)",
        unit="ms",
        godel=godel,
        baseline=baseline,
        baseline_label="git worktree add -b + fork/exec (setsid)",
        target="≤ 1.3x baseline at p95",
    )
    ratio = fig.ratio("p95")
    fig.met = ratio is not None and ratio <= 1.3
    fig.notes.append("in-process ControlPlane + httpx.ASGITransport; figure from the store's transition timestamps")
    figures = [fig]
    labels = {
        "post": "↳ POST → 201 (validate, 1 git rev-parse, insert + admit)",
        "queued": "↳ spawnedAt → admitted (in the creating transaction)",
        "worktree": "↳ admitted → worktree ready (initializing→spawning)",
        "launch": "↳ worktree ready → executing (record, fork/exec, record)",
        "toCompleted": "↳ executing → completed (exit seen, diff, cleanup)",
    }
    for key, label in labels.items():
        figures.append(Figure(bench=NAME, name=label, unit="ms", godel=parts[key]))
    return figures


async def spawn_once(plane: ControlPlane, client: httpx.AsyncClient, repo: Path) -> tuple[float, dict[str, float]]:
    # Subscribed before the POST so the end of the run cannot be missed; the wait costs no polling.
    ended = plane.bus.subscribe(EventFilter(patterns=_ENDED))
    try:
        sent = utcnow()
        t0 = time.perf_counter()
        r = await client.post(
            "/api/v1/agents", json={"task": "no-op", "repo": str(repo), "command": COMMAND, "label": "bench"}
        )
        post_ms = ms_since(t0)
        if r.status_code != 201:
            raise RuntimeError(f"spawn failed: {r.status_code} {r.text}")
        agent_id = r.json()["data"]["id"]
        while True:
            event = await ended.get(timeout=60)
            if event is None:
                raise RuntimeError(f"agent {agent_id} did not finish within 60 s")
            if event.metadata.agent_id == agent_id:
                break
    finally:
        ended.close()
    agent: dict[str, Any] = (await client.get(f"/api/v1/agents/{agent_id}")).json()["data"]
    if agent["state"] != "completed":
        raise RuntimeError(f"agent {agent_id} ended {agent['state']}: {agent.get('lastError')}")
    items = (await client.get(f"/api/v1/agents/{agent_id}/transitions")).json()["data"]["items"]
    at = {t["toState"]: parse_time(t["at"]) for t in items}
    spawned = parse_time(agent["spawnedAt"])
    breakdown = {
        "post": post_ms,
        "queued": ms_between(spawned, at["initializing"]),
        "worktree": ms_between(at["initializing"], at["spawning"]),
        "launch": ms_between(at["spawning"], at["executing"]),
        "toCompleted": ms_between(at["executing"], at["completed"]),
    }
    return ms_between(sent, at["executing"]), breakdown


def _baseline_once(repo: Path, base: str, path: Path, branch: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        ["git", "worktree", "add", "--quiet", "-b", branch, str(path), base],
        cwd=repo,
        check=True,
        capture_output=True,
        env=git_env(),
    )
    proc = subprocess.Popen(
        ["/bin/sh", "-c", COMMAND],
        cwd=path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ms = ms_since(t0)
    proc.wait()
    return ms
