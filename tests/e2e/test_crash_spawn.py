"""A spawn that a crash cannot corrupt: ``kill -9`` of a real ``godel serve`` in the middle of a burst of spawns,
at a different moment each round, then a restart. Every agent the store knows must end ``completed`` (its process
ran to exit 0), with each of its output lines ingested exactly once: adopted when its launch had started, queued
again when it had not, never judged "failed" for the server's death. On SQLite and on PostgreSQL.

The kill lands while agents are in every state of a launch: admitted, preparing their worktree, launched with the
start not yet recorded, running, exiting while no server watches. The delay before each kill is drawn from a seeded
generator so a failing round can be replayed (``GODEL_CRASH_SEED``); ``GODEL_CRASH_ROUNDS`` changes the rounds.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.e2e.serverproc import ServerProcess

BURST = 30
LINES = 60
ROUNDS = int(os.environ.get("GODEL_CRASH_ROUNDS", "5"))
SEED = int(os.environ.get("GODEL_CRASH_SEED", "11"))
# 60 numbered lines in three bursts with short pauses: a run lasts a few tenths of a second, so a kill finds some
# agents writing, some done while no server watched, and some not yet launched.
COMMAND = f'i=0; while [ $i -lt {LINES} ]; do i=$((i+1)); echo "line-$i"; [ $((i % 20)) = 0 ] && sleep 0.1; done'
ENDED = ("completed", "failed", "killed")


def _burst(srv: ServerProcess, repo: Path, markers: Path, round_: int, acknowledged: list[str],
           errors: list[BaseException], stop: threading.Event, first: threading.Event) -> None:  # fmt: skip
    """Spawn BURST agents one after another until the server dies under us. Every other agent fails its first
    attempt and succeeds on its retry, so kills also land between a failure and the retry that follows it."""
    try:
        with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=10) as http:
            for n in range(BURST):
                if stop.is_set():
                    return
                body: dict[str, Any] = {"task": f"burst {round_}.{n}", "repo": str(repo), "command": COMMAND}
                if n % 2:
                    marker = markers / f"{round_}-{n}"
                    body |= {"command": f"if [ -e {marker} ]; then {COMMAND}; else touch {marker}; exit 3; fi",
                             "maxRetries": 1}  # fmt: skip
                try:
                    r = http.post("/api/v1/agents", json=body)
                except httpx.HTTPError:
                    return  # the server was killed mid-request: that spawn may or may not exist, the store says
                assert r.status_code == 201, r.text
                acknowledged.append(r.json()["data"]["id"])
                first.set()
    except BaseException as exc:  # the test's thread: raised again in the test itself
        errors.append(exc)


def _all_agents(srv: ServerProcess) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = srv.api("GET", "/api/v1/agents", params={"limit": 200, **({"cursor": cursor} if cursor else {})})
        found += page["items"]
        cursor = page["pagination"]["cursor"]
        if not page["pagination"]["hasMore"]:
            return found


def _wait_all_ended(srv: ServerProcess, timeout: float = 90.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        agents = _all_agents(srv)
        if all(a["state"] in ENDED for a in agents):
            return agents
        busy = {a["id"][:8]: a["state"] for a in agents if a["state"] not in ENDED}
        assert time.monotonic() < deadline, f"agents still running: {busy}"
        time.sleep(0.1)  # polling the server, as a user would


def _lines(srv: ServerProcess, agent_id: str) -> list[str]:
    items = srv.api("GET", f"/api/v1/agents/{agent_id}/logs", params={"tail": 10 * LINES})["items"]
    return [x["line"] for x in items]


def test_kill_9_during_bursts_of_spawns_loses_and_mislabels_nothing(
    fast_tmp: Path, git_repo: Path, database_env: dict[str, str]
) -> None:
    rng = random.Random(SEED)
    home = fast_tmp / "home"
    env = {"GODEL_MAX_CONCURRENT_AGENTS": str(BURST), **database_env}
    srv = ServerProcess(home, **env).start()
    acknowledged: list[str] = []
    killed_in: dict[str, int] = {}  # agent id → the round whose kill it lived through (for the failure message)
    errors: list[BaseException] = []
    markers = fast_tmp / "markers"
    markers.mkdir()
    try:
        for round_ in range(ROUNDS):
            stop, first = threading.Event(), threading.Event()
            before = len(acknowledged)
            args = (srv, git_repo, markers, round_, acknowledged, errors, stop, first)
            spawner = threading.Thread(target=_burst, args=args)
            spawner.start()
            # The clock of the crash starts at the round's first acknowledged spawn, not at the thread's start: on
            # a loaded machine the first request alone can take longer than the whole window.
            assert first.wait(30) or errors, "the burst's first spawn was not acknowledged in 30 s"
            time.sleep(rng.uniform(0.0, 1.15))  # the moment of the crash, somewhere in the burst (seeded)
            srv.kill9()
            stop.set()
            spawner.join(30)
            assert not errors, errors
            for agent_id in acknowledged[before:]:
                killed_in[agent_id] = round_
            srv = ServerProcess(home, srv.port, **env).start()
        agents = _wait_all_ended(srv)

        assert set(acknowledged) <= {a["id"] for a in agents}, "an acknowledged spawn was lost"
        mislabelled = {
            a["id"]: (killed_in.get(a["id"]), a["state"], a.get("lastError"), a.get("exitCode"))
            for a in agents
            if (a["state"], a.get("exitCode")) != ("completed", 0)
        }
        assert not mislabelled, f"runs judged wrongly after a crash: {mislabelled}"
        expected = [f"line-{i}" for i in range(1, LINES + 1)]
        damaged = {a["id"]: len(got) for a in agents if (got := _lines(srv, a["id"])) != expected}
        assert not damaged, f"agents whose output was lost or duplicated (lines ingested): {damaged}"
        still_open = {a["id"]: s["id"] for a in agents for s in _sessions(srv, a["id"]) if not s.get("completedAt")}
        assert not still_open, f"sessions left open: {still_open}"
        assert len(agents) >= ROUNDS  # every round's burst got at least one spawn in before its kill
    finally:
        srv.stop()
    assert not _wrappers_left(home), "agent processes outlived their runs"
    # The kills landed where they matter: some restarts found launches to adopt or to queue again.
    report = _reconciled(home)
    assert report["adopted"] + report["requeued"] + report["retried"] > 0, report


def _sessions(srv: ServerProcess, agent_id: str) -> list[dict[str, Any]]:
    return list(srv.api("GET", f"/api/v1/agents/{agent_id}/sessions")["items"])


def _wrappers_left(home: Path) -> list[int]:
    """Wrapper processes of this test's agents still running (their exit files live under ``home``)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        if len(argv) > 4 and argv[3] == "godel-run" and argv[4].startswith(str(home)):
            found.append(proc.pid)
    return found


def _reconciled(home: Path) -> dict[str, int]:
    """What every restart's reconciliation did, summed, from the servers' own log lines."""
    totals: dict[str, int] = {"adopted": 0, "requeued": 0, "retried": 0}
    for line in (home / "server.log").read_text(errors="replace").splitlines():
        if "reconciled" in line:
            for key in totals:
                if (m := re.search(rf"\b{key}=(\d+)", line)) is not None:
                    totals[key] += int(m.group(1))
    return totals
