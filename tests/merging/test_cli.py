"""``godel merge`` against a real server (the app on uvicorn in a thread, over real HTTP): exit codes, ``--json``,
the piped and terminal forms. Usage errors and the request it sends are checked with a mock transport."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner, Result

from godel.api.app import create_app
from godel.cli import output
from godel.cli.context import CliState
from godel.cli.main import app
from godel.settings import Settings
from tests.e2e.serverproc import free_port
from tests.merging.conftest import BRANCHES, VERIFY, Fixture


@pytest.fixture
def server_url(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("GODEL_HOME", str(settings.home))  # the CLI finds the server's credentials there
    port = free_port()
    settings = settings.model_copy(update={"port": port})  # the credentials file names the port it serves on
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="godel-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)  # waiting for uvicorn's startup in its thread
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def godel(url: str, *args: str) -> Result:
    return CliRunner().invoke(app, list(args), obj=CliState(url=url))


def test_five_branches_exit_1_with_a_table_and_progress_lines(server_url: str, five: Fixture) -> None:
    result = godel(server_url, "merge", "--repo", str(five.repo), "--into", "integration", "--verify", VERIFY,
                   *BRANCHES)  # fmt: skip
    assert result.exit_code == 1, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert rows[0] == ["BRANCH", "STATUS", "AGENT", "DETAIL"]
    assert [(r[0], r[1]) for r in rows[1:]] == list(
        zip(BRANCHES, ["merged", "merged", "conflict", "gate-failed", "merged"], strict=True)
    )
    assert rows[3][3].startswith("conflicts with integration in 1 file: shared.txt")
    assert rows[4][3] == "verify command exited with 1"
    progress = result.stderr.splitlines()
    assert progress[0].startswith("merge ") and progress[0].endswith("5 branches into integration")
    assert sorted(line.split("\t")[1] for line in progress[1:]) == sorted(BRANCHES)
    assert {b: five.tip(b) for b in BRANCHES} == five.tips


def test_json_gives_the_per_branch_results(server_url: str, five: Fixture) -> None:
    result = godel(server_url, "merge", "--repo", str(five.repo), "--into", "integration", "--verify", VERIFY,
                   "--json", *BRANCHES)  # fmt: skip
    assert result.exit_code == 1, result.output
    results = json.loads(result.stdout)
    assert [(r["branch"], r["status"]) for r in results] == list(
        zip(BRANCHES, ["merged", "merged", "conflict", "gate-failed", "merged"], strict=True)
    )
    assert results[2]["files"] == ["shared.txt"] and results[3]["exitCode"] == 1
    assert results[4]["commit"] == five.tip("integration")


def test_everything_merged_exits_0(server_url: str, five: Fixture) -> None:
    args = ("merge", "--repo", str(five.repo), "--into", "integration", "--verify", VERIFY, "--batch")
    result = godel(server_url, *args, "feature/one", "feature/five")
    assert result.exit_code == 0, result.output
    # Again: both are in already; nothing to do is not a failure.
    again = godel(server_url, *args, "--json", "feature/one", "feature/five")
    assert again.exit_code == 0 and [r["status"] for r in json.loads(again.stdout)] == ["skipped", "skipped"]


def test_in_a_terminal(server_url: str, five: Fixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "is_tty", lambda: True)
    verify = f"echo checking app.txt; {VERIFY}"
    result = godel(server_url, "merge", "--repo", str(five.repo), "--into", "integration", "--verify", verify,
                   "feature/one", "feature/broken")  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "into integration" in result.stdout and "━" in result.stdout  # the progress bars
    assert "feature/broken: verify command exited with 1\n  checking app.txt" in result.stdout
    assert "1 of 2 merged into integration" in result.stdout


def test_a_refused_request_exits_1_with_the_field(server_url: str, five: Fixture) -> None:
    result = godel(server_url, "merge", "--repo", str(five.repo), "--into", "integration", "feature/one", "nope")
    assert result.exit_code == 1
    assert "(REF_NOT_FOUND)" in result.stderr and "branches[1]" in result.stderr


# ------------------------------------------------------------------------------------ without a server


def recorded(*args: str) -> tuple[Result, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    job = {"id": "m1", "status": "completed", "into": "i", "branches": [], "results": [], "summary": {}}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202 if request.method == "POST" else 200, json={"success": True, "data": job})

    state = CliState(url="http://godel.test", transport=httpx.MockTransport(handler))
    return CliRunner().invoke(app, list(args), obj=state), seen


def test_usage_errors() -> None:
    no_source = ["--into", "i"]
    for args in (no_source, [*no_source, "--team", "t", "b"], [*no_source, "--team", "t", "--workflow", "w"]):
        result, seen = recorded("merge", *args)
        assert result.exit_code == 2 and not seen, result.output
    result, _ = recorded("merge", "b")
    assert result.exit_code == 2 and "--into" in result.output


def test_the_request_it_sends(fast_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(fast_tmp)
    result, seen = recorded("merge", "--into", "integration", "--team", "t1", "--verify", "make test",
                            "--verify-timeout", "90", "--batch", "--base", "dev", "--resolve", "true")  # fmt: skip
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(seen[0].content)
    assert seen[0].url.path == "/api/v1/merges" and seen[1].url.path == "/api/v1/merges/m1"
    assert body == {"repo": str(fast_tmp.resolve()), "into": "integration", "teamId": "t1", "base": "dev",
                    "verify": "make test", "verifyTimeout": 90.0, "batch": True, "resolve": "true"}  # fmt: skip
