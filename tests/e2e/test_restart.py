"""Durability across a crash: SIGKILL ``godel serve`` while agents run, start it again, and check that every
agent is re-adopted or honestly failed and that no acknowledged event or log line was lost."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil

from tests.e2e.serverproc import ServerProcess


def wait_for(check, timeout: float = 20.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)  # polling an observable condition
    raise AssertionError(f"{what} not met in {timeout}s; last: {last!r}")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def spawn(srv: ServerProcess, repo: Path, command: str, label: str) -> dict:
    return srv.api(
        "POST", "/api/v1/agents", json={"task": label, "repo": str(repo), "command": command, "label": label}
    )


def state(srv: ServerProcess, agent_id: str) -> dict:
    return srv.api("GET", f"/api/v1/agents/{agent_id}")


def all_events(srv: ServerProcess) -> list[dict]:
    out: list[dict] = []
    since = 0
    while True:
        items = srv.api("GET", f"/api/v1/events?since={since}&limit=1000")["items"]
        out += items
        if len(items) < 1000:
            return out
        since = items[-1]["sequence"]


def test_sigkill_mid_run_readopts_and_loses_nothing(
    fast_tmp: Path, git_repo: Path, database_env: dict[str, str]
) -> None:
    home = fast_tmp / "home"
    srv = ServerProcess(home, **database_env).start()
    try:
        writer = spawn(srv, git_repo, "for i in $(seq 1 80); do echo line-$i; sleep 0.05; done", "writer")
        victim = spawn(srv, git_repo, "sleep 60", "victim")
        # It finishes only once told to, after the kill: on a loaded machine a timer could fire before it.
        go = fast_tmp / "go"
        finisher = spawn(srv, git_repo, f"while [ ! -e {go} ]; do sleep 0.02; done; echo done-while-down", "finisher")
        for a in (writer, victim, finisher):
            wait_for(lambda a=a: state(srv, a["id"])["state"] == "executing", what=f"{a['label']} running")
        wait_for(lambda: len(srv.api("GET", f"/api/v1/agents/{writer['id']}/logs")["items"]) >= 5, what="output")
        before = all_events(srv)
        pids = {a["label"]: state(srv, a["id"])["pid"] for a in (writer, victim, finisher)}
    finally:
        srv.kill9()

    # While the server is down: the agents keep running; one of them is killed behind Godel's back.
    assert psutil.pid_exists(pids["writer"])
    os.killpg(pids["victim"], signal.SIGKILL)
    go.touch()
    wait_for(lambda: not alive(pids["finisher"]), what="finisher exits while the server is down")

    srv2 = ServerProcess(home, port=srv.port, **database_env).start()
    try:
        done = wait_for(lambda: (s := state(srv2, writer["id"]))["state"] == "completed" and s, what="writer done")
        assert done["exitCode"] == 0
        lines = [x["line"] for x in srv2.api("GET", f"/api/v1/agents/{writer['id']}/logs?tail=1000")["items"]]
        assert lines == [f"line-{i}" for i in range(1, 81)]  # every line once, in order, across the crash

        lost = state(srv2, victim["id"])
        assert lost["state"] == "failed" and "vanished" in lost["lastError"]

        fin = wait_for(lambda: (s := state(srv2, finisher["id"]))["state"] == "completed" and s, what="finisher")
        assert [x["line"] for x in srv2.api("GET", f"/api/v1/agents/{finisher['id']}/logs")["items"]] == [
            "done-while-down"
        ]
        assert fin["exitCode"] == 0

        after = all_events(srv2)
        after_ids = {e["id"] for e in after}
        assert all(e["id"] in after_ids for e in before), "an acknowledged event was lost"
        seqs = [e["sequence"] for e in after]
        assert seqs == sorted(set(seqs))
        adopted = {e["metadata"]["agentId"] for e in after if e["type"] == "agent:adopted"}
        assert {writer["id"], finisher["id"]} <= adopted and victim["id"] not in adopted
    finally:
        srv2.stop()


def test_graceful_stop_leaves_or_terminates_agents(fast_tmp: Path, git_repo: Path) -> None:
    home = fast_tmp / "home"
    srv = ServerProcess(home).start()
    agent = spawn(srv, git_repo, "sleep 60", "sleeper")
    wait_for(lambda: state(srv, agent["id"])["state"] == "executing", what="running")
    pid = state(srv, agent["id"])["pid"]
    assert srv.stop(signal.SIGTERM) == 0
    assert psutil.pid_exists(pid), "on_shutdown=leave keeps the agent running"

    srv2 = ServerProcess(home, port=srv.port, GODEL_ON_SHUTDOWN="terminate").start()
    try:
        assert state(srv2, agent["id"])["state"] == "executing"
    finally:
        assert srv2.stop(signal.SIGINT) == 0
    wait_for(lambda: not alive(pid), what="agent terminated")
    srv3 = ServerProcess(home, port=srv.port).start()
    try:
        final = state(srv3, agent["id"])
        assert (
            final["state"] == "killed"
            and "shutdown" in srv3.api("GET", f"/api/v1/agents/{agent['id']}/transitions")["items"][-1]["reason"]
        )
    finally:
        srv3.stop()
