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
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from tests.conftest import admin_headers  # a real signed access token, as a user's

from benchmarks.common import Config, Figure, git, git_env, make_repo, ms_between, ms_since, parse_time, utcnow, workdir
from godel.api.app import create_app
from godel.core.events import EventFilter
from godel.scheduler.plane import ControlPlane
from godel.settings import Settings
from godel.teams.runner import team_agents

NAME = "teams"
SIZE = 100
COMMAND = "true"
_ENDED = ("team:completed", "team:failed")


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
    settings = Settings(
        home=root / "home", watch_interval=0.02, reconcile_interval=0.05, max_concurrent_agents=128, kill_grace=1.0,
        log_level="warning", use_gateway=False,
    )  # fmt: skip
    plane = ControlPlane(settings)
    await plane.start()
    app = create_app(plane=plane)
    samples, warmup = cfg.pick(8, 1), cfg.pick(1, 0)
    admitted: list[float] = []
    completed: list[float] = []
    baseline: list[float] = []
    burst: list[float] = []
    parts: dict[str, list[float]] = {k: [] for k in ("post", "created", "initializing")}
    try:
        headers = await admin_headers(plane)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost",
                                     headers=headers, timeout=120) as client:  # fmt: skip
            for i in range(warmup + samples):
                keep = i >= warmup
                turns = ("team", "burst", "baseline")
                for turn in turns[i % 3 :] + turns[: i % 3]:  # each goes first in turn
                    if turn == "burst":
                        ms = await _burst_once(plane, client, _clone(origin, root / f"a{i}"))
                        if keep:
                            burst.append(ms)
                    elif turn == "team":
                        repo = _clone(origin, root / f"g{i}")
                        figures = await _godel_once(plane, client, repo)
                        if keep:
                            admitted.append(figures["executing"])
                            completed.append(figures["completed"])
                            for k in parts:
                                parts[k].append(figures[k])
                    else:
                        repo = _clone(origin, root / f"b{i}")
                        ms = await asyncio.to_thread(_baseline_once, repo, root / f"bw{i}")
                        if keep:
                            baseline.append(ms)
                if keep:
                    cfg.log(f"teams: {i - warmup + 1}/{samples} rounds")
    finally:
        await app.state.teams.stop()
        await plane.stop()

    fig = Figure(
        bench=NAME,
        name=f"POST /teams → all {SIZE} agents executing (parallel, command `true`)",
        unit="ms",
        godel=admitted,
        baseline=baseline,
        baseline_label=f"{SIZE} x (git worktree add -b + fork/exec), one after the other",
    )
    fig.notes.append("in-process ControlPlane + TeamOrchestrator + httpx.ASGITransport; figures from store timestamps")
    labels = {
        "post": "↳ POST /teams → 201 (validate, create, start)",
        "created": f"↳ → all {SIZE} agents created (the orchestrator's spawns)",
        "initializing": f"↳ → all {SIZE} admitted (initializing)",
    }
    out = [fig]
    out += [Figure(bench=NAME, name=label, unit="ms", godel=parts[key]) for key, label in labels.items()]
    out.append(Figure(bench=NAME, name=f"POST /teams → team completed ({SIZE} agents)", unit="ms", godel=completed))
    out.append(
        Figure(
            bench=NAME,
            name=f"no team: {SIZE} concurrent POST /agents → all executing",
            unit="ms",
            godel=burst,
            baseline=baseline,
            baseline_label=fig.baseline_label,
            notes=["the scheduler's own cost of a burst of 100 spawns, for comparison with the team figure"],
        )
    )
    return out


async def _godel_once(plane: ControlPlane, client: httpx.AsyncClient, repo: Path) -> dict[str, float]:
    ended = plane.bus.subscribe(EventFilter(patterns=_ENDED))
    try:
        sent = utcnow()
        t0 = time.perf_counter()
        body = {"strategy": "parallel", "repo": str(repo), "task": "no-op", "size": SIZE, "maxAgents": SIZE,
                "agent": "command", "command": COMMAND, "start": True}  # fmt: skip
        r = await client.post("/api/v1/teams", json=body)
        post_ms = ms_since(t0)
        if r.status_code != 201:
            raise RuntimeError(f"team create failed: {r.status_code} {r.text}")
        team_id = r.json()["data"]["id"]
        while True:
            event = await ended.get(timeout=120)
            if event is None:
                raise RuntimeError(f"team {team_id} did not finish within 120 s")
            if event.metadata.team_id == team_id:
                break
    finally:
        ended.close()
    team: dict[str, Any] = (await client.get(f"/api/v1/teams/{team_id}")).json()["data"]
    if team["status"] != "completed":
        raise RuntimeError(f"team {team_id} ended {team['status']}: {team.get('error')}")
    agents = await team_agents(plane, team_id)
    if len(agents) != SIZE:
        raise RuntimeError(f"team {team_id} has {len(agents)} agents, not {SIZE}")
    last: dict[str, Any] = {"initializing": None, "executing": None}
    created = max(a.spawned_at for a in agents if a.spawned_at)
    for agent in agents:
        for record in await plane.store.transitions(agent.id):
            state = record.to_state.value
            if state in last and (last[state] is None or record.at > last[state]):
                last[state] = record.at
    return {
        "post": post_ms,
        "created": ms_between(sent, created),
        "initializing": ms_between(sent, last["initializing"]),
        "executing": ms_between(sent, last["executing"]),
        "completed": ms_between(sent, parse_time(team["completedAt"])),
    }


async def _burst_once(plane: ControlPlane, client: httpx.AsyncClient, repo: Path) -> float:
    """The same 100 agents without a team: 100 concurrent POST /agents; sent → the last ``executing``."""
    ended = plane.bus.subscribe(EventFilter(patterns=("agent:complete", "agent:error", "agent:kill")))
    try:
        sent = utcnow()
        body = {"task": "no-op", "repo": str(repo), "command": COMMAND}
        answers = await asyncio.gather(*(client.post("/api/v1/agents", json=body) for _ in range(SIZE)))
        ids = {r.json()["data"]["id"] for r in answers if r.status_code == 201}
        if len(ids) != SIZE:
            raise RuntimeError(f"only {len(ids)} of {SIZE} spawns were accepted")
        left = set(ids)
        while left:
            event = await ended.get(timeout=120)
            if event is None:
                raise RuntimeError(f"{len(left)} agents did not finish within 120 s")
            left.discard(event.metadata.agent_id or "")
    finally:
        ended.close()
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
