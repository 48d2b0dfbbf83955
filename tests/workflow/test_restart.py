"""kill -9 of a real `godel serve` in the middle of a workflow: after a restart the workflow completes, and every
step ran exactly once (the step that was running is waited for, not run again; finished ones are not re-run)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.e2e.serverproc import ServerProcess

SOURCE = """
name: survives
steps:
  - id: first
    command: echo first >> {log}
  - id: long
    dependsOn: [first]
    command: 'echo long >> {log}; sleep 3; echo "GODEL_RESULT: long done"'
  - id: last
    dependsOn: [long]
    command: 'echo last >> {log}; echo "GODEL_RESULT: after {{{{ steps.long.output }}}}"'
"""


def _wait(server: ServerProcess, workflow_id: str, until: str, log: Path, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = server.api("GET", f"/api/v1/workflows/{workflow_id}")
        steps = {s["id"]: s for s in data["steps"]}
        started = log.is_file() and "long" in log.read_text().split()
        if until == "long-running" and steps["long"]["agentId"] and started:
            return data  # its agent's process runs: the kill catches the step in the middle of its work
        if until == "finished" and data["status"] in ("completed", "failed", "cancelled"):
            return data
        assert time.monotonic() < deadline, data
        time.sleep(0.05)  # polling the server, as a user would


def test_kill_9_mid_workflow_then_restart_completes_each_step_once(fast_tmp: Path, git_repo: Path) -> None:
    log = fast_tmp / "runs.log"
    server = ServerProcess(fast_tmp / "home").start()
    try:
        wf = server.api("POST", "/api/v1/workflows", json={"source": SOURCE.format(log=log), "repo": str(git_repo)})
        running = _wait(server, wf["id"], "long-running", log)
        long_agent = {s["id"]: s for s in running["steps"]}["long"]["agentId"]
        server.kill9()  # no shutdown of any kind: the step's agent keeps running without its server

        server = ServerProcess(fast_tmp / "home", server.port).start()
        done = _wait(server, wf["id"], "finished", log)
        steps = {s["id"]: s for s in done["steps"]}
        assert done["status"] == "completed", {k: (v["status"], v["error"], v["attempts"]) for k, v in steps.items()}
        assert steps["long"]["attempts"] == [long_agent]  # the same agent, adopted, not a second one
        assert steps["last"]["output"] == "after long done"
        assert log.read_text().split() == ["first", "long", "last"]  # each step ran once
    finally:
        server.stop()
