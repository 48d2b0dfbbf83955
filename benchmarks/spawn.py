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
import itertools
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import (
    Config,
    Figure,
    Parts,
    git_env,
    interleaved,
    make_repo,
    ms_between,
    ms_since,
    parse_time,
    workdir,
)
from benchmarks.rigs import in_process_api, post_and_wait
from godel.scheduler.plane import ControlPlane

NAME = "spawn"
COMMAND = "true"
PARTS = ("post", "queued", "worktree", "launch", "toCompleted")


def run(cfg: Config) -> list[Figure]:
    with workdir(cfg, NAME) as root:
        return asyncio.run(_run(cfg, root))


async def _run(cfg: Config, root: Path) -> list[Figure]:
    repo = root / "repo"
    t0 = time.perf_counter()
    base = make_repo(repo, files=1000, dirs=50)
    cfg.log(f"spawn: generated a 1,000-file repo in {ms_since(t0):.0f} ms")
    samples, warmup = cfg.pick(60, 6), cfg.pick(4, 1)
    parts = Parts(PARTS, warmup)
    worktrees = itertools.count()
    async with in_process_api(root / "home", max_concurrent_agents=64) as (plane, client):

        async def godel() -> float:
            total, breakdown = await spawn_once(plane, client, repo)
            parts.add(breakdown)
            return total

        async def baseline() -> float:
            i = next(worktrees)
            return _baseline_once(repo, base, root / "baseline" / f"w{i}", f"bench/w{i}")

        times = await interleaved(cfg, NAME, {"godel": godel, "baseline": baseline}, samples=samples, warmup=warmup)

    fig = Figure(
        bench=NAME,
        name="POST → executing (1,000-file repo, in-process API)",
        unit="ms",
        godel=times["godel"],
        baseline=times["baseline"],
        baseline_label="git worktree add -b + fork/exec (setsid)",
        target="≤ 1.3x baseline at p95",
    )
    fig.judge_ratio(1.3)
    fig.notes.append("in-process ControlPlane + httpx.ASGITransport; figure from the store's transition timestamps")
    labels = {
        "post": "↳ POST → 201 (validate, 1 git rev-parse, insert + admit)",
        "queued": "↳ spawnedAt → admitted (in the creating transaction)",
        "worktree": "↳ admitted → worktree ready (initializing→spawning)",
        "launch": "↳ worktree ready → executing (record, fork/exec, record)",
        "toCompleted": "↳ executing → completed (exit seen, diff, cleanup)",
    }
    return [fig, *parts.figures(NAME, labels)]


async def spawn_once(plane: ControlPlane, client: httpx.AsyncClient, repo: Path) -> tuple[float, dict[str, float]]:
    """One agent POSTed and run to its end; sent → ``executing`` and its ``PARTS``, from the store's timestamps."""
    body = {"task": "no-op", "repo": str(repo), "command": COMMAND, "label": "bench"}
    posted = await post_and_wait(plane, client, "agent", body)
    agent: dict[str, Any] = (await client.get(f"/api/v1/agents/{posted.id}")).json()["data"]
    if agent["state"] != "completed":
        raise RuntimeError(f"agent {posted.id} ended {agent['state']}: {agent.get('lastError')}")
    items = (await client.get(f"/api/v1/agents/{posted.id}/transitions")).json()["data"]["items"]
    at = {t["toState"]: parse_time(t["at"]) for t in items}
    spawned = parse_time(agent["spawnedAt"])
    breakdown = {
        "post": posted.post_ms,
        "queued": ms_between(spawned, at["initializing"]),
        "worktree": ms_between(at["initializing"], at["spawning"]),
        "launch": ms_between(at["spawning"], at["executing"]),
        "toCompleted": ms_between(at["executing"], at["completed"]),
    }
    return ms_between(posted.sent, at["executing"]), breakdown


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
