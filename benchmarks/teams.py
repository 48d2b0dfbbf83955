"""teams: time to admit a 100-agent parallel team, beside 100 bare ``git worktree add`` + fork/exec.

Godel runs in-process: a started ``ControlPlane`` (admission and watch loops running, SQLite on tmpfs,
``max_concurrent_agents`` 128 so the whole team fits) behind ``create_app`` with its ``TeamOrchestrator``, and an
``httpx.ASGITransport`` client. One sample: ``POST /api/v1/teams`` for a ``parallel`` team of 100 ``command``
agents running ``true`` (``start: true``), then the wait for ``team:completed`` on the bus (no polling). The
figures come from the store's own timestamps, read afterwards: from just before the POST (wall clock) to the
last of the 100 agents' transition into ``executing`` (*admitted and launched*: created, admitted, worktree
made, process forked), and to the team's ``completedAt`` (every agent's exit seen and judged, the team's
outcome decided). The breakdown says where the time goes: the POST itself, the last agent's ``spawnedAt``
(all 100 created by the orchestrator), the last ``initializing`` (all admitted).

Baseline, in the same run, alternating which goes first: for 100 agents, ``git worktree add --quiet -b
<branch> <dir> <base>`` with ``subprocess.run`` and fork/exec of ``/bin/sh -c true`` in its own session (timed
to the last ``Popen`` returning), one after the other, as a script would. Every sample (both sides) works on a
fresh ``git clone --local`` of the same 200-file repository, so neither pays for the other's worktrees.

A third figure, in the same rounds, is the same 100 agents without a team (100 concurrent ``POST
/api/v1/agents``, sent → the last ``executing``): what the scheduler itself takes for such a burst, so the
team's own cost is the difference.
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
    git,
    git_env,
    interleaved,
    make_repo,
    ms_between,
    ms_since,
    parse_time,
    utcnow,
    workdir,
)
from benchmarks.rigs import Ends, in_process_api, post_and_wait
from godel.scheduler.plane import ControlPlane
from godel.teams.runner import team_agents

NAME = "teams"
SIZE = 100
COMMAND = "true"


def run(cfg: Config) -> list[Figure]:
    with workdir(cfg, NAME) as root:
        return asyncio.run(_run(cfg, root))


def _clone(origin: Path, path: Path) -> Path:
    subprocess.run(["git", "clone", "-q", "--local", str(origin), str(path)], check=True, env=git_env())
    return path


async def _run(cfg: Config, root: Path) -> list[Figure]:
    origin = root / "origin"
    t0 = time.perf_counter()
    make_repo(origin, files=200, dirs=20)
    cfg.log(f"teams: generated a 200-file repo in {ms_since(t0):.0f} ms")
    samples, warmup = cfg.pick(8, 1), cfg.pick(1, 0)
    parts = Parts(("post", "created", "initializing", "completed"), warmup)
    # Each series its own count of rounds, to name its clones.
    rounds = {series: itertools.count() for series in ("team", "burst", "baseline")}
    api = in_process_api(root / "home", max_concurrent_agents=128, timeout=120, use_gateway=False)
    async with api as (plane, client):

        async def team() -> float:
            figures = await _godel_once(plane, client, _clone(origin, root / f"g{next(rounds['team'])}"))
            parts.add(figures)
            return figures["executing"]

        async def burst() -> float:
            return await _burst_once(plane, client, _clone(origin, root / f"a{next(rounds['burst'])}"))

        async def baseline() -> float:
            i = next(rounds["baseline"])
            return await asyncio.to_thread(_baseline_once, _clone(origin, root / f"b{i}"), root / f"bw{i}")

        series = {"team": team, "burst": burst, "baseline": baseline}
        times = await interleaved(cfg, NAME, series, samples=samples, warmup=warmup, every=1)

    fig = Figure(
        bench=NAME,
        name=f"POST /teams → all {SIZE} agents executing (parallel, command `true`)",
        unit="ms",
        godel=times["team"],
        baseline=times["baseline"],
        baseline_label=f"{SIZE} x (git worktree add -b + fork/exec), one after the other",
    )
    fig.notes.append("in-process ControlPlane + TeamOrchestrator + httpx.ASGITransport; figures from store timestamps")
    labels = {
        "post": "↳ POST /teams → 201 (validate, create, start)",
        "created": f"↳ → all {SIZE} agents created (the orchestrator's spawns)",
        "initializing": f"↳ → all {SIZE} admitted (initializing)",
    }
    out = [fig, *parts.figures(NAME, labels)]
    completed = parts.samples["completed"]
    out.append(Figure(bench=NAME, name=f"POST /teams → team completed ({SIZE} agents)", unit="ms", godel=completed))
    out.append(
        Figure(
            bench=NAME,
            name=f"no team: {SIZE} concurrent POST /agents → all executing",
            unit="ms",
            godel=times["burst"],
            baseline=times["baseline"],
            baseline_label=fig.baseline_label,
            notes=["the scheduler's own cost of a burst of 100 spawns, for comparison with the team figure"],
        )
    )
    return out


async def _godel_once(plane: ControlPlane, client: httpx.AsyncClient, repo: Path) -> dict[str, float]:
    body = {"strategy": "parallel", "repo": str(repo), "task": "no-op", "size": SIZE, "maxAgents": SIZE,
            "agent": "command", "command": COMMAND, "start": True}  # fmt: skip
    posted = await post_and_wait(plane, client, "team", body, timeout=120)
    team: dict[str, Any] = (await client.get(f"/api/v1/teams/{posted.id}")).json()["data"]
    if team["status"] != "completed":
        raise RuntimeError(f"team {posted.id} ended {team['status']}: {team.get('error')}")
    agents = await team_agents(plane, posted.id)
    if len(agents) != SIZE:
        raise RuntimeError(f"team {posted.id} has {len(agents)} agents, not {SIZE}")
    last: dict[str, Any] = {"initializing": None, "executing": None}
    created = max(a.spawned_at for a in agents if a.spawned_at)
    for agent in agents:
        for record in await plane.store.transitions(agent.id):
            state = record.to_state.value
            if state in last and (last[state] is None or record.at > last[state]):
                last[state] = record.at
    return {
        "post": posted.post_ms,
        "created": ms_between(posted.sent, created),
        "initializing": ms_between(posted.sent, last["initializing"]),
        "executing": ms_between(posted.sent, last["executing"]),
        "completed": ms_between(posted.sent, parse_time(team["completedAt"])),
    }


async def _burst_once(plane: ControlPlane, client: httpx.AsyncClient, repo: Path) -> float:
    """The same 100 agents without a team: 100 concurrent POST /agents; sent → the last ``executing``."""
    with Ends(plane, "agent") as ended:
        sent = utcnow()
        body = {"task": "no-op", "repo": str(repo), "command": COMMAND}
        answers = await asyncio.gather(*(client.post("/api/v1/agents", json=body) for _ in range(SIZE)))
        ids = {r.json()["data"]["id"] for r in answers if r.status_code == 201}
        if len(ids) != SIZE:
            raise RuntimeError(f"only {len(ids)} of {SIZE} spawns were accepted")
        await ended.wait(ids, timeout=120)
    last = None
    for agent_id in ids:
        for record in await plane.store.transitions(agent_id):
            if record.to_state.value == "executing" and (last is None or record.at > last):
                last = record.at
    assert last is not None
    return ms_between(sent, last)


def _baseline_once(repo: Path, root: Path) -> float:
    base = git(repo, "rev-parse", "HEAD")
    procs = []
    t0 = time.perf_counter()
    for k in range(SIZE):
        subprocess.run(
            ["git", "worktree", "add", "--quiet", "-b", f"bench/{k}", str(root / f"w{k}"), base],
            cwd=repo, check=True, capture_output=True, env=git_env(),
        )  # fmt: skip
        procs.append(
            subprocess.Popen(
                ["/bin/sh", "-c", COMMAND],
                cwd=root / f"w{k}",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
    ms = ms_since(t0)
    for proc in procs:
        proc.wait()
    return ms
