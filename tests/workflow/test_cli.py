"""``godel workflow run|list|show|cancel`` against a real ``godel serve``: exit codes and output a script can use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.serverproc import ServerProcess

GOOD = """name: good
steps:
  - id: hello
    command: 'echo "GODEL_RESULT: hi {{ vars.who }}"'
variables:
  who: nobody
"""
BAD = "name: bad\nsteps:\n  - id: boom\n    command: exit 4\n"


def godel(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GODEL_HOME": str(server.home)}  # where the CLI finds the server's credentials
    return subprocess.run([sys.executable, "-m", "godel", "--url", server.url, *args], capture_output=True,
                          text=True, timeout=60, env=env)  # fmt: skip


def test_run_wait_list_show_and_cancel(fast_tmp: Path, git_repo: Path) -> None:
    (fast_tmp / "good.yaml").write_text(GOOD)
    (fast_tmp / "bad.yaml").write_text(BAD)
    server = ServerProcess(fast_tmp / "home").start()
    try:
        ok = godel(server, "workflow", "run", str(fast_tmp / "good.yaml"), "--repo", str(git_repo), "--var",
                   "who=world", "--wait", "--json")  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        run = json.loads(ok.stdout)
        assert run["status"] == "completed" and run["steps"][0]["output"] == "hi world"

        bad = godel(server, "workflow", "run", str(fast_tmp / "bad.yaml"), "--repo", str(git_repo), "--wait")
        assert bad.returncode == 1 and "boom: failed" in bad.stdout and "failed" in bad.stdout

        listed = json.loads(godel(server, "workflow", "list", "--json").stdout)["items"]
        assert [w["name"] for w in listed] == ["bad", "good"]  # newest first
        shown = godel(server, "workflow", "show", run["id"])
        assert shown.returncode == 0 and "hi world" in shown.stdout
        again = godel(server, "workflow", "cancel", run["id"])
        assert again.returncode == 1 and "CONFLICT" in again.stderr + again.stdout  # a finished run: 409

        removed = godel(server, "workflow", "rm", run["id"])
        assert removed.returncode == 0 and godel(server, "workflow", "show", run["id"]).returncode == 1

        invalid = fast_tmp / "invalid.yaml"
        invalid.write_text("name: x\nsteps:\n  - id: a\n    comand: y\n")
        refused = godel(server, "workflow", "run", str(invalid), "--repo", str(git_repo))
        assert refused.returncode == 1 and "INVALID_WORKFLOW" in refused.stderr + refused.stdout
    finally:
        server.stop()
