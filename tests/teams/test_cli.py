"""``godel team …`` against a real ``godel serve`` (one per module), with ``command`` agents. Under CliRunner
stdout is not a terminal, so output is the piped form unless ``output.is_tty`` is patched."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import TMPFS, make_repo, remove_tree
from tests.e2e.serverproc import ServerProcess
from typer.testing import CliRunner, Result

from godel.cli import output
from godel.cli.context import CliState
from godel.cli.main import app


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    home = Path(tempfile.mkdtemp(prefix="godel-team-cli-", dir=TMPFS))
    srv = ServerProcess(home / "home", GODEL_ON_SHUTDOWN="terminate").start()
    try:
        yield srv
    finally:
        srv.stop()
        remove_tree(home)


@pytest.fixture(scope="module")
def repo(server: ServerProcess) -> Path:
    return make_repo(server.home.parent / "repo")


def godel(server: ServerProcess, *args: str) -> Result:
    # GODEL_HOME: where the CLI finds the server's credentials, as on the user's machine.
    env = {"COLUMNS": "200", "GODEL_HOME": str(server.home)}
    return CliRunner().invoke(app, list(args), obj=CliState(url=server.url), env=env)


def ok(server: ServerProcess, *args: str) -> str:
    result = godel(server, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_create_wait_prints_lines_then_the_team(server: ServerProcess, repo: Path) -> None:
    out = ok(server, "team", "create", "--strategy", "parallel", "--size", "2", "--agent", "command",
             "--command", "echo 'GODEL_RESULT: hi'", "--repo", str(repo), "--wait", "say hi")  # fmt: skip
    lines = out.splitlines()
    assert lines[-1].startswith("team ") and lines[-1].endswith(" completed")
    assert any(line.startswith("completed\t100%\t2 completed") for line in lines)
    assert "\x1b[" not in out  # piped: no ANSI


def test_create_json_list_show_and_rm(server: ServerProcess, repo: Path) -> None:
    created = json.loads(ok(server, "team", "create", "-s", "map-reduce", "--agent", "command", "--command", "true",
                            "-t", "one", "-t", "two", "--repo", str(repo), "--no-start", "--json"))  # fmt: skip
    tid = created["id"]
    assert created["status"] == "creating" and created["config"]["tasks"] == ["one", "two"]
    listed = ok(server, "team", "list")
    assert listed.splitlines()[0].split("\t")[:4] == ["ID", "NAME", "STRATEGY", "STATUS"]
    assert any(line.startswith(tid) and "\tcreating\t" in line for line in listed.splitlines())
    assert json.loads(ok(server, "team", "show", tid[:8], "--json"))["id"] == tid  # a prefix is enough
    shown = ok(server, "team", "show", tid)
    assert f"id\t{tid}" in shown and "status\tcreating" in shown
    started = ok(server, "team", "start", tid[:8])
    assert started.strip() == f"team {tid} active"
    final = json.loads(ok(server, "--json", "team", "show", "--watch", tid))
    assert final["status"] == "completed" and [i["task"] for i in final["result"]["items"]] == ["one", "two"]
    assert ok(server, "team", "rm", tid).strip() == f"team {tid} deleted"
    missing = godel(server, "team", "show", tid)
    assert missing.exit_code == 1 and "TEAM_NOT_FOUND" in missing.stderr


def test_scale_pause_resume_complete(server: ServerProcess, repo: Path) -> None:
    tid = ok(server, "team", "create", "-s", "parallel", "-n", "1", "--max-agents", "3", "--agent", "command",
             "--command", "sleep 30", "--repo", str(repo), "work").strip()  # fmt: skip
    assert len(tid) == 36  # piped: the id alone
    assert ok(server, "team", "scale", tid, "2").strip() == f"team {tid} size 2"
    refused = godel(server, "team", "scale", tid, "4")
    assert refused.exit_code == 1 and "VALIDATION_ERROR" in refused.stderr and "maxAgents" in refused.stderr
    assert ok(server, "team", "pause", tid).strip() == f"team {tid} paused"
    assert ok(server, "team", "resume", tid).strip() == f"team {tid} active"
    scaled = json.loads(ok(server, "team", "scale", tid, "1", "--json"))
    assert scaled["size"] == 1 and len(scaled["killedAgents"]) <= 1
    assert ok(server, "team", "complete", tid).strip() == f"team {tid} completed"
    busy = godel(server, "team", "pause", tid)
    assert busy.exit_code == 1 and "INVALID_TEAM_TRANSITION" in busy.stderr


def test_failed_wait_exits_1_and_bad_input_is_refused(server: ServerProcess, repo: Path) -> None:
    failed = godel(server, "team", "create", "-s", "parallel", "--agent", "command", "--command", "exit 3",
                   "--repo", str(repo), "--wait", "fail")  # fmt: skip
    assert failed.exit_code == 1 and "failed" in failed.stdout and "exited 3" in failed.stdout
    unknown = godel(server, "team", "create", "-s", "swarm", "--repo", str(repo), "x")
    assert unknown.exit_code == 1 and "UNKNOWN_STRATEGY" in unknown.stderr
    bad_stage = godel(server, "team", "create", "-s", "pipeline", "--stage", "no-colon", "--repo", str(repo))
    assert bad_stage.exit_code == 2 and "ROLE:TASK" in bad_stage.output


def test_terminal_output_has_progress_bars(server: ServerProcess, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "is_tty", lambda: True)
    monkeypatch.setattr("godel.cli.teams.is_tty", lambda: True)
    out = ok(server, "team", "create", "-s", "parallel", "-n", "2", "--agent", "command", "--command", "true",
             "--repo", str(repo), "--wait", "bars")  # fmt: skip
    assert "━" in out  # Rich's bar
    assert "agent/0 (worker) completed" in out and "100%" in out
