"""The ``godel`` CLI end to end: real subprocesses of the CLI against a real server, real git, real agents."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import Godel
from tests.e2e.serverproc import ServerProcess, ctrl_c_works, free_port

ENDED = {"completed", "failed", "killed"}


def wait_status(godel: Godel, agent_id: str, want: set[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    agent: dict[str, Any] = {}
    while time.monotonic() < deadline:
        agent = godel.json("agent", "show", agent_id)
        if agent["status"] in want:
            return agent
        time.sleep(0.1)  # polling what the user would poll: `godel agent show`
    raise AssertionError(f"agent {agent_id} never reached {want}; last: {agent}")


def spawn(godel: Godel, repo: Path, command: str, task: str = "a task", *extra: str) -> dict[str, Any]:
    return dict(godel.json("agent", "spawn", "--repo", str(repo), "--command", command, *extra, task))


def test_command_agent_runs_to_completion(godel: Godel, cli_repo: Path) -> None:
    agent = spawn(godel, cli_repo, 'echo hello; echo "$GODEL_TASK" > out.txt', "write the task", "--label", "hi")
    assert agent["status"] == "pending" and agent["label"] == "hi"
    agent_id = agent["id"]

    done = wait_status(godel, agent_id, ENDED)
    assert done["status"] == "completed", done

    assert "hello" in godel.run("agent", "logs", agent_id).stdout.splitlines()
    diff = godel.run("agent", "diff", agent_id).stdout
    assert "out.txt" in diff and "+write the task" in diff

    assert agent_id in [a["id"] for a in godel.json("agent", "list")["items"]]
    piped = godel.run("agent", "list").stdout
    assert agent_id in piped and "\x1b[" not in piped  # full ids, no colour when piped
    assert "status\tcompleted" in godel.run("agent", "show", agent_id).stdout.splitlines()

    types = {e["type"] for e in godel.json("events", "list", "--agent", agent_id, "--limit", "1000")["items"]}
    assert {"agent:created", "agent:start", "agent:complete"} <= types, types


def test_relative_repo_is_sent_as_an_absolute_path(godel: Godel, cli_repo: Path) -> None:
    agent = dataclasses.replace(godel, cwd=cli_repo).json("agent", "spawn", "--repo", ".", "--command", "true", "t")
    assert agent["repo"] == str(cli_repo.resolve())
    wait_status(godel, agent["id"], ENDED)


def test_logs_follow_until_the_agent_ends(godel: Godel, cli_repo: Path) -> None:
    agent = spawn(godel, cli_repo, "for i in 1 2 3; do echo n$i; sleep 0.2; done")
    # The default tail replays what was written before the CLI connected, then the stream takes over.
    followed = godel.run("agent", "logs", "-f", agent["id"], timeout=30)
    assert followed.stdout.splitlines() == ["n1", "n2", "n3"]


def test_kill_then_remove(godel: Godel, cli_repo: Path) -> None:
    agent_id = spawn(godel, cli_repo, "sleep 30")["id"]
    wait_status(godel, agent_id, {"running"})
    godel.run("agent", "kill", agent_id)
    assert wait_status(godel, agent_id, ENDED)["status"] == "killed"

    assert godel.run("agent", "rm", agent_id).stdout.strip() == agent_id
    gone = godel.run("agent", "show", agent_id, expect=1)
    assert "(AGENT_NOT_FOUND)" in gone.stderr


def test_pause_and_resume(godel: Godel, cli_repo: Path) -> None:
    agent_id = spawn(godel, cli_repo, "sleep 30")["id"]
    try:
        wait_status(godel, agent_id, {"running"})
        assert godel.json("agent", "pause", agent_id)["status"] == "paused"
        assert godel.json("agent", "show", agent_id)["status"] == "paused"
        assert godel.json("agent", "resume", agent_id)["status"] == "running"
    finally:
        godel.run("agent", "kill", agent_id, expect=None)


def test_snapshot_and_fork(godel: Godel, cli_repo: Path) -> None:
    agent_id = spawn(godel, cli_repo, "echo one > a.txt")["id"]
    assert wait_status(godel, agent_id, ENDED)["status"] == "completed"

    snap = godel.json("agent", "snapshot", agent_id, "--label", "first")
    assert snap["agentId"] == agent_id and snap["label"] == "first"
    assert snap["id"] in [s["id"] for s in godel.json("agent", "snapshots", agent_id)["items"]]

    fork = godel.json("agent", "fork", agent_id, "--snapshot", snap["id"], "--command", "cat a.txt", "--task", "f")
    assert fork["id"] != agent_id
    assert wait_status(godel, fork["id"], ENDED)["status"] == "completed"
    assert "one" in godel.run("agent", "logs", fork["id"]).stdout.splitlines()  # it started from the snapshot


def test_restore_a_snapshot(godel: Godel, cli_repo: Path) -> None:
    agent_id = spawn(godel, cli_repo, "echo one > a.txt")["id"]
    wait_status(godel, agent_id, ENDED)
    snap_id = godel.run("agent", "snapshot", agent_id).stdout.strip()  # piped: just the id
    assert godel.json("agent", "restore", agent_id, snap_id)["id"] == agent_id


def test_events_tail_prints_live_events_until_interrupted(godel: Godel, cli_server: ServerProcess) -> None:
    kind = f"custom:clitest{uuid.uuid4().hex[:8]}"  # callers publish in their own namespace

    def publish(i: int) -> int:
        r = httpx.post(f"{godel.url}/api/v1/events", json={"type": f"{kind}:tick", "payload": {"i": i}},
                       headers=cli_server.headers)  # fmt: skip
        assert r.status_code == 201, r.text
        return int(r.json()["data"]["sequence"])

    # No moment to wait for: the tail follows from a sequence number, so an event committed before its stream
    # opens is replayed, not lost, however slowly the CLI starts. `--since` the event before the first one
    # makes the expected lines exact whatever else the log holds.
    first = publish(0)
    tail = subprocess.Popen(
        [sys.executable, "-m", "godel", "events", "tail", "--pattern", f"{kind}:*", "--since", str(first - 1)],
        env={**os.environ, "GODEL_URL": godel.url, "GODEL_HOME": str(godel.home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_works,
    )
    try:
        publish(1)
        assert tail.stdout is not None
        lines = [tail.stdout.readline() for _ in range(2)]
    finally:
        tail.send_signal(signal.SIGINT)
        returncode = tail.wait(30)
    assert [line.split("\t")[2] for line in lines] == [f"{kind}:tick", f"{kind}:tick"], tail.stderr
    assert [line.rstrip("\n").split("\t")[4] for line in lines] == ['{"i":0}', '{"i":1}']
    assert returncode == 0


def test_status_shows_health(godel: Godel, cli_server: ServerProcess) -> None:
    detailed = godel.json("status")
    assert detailed["isolation"]["runtime"] == "local" and detailed["isolation"]["level"] == "worktree"
    shown = godel.run("status")
    assert shown.stdout.startswith("CHECK\tVALUE\nurl\t")
    # This server runs agents on `local` (tests pin it): status and the server's start say so, loudly.
    said = [line for line in shown.stderr.splitlines() if line.startswith("WARNING: agents run UNCONFINED")]
    assert said and 'runtime = "local" was chosen' in said[0], shown.stderr
    assert "agents run UNCONFINED" in cli_server.log.read_text()


def test_unknown_agent_is_an_api_error(godel: Godel) -> None:
    result = godel.run("agent", "show", str(uuid.uuid4()), expect=1)
    assert result.stderr.startswith("error: ") and "(AGENT_NOT_FOUND)" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_spawn_outside_a_repository_is_refused(godel: Godel, cli_home: Path) -> None:
    not_a_repo = Path(tempfile.mkdtemp(dir=cli_home))
    result = godel.run("agent", "spawn", "--repo", str(not_a_repo), "--command", "true", "t", expect=1)
    assert "(NOT_A_GIT_REPOSITORY)" in result.stderr and "Traceback" not in result.stderr


def test_no_server_exits_3_with_a_hint(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = Godel(url, tmp_path, tmp_path).run("agent", "list", expect=3)
    assert result.stderr == f"error: Godel server is not running at {url} (start it with `godel serve`)\n"
