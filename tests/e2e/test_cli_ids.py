"""Id prefixes wherever the CLI takes an id, resolved through the API of a real server (``godel.cli.ids``)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import make_repo
from tests.e2e.conftest import Godel
from tests.e2e.serverproc import ServerProcess


def wait_team(godel: Godel, team_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    team: dict[str, Any] = {}
    while time.monotonic() < deadline:
        team = godel.json("team", "show", team_id)
        if team["status"] in ("completed", "failed", "cancelled"):
            return team
        time.sleep(0.1)  # polling what the user would poll: `godel team show`
    raise AssertionError(f"team {team_id} never ended; last: {team}")


def test_merge_takes_a_team_prefix(godel: Godel, cli_home: Path) -> None:
    repo = make_repo(cli_home / f"merge-{uuid.uuid4().hex[:6]}", {"README.md": "# r\n"})
    team = godel.json("team", "create", "--strategy", "parallel", "--size", "2", "--agent", "command",
                      "--command", 'echo "$GODEL_AGENT_ID" > "by-$GODEL_AGENT_ID.txt"', "--repo", str(repo),
                      "write your file")  # fmt: skip
    assert wait_team(godel, team["id"][:8])["status"] == "completed"  # `team show` takes the prefix too
    result = godel.run("merge", "--repo", str(repo), "--into", "integration", "--team", team["id"][:8], "--json")
    merged = json.loads(result.stdout)
    assert [r["status"] for r in merged] == ["merged", "merged"]
    files = subprocess.run(["git", "-C", str(repo), "ls-tree", "--name-only", "integration"], capture_output=True,
                           text=True, check=True).stdout.split()  # fmt: skip
    assert len([f for f in files if f.startswith("by-")]) == 2


WORKFLOW = """name: two-files
steps:
  - id: one
    command: 'echo one > one.txt'
  - id: two
    command: 'echo two > two.txt'
"""


def test_merge_takes_a_workflow_prefix(godel: Godel, cli_home: Path) -> None:
    repo = make_repo(cli_home / f"merge-{uuid.uuid4().hex[:6]}", {"README.md": "# r\n"})
    definition = repo.parent / f"{repo.name}.yaml"
    definition.write_text(WORKFLOW)
    run = godel.json("workflow", "run", str(definition), "--repo", str(repo), "--wait")
    assert run["status"] == "completed", run
    assert godel.json("workflow", "show", run["id"][:8])["id"] == run["id"]
    result = godel.run("merge", "--repo", str(repo), "--into", "integration", "--workflow", run["id"][:8], "--json")
    assert [r["status"] for r in json.loads(result.stdout)] == ["merged", "merged"]
    files = subprocess.run(["git", "-C", str(repo), "ls-tree", "--name-only", "integration"], capture_output=True,
                           text=True, check=True).stdout.split()  # fmt: skip
    assert {"one.txt", "two.txt"} <= set(files)


def test_an_ambiguous_prefix_is_one_line_listing_the_candidates(godel: Godel, cli_server: ServerProcess,
                                                                cli_repo: Path) -> None:  # fmt: skip
    # Spawn until two agent ids share a first hex digit: at most 17 by pigeonhole.
    by_digit: dict[str, list[str]] = {}
    for _ in range(17):
        agent = cli_server.api("POST", "/api/v1/agents", json={"task": "t", "repo": str(cli_repo), "command": "true"})
        by_digit.setdefault(agent["id"][0], []).append(agent["id"])
        if len(by_digit[agent["id"][0]]) == 2:
            break
    digit, pair = next((d, ids) for d, ids in by_digit.items() if len(ids) == 2)
    every = [a["id"] for a in godel.json("agent", "list", "--all")["items"] if a["id"].startswith(digit)]
    result = godel.run("agent", "show", digit, expect=1)
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""
    shown = ", ".join(every[:5]) + (", …" if len(every) > 5 else "")  # newest first, as `agent list`
    assert (
        result.stderr == f"error: '{digit}' matches {len(every)} agents ({shown}); give more of the id (AMBIGUOUS_ID)\n"
    )
    assert set(pair) <= set(every)
