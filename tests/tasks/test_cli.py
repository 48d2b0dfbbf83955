"""``godel task …`` against a real ``godel serve`` (one per module): the requests are real HTTP, the answers the
real server's. Under CliRunner stdout is not a terminal, so output is the piped form unless ``output.is_tty``
is patched."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from godel.cli import output
from godel.cli.context import CliState
from godel.cli.main import app
from godel.store import open_store
from tests.conftest import TMPFS, make_repo, remove_tree
from tests.e2e.serverproc import ServerProcess
from tests.tasks.conftest import add_team


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    home = Path(tempfile.mkdtemp(prefix="godel-task-cli-", dir=TMPFS))
    srv = ServerProcess(home / "home", GODEL_ON_SHUTDOWN="terminate").start()
    try:
        yield srv
    finally:
        srv.stop()
        remove_tree(home)


@pytest.fixture(scope="module")
def agent(server: ServerProcess) -> dict[str, Any]:
    repo = make_repo(server.home.parent / "repo")
    body = {"task": "work", "repo": str(repo), "command": "sleep 120"}
    data: dict[str, Any] = server.api("POST", "/api/v1/agents", json=body)
    return data


def new_team(server: ServerProcess) -> str:
    async def make() -> str:
        s = open_store(f"sqlite:///{server.home / 'godel.db'}")
        try:
            return (await add_team(s)).id
        finally:
            await s.close()

    return asyncio.run(make())


def godel(server: ServerProcess, *args: str) -> Result:
    # A wide "terminal" for the tests that pretend to have one, so no cell is cut.
    # GODEL_HOME: where the CLI finds the server's credentials, as on the user's machine.
    env = {"COLUMNS": "200", "GODEL_HOME": str(server.home)}
    return CliRunner().invoke(app, list(args), obj=CliState(url=server.url), env=env)


def ok(server: ServerProcess, *args: str) -> str:
    result = godel(server, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def task(server: ServerProcess, task_id: str) -> dict[str, Any]:
    data: dict[str, Any] = server.api("GET", f"/api/v1/tasks/{task_id}")
    return data


@pytest.fixture
def tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "is_tty", lambda: True)


def test_create_prints_the_id_and_sends_every_option(server: ServerProcess, agent: dict[str, Any]) -> None:
    team = new_team(server)
    out = ok(server, "task", "create", "write docs", "-d", "all of them", "--priority", "7", "--team", team,
             "--agent", agent["id"][:8], "--max-attempts", "5")  # fmt: skip
    task_id = out.strip()
    got = task(server, task_id)
    assert got["title"] == "write docs" and got["description"] == "all of them" and got["priority"] == 7
    assert got["teamId"] == team and got["agentId"] == agent["id"] and got["maxAttempts"] == 5


def test_create_json_and_bad_input(server: ServerProcess) -> None:
    data = json.loads(ok(server, "--json", "task", "create", "json please"))
    assert data["title"] == "json please" and data["status"] == "pending"
    bad = godel(server, "task", "create", "too urgent", "--priority", "100000000000000000000")
    assert bad.exit_code == 1
    assert "VALIDATION_ERROR" in bad.stderr and "priority:" in bad.stderr
    unknown = godel(server, "task", "create", "for nobody", "--team", "no-such-team")
    assert unknown.exit_code == 1 and "teamId" in unknown.stderr


def test_list_piped_json_and_terminal(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    team = new_team(server)
    ids = [ok(server, "task", "create", f"listed {p}", "--priority", str(p), "--team", team).strip() for p in (1, 3)]
    piped = ok(server, "task", "list", "--team", team).splitlines()
    assert piped[0].split("\t")[:3] == ["ID", "PRI", "STATUS"]
    assert [line.split("\t")[0] for line in piped[1:]] == [ids[1], ids[0]]  # priority order
    page = json.loads(ok(server, "task", "list", "--team", team, "--json"))
    assert [t["id"] for t in page["items"]] == [ids[1], ids[0]] and page["pagination"]["hasMore"] is False
    every = json.loads(ok(server, "task", "list", "--team", team, "--all", "--limit", "1", "--json"))
    assert [t["id"] for t in every["items"]] == [ids[1], ids[0]]
    monkeypatch.setattr(output, "is_tty", lambda: True)
    table = ok(server, "task", "list", "--team", team, "--status", "pending")
    assert "listed 3" in table and ids[1][:8] in table and "0/3" in table and f"team:{team[:8]}" in table
    assert godel(server, "task", "list", "--dead", "--status", "pending").exit_code == 2


def test_claim_fail_dead_retry_and_show(server: ServerProcess) -> None:
    team = new_team(server)
    task_id = ok(server, "task", "create", "flaky", "--team", team, "--priority", "1000", "--max-attempts", "2").strip()
    for n in (1, 2):
        assert ok(server, "task", "claim", "--team", team).strip() == task_id
        ok(server, "task", "fail", task_id[:10], "--error", f"boom {n}")
    assert task(server, task_id)["status"] == "dead"
    dead = ok(server, "task", "list", "--dead").splitlines()
    assert task_id in [line.split("\t")[0] for line in dead[1:]]
    # Other tests leave tasks for anyone; take them, until the queue has nothing for this team.
    drained = [ok(server, "task", "claim", "--team", team) for _ in range(50)]
    assert task_id not in "".join(drained)  # the dead are not claimed
    assert "" in drained  # piped and empty: nothing at all, so that ID=$(godel task claim …) is empty
    assert json.loads(ok(server, "task", "claim", "--team", team, "--json")) is None
    shown = ok(server, "task", "show", task_id)
    assert "status\tdead" in shown and "boom 1" in shown and "boom 2" in shown
    assert json.loads(ok(server, "task", "show", task_id, "--json"))["lastError"] == "boom 2"
    assert ok(server, "task", "retry", task_id).strip() == task_id
    assert task(server, task_id)["status"] == "pending"
    again = godel(server, "task", "retry", task_id)
    assert again.exit_code == 1 and "INVALID_TASK_TRANSITION" in again.stderr


def test_assign_complete_cancel_and_rm(server: ServerProcess, agent: dict[str, Any], tty: None) -> None:
    task_id = json.loads(ok(server, "task", "create", "assign me", "--json"))["id"]
    assert godel(server, "task", "assign", task_id).exit_code == 2  # no target
    said = ok(server, "task", "assign", task_id, "--agent", agent["id"][:8])
    assert said.startswith(f"assigned task {task_id}")
    assert task(server, task_id)["agentId"] == agent["id"]
    assert godel(server, "task", "complete", task_id, "--result", "[1, 2]").exit_code == 2
    assert godel(server, "task", "complete", task_id, "--result", "{not json").exit_code == 2
    refused = godel(server, "task", "rm", task_id)
    assert refused.exit_code == 1 and "INVALID_TASK_TRANSITION" in refused.stderr
    ok(server, "task", "complete", task_id, "--result", '{"pr": 3}')
    assert task(server, task_id)["result"] == {"pr": 3}
    other = json.loads(ok(server, "task", "create", "cancel me", "--json"))["id"]
    ok(server, "task", "cancel", other, "--reason", "obsolete")
    assert task(server, other)["lastError"] == "cancelled: obsolete"
    assert ok(server, "task", "rm", task_id).strip() == f"deleted task {task_id}"
    result = json.loads(ok(server, "--json", "task", "rm", other))
    assert result == {"id": other, "deleted": True}
    gone = godel(server, "task", "show", task_id)
    assert gone.exit_code == 1 and "TASK_NOT_FOUND" in gone.stderr


def test_show_in_a_terminal_has_the_attempts_table(server: ServerProcess, tty: None) -> None:
    team = new_team(server)
    task_id = json.loads(ok(server, "task", "create", "shown", "--team", team, "--json"))["id"]
    assert "no attempts yet" in ok(server, "task", "show", task_id)
    ok(server, "task", "assign", task_id, "--team", team)
    ok(server, "task", "fail", task_id, "--error", "it broke", "--no-retry")
    shown = ok(server, "task", "show", task_id)
    assert "attempts" in shown and "it broke" in shown and "failed" in shown


def test_unknown_ids_and_no_server(server: ServerProcess) -> None:
    missing = godel(server, "task", "show", "ffffffff")
    assert missing.exit_code == 1 and "not found" in missing.stderr
    down = CliRunner().invoke(app, ["task", "list"], obj=CliState(url="http://127.0.0.1:9"))
    assert down.exit_code == 3
    assert httpx.get(f"{server.url}/health/live").status_code == 200


def test_run_spawns_an_agent_that_works_the_task(server: ServerProcess) -> None:
    repo = make_repo(server.home.parent / "run-repo")
    task_id = ok(server, "task", "create", "say hello", "-d", "politely").strip()
    agent_id = ok(server, "task", "run", task_id[:10], "--repo", str(repo), "--command", 'echo "GODEL_RESULT: $1"')
    agent = server.api("GET", f"/api/v1/agents/{agent_id.strip()}")
    assert agent["task"] == "say hello\n\npolitely" and agent["metadata"]["taskId"] == task_id
    deadline = time.monotonic() + 60
    while task(server, task_id)["status"] != "completed":
        assert time.monotonic() < deadline, task(server, task_id)
        time.sleep(0.05)  # polling the server for the follower's verdict
    assert task(server, task_id)["result"]["result"].startswith("say hello")
    again = godel(server, "task", "run", task_id, "--repo", str(repo), "--command", "true")
    assert again.exit_code == 1 and "INVALID_TASK_TRANSITION" in again.stderr and "completed" in again.stderr
