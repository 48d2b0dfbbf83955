"""What the CLI prints and how it exits, driven through Typer's CliRunner.

Answers come from an ``httpx.MockTransport`` handed in through ``CliState`` (the CLI itself always speaks real
HTTP); the server-not-running case uses a real closed port. Under CliRunner stdout is not a terminal, so
these see the piped (plain) form unless a test says otherwise.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from godel.cli import output
from godel.cli.context import CliState
from godel.cli.main import app

A1 = "0b7f2f2e-8a86-4a43-9d43-6f0f6d3f8e11"
A2 = "5c0d9a1e-4b7e-4d0a-8f5e-2d1b3c4a5e6f"
AGENTS = [
    {"id": A1, "status": "running", "label": "fix\tbug", "kind": "command", "task": "line1\nline2",
     "spawnedAt": "2025-01-01T00:00:00+00:00"},
    {"id": A2, "status": "completed", "label": None, "kind": "command", "task": "t2",
     "spawnedAt": "2025-01-01T00:00:01+00:00"},
]  # fmt: skip
PAGE = {"items": AGENTS, "pagination": {"limit": 50, "cursor": None, "hasMore": False}}
TRANSITIONS = {
    "items": [{"fromState": "pending", "toState": "initializing", "trigger": "admit", "actor": "scheduler",
               "reason": None, "at": "2025-01-01T00:00:00+00:00", "eventSequence": 3}]
}  # fmt: skip
BOX_AND_ANSI = ("\x1b[", "─", "│", "┃", "━", "╭")

Handler = Callable[[httpx.Request], httpx.Response]


def ok(data: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"success": True, "data": data})


def fail(status: int, code: str, message: str, details: Any = None) -> httpx.Response:
    body = {"success": False, "error": {"code": code, "message": message, "details": details},
            "meta": {"requestId": "req-9", "timestamp": "2025-01-01T00:00:00Z"}}  # fmt: skip
    return httpx.Response(status, json=body)


def routes(table: dict[tuple[str, str], httpx.Response], seen: list[httpx.Request] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return table.get((request.method, request.url.path)) or fail(404, "NOT_FOUND", "no route")

    return handler


def invoke(handler: Handler, *args: str) -> Result:
    state = CliState(url="http://godel.test", transport=httpx.MockTransport(handler))
    return CliRunner().invoke(app, list(args), obj=state)


def assert_plain(text: str) -> None:
    for mark in BOX_AND_ANSI:
        assert mark not in text


def test_list_json_prints_exactly_the_data_payload() -> None:
    result = invoke(routes({("GET", "/api/v1/agents"): ok(PAGE)}), "agent", "list", "--json")
    assert result.exit_code == 0, result.output
    assert result.stdout == json.dumps(PAGE, indent=2) + "\n"
    assert result.stderr == ""


def test_global_json_flag_works_before_the_noun() -> None:
    handler = routes({("GET", f"/api/v1/agents/{A1}"): ok(AGENTS[0])})
    result = invoke(handler, "--json", "agent", "show", A1)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == AGENTS[0]


def test_list_piped_is_tab_separated_with_full_ids() -> None:
    result = invoke(routes({("GET", "/api/v1/agents"): ok(PAGE)}), "agent", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "ID\tSTATUS\tLABEL\tKIND\tSPAWNED\tTASK"
    assert lines[1].split("\t") == [
        A1,
        "running",
        "fix bug",
        "command",
        "2025-01-01T00:00:00+00:00",
        "line1 line2",
    ]
    assert lines[2].split("\t")[:3] == [A2, "completed", ""]
    assert_plain(result.stdout)


def test_list_in_a_terminal_is_a_table_with_short_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "is_tty", lambda: True)
    result = invoke(routes({("GET", "/api/v1/agents"): ok(PAGE)}), "agent", "list")
    assert result.exit_code == 0, result.output
    assert A1[:8] in result.stdout and A1 not in result.stdout


SESSION = {
    "id": "s1",
    "status": "completed",
    "model": "scripted/m",
    "usage": {"inputTokens": 60, "outputTokens": 10, "costUsd": 0.0123},
    "outcome": "pi finished (stopReason stop); 1 file(s) changed, 0 commit(s)",
    "messages": [
        {"kind": "message", "role": "user", "text": "create hello.txt"},
        {"kind": "tool_call", "name": "write", "input": {"path": "hello.txt"}},
        {"kind": "tool_result", "output": "Successfully wrote\n6 bytes", "isError": False},
        {"kind": "message", "role": "assistant", "text": "Created hello.txt."},
    ],
}


def test_show_piped_prints_fields_then_transitions_then_the_transcript() -> None:
    handler = routes(
        {
            ("GET", f"/api/v1/agents/{A1}"): ok(AGENTS[0]),
            ("GET", f"/api/v1/agents/{A1}/transitions"): ok(TRANSITIONS),
            ("GET", f"/api/v1/agents/{A1}/sessions"): ok({"items": [SESSION]}),
        }
    )
    result = invoke(handler, "agent", "show", A1)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert f"id\t{A1}" in lines
    assert "2025-01-01T00:00:00+00:00\tpending\tinitializing\tadmit\tscheduler\t" in result.stdout
    assert "session s1 (completed, scripted/m, 60 in / 10 out, $0.0123)" in lines
    transcript = lines[lines.index("session s1 (completed, scripted/m, 60 in / 10 out, $0.0123)") + 1 :]
    assert [t.split()[0] for t in transcript] == ["user", "tool", "result", "assistant", "outcome"]
    assert transcript[2].endswith("Successfully wrote 6 bytes")  # one line per entry, whitespace folded
    assert_plain(result.stdout)
    assert_plain(result.stdout)


def test_spawn_sends_an_absolute_repo_and_prints_the_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    seen: list[httpx.Request] = []
    handler = routes({("POST", "/api/v1/agents"): ok({"id": A1, "status": "pending"}, 201)}, seen)
    args = [
        "agent",
        "spawn",
        "--repo",
        ".",
        "--base",
        "main",
        "--max-retries",
        "2",
        "--cleanup",
        "on-success",
    ]
    result = invoke(handler, *args, "--env", "A=1", "-e", "B=x=y", "--command", "echo hi", "do it")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{A1}\n"
    body = json.loads(seen[0].content)
    assert body == {
        "task": "do it",
        "repo": str(tmp_path.resolve()),
        "baseRef": "main",
        "command": "echo hi",
        "maxRetries": 2,
        "cleanup": "on-success",
        "env": {"A": "1", "B": "x=y"},
    }


def test_a_unique_prefix_resolves_to_the_full_id() -> None:
    seen: list[httpx.Request] = []
    killed = {**AGENTS[0], "status": "killed"}
    handler = routes({("GET", "/api/v1/agents"): ok(PAGE), ("POST", f"/api/v1/agents/{A1}/kill"): ok(killed)}, seen)
    result = invoke(handler, "agent", "kill", A1[:6])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{A1}\tkilled\n"
    assert seen[-1].url.path == f"/api/v1/agents/{A1}/kill"


def test_diff_piped_is_the_raw_diff() -> None:
    text = "diff --git a/out.txt b/out.txt\n+hello\n"
    handler = routes({("GET", f"/api/v1/agents/{A1}/diff"): ok({"diff": text, "baseCommit": "abc", "branch": "b"})})
    result = invoke(handler, "agent", "diff", A1)
    assert result.exit_code == 0, result.output
    assert result.stdout == text


def test_logs_piped_prints_lines() -> None:
    items = {"items": [{"sequence": 1, "stream": "stdout", "line": "hello"}, {"stream": "stderr", "line": "e"}]}
    result = invoke(routes({("GET", f"/api/v1/agents/{A1}/logs"): ok(items)}), "agent", "logs", A1)
    assert result.exit_code == 0, result.output
    assert result.stdout == "hello\ne\n"


def test_events_tail_prints_one_line_per_event() -> None:
    stream = (
        "retry: 0\n\n"
        'id: 7\ndata: {"sequence": 7, "type": "agent:start", "timestamp": 0, "payload": {"a": 1},'
        f' "metadata": {{"agentId": "{A1}"}}}}\n\n'
    )
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream.encode())
        raise httpx.ConnectError("refused", request=request)  # the server went away: tail gives up

    result = invoke(handler, "events", "tail", "-p", "agent:*", "-n", "0")  # only the stream: no past events
    assert result.stdout == f'7\t1970-01-01T00:00:00.000+00:00\tagent:start\t{A1}\t{{"a":1}}\n'
    assert result.exit_code == 3


def test_api_error_prints_message_and_code_and_exits_1() -> None:
    result = invoke(lambda r: fail(404, "AGENT_NOT_FOUND", f"agent {A1!r} not found"), "agent", "show", A1)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"error: agent {A1!r} not found (AGENT_NOT_FOUND)\n"


def test_field_errors_are_printed_one_per_line() -> None:
    details = {"fields": [{"field": "task", "message": "must not be empty"}, {"field": "priority", "message": "int"}]}
    handler = routes({("POST", "/api/v1/agents"): fail(400, "VALIDATION_ERROR", "invalid request", details)})
    result = invoke(handler, "agent", "spawn", "--repo", "/tmp", "x")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: invalid request (VALIDATION_ERROR)",
        "  task: must not be empty",
        "  priority: int",
    ]


def test_unknown_prefix_is_agent_not_found() -> None:
    # Nothing listed begins with it: it goes to the server as given, whose answer is the not-found error.
    missing = fail(404, "AGENT_NOT_FOUND", "agent 'ffff' not found")
    table = {("GET", "/api/v1/agents"): ok(PAGE), ("POST", "/api/v1/agents/ffff/pause"): missing}
    result = invoke(routes(table), "agent", "pause", "ffff")
    assert result.exit_code == 1
    assert result.stderr == "error: agent 'ffff' not found (AGENT_NOT_FOUND)\n"


def test_usage_error_exits_2() -> None:
    result = invoke(routes({}), "agent", "list", "--status", "bogus")
    assert result.exit_code == 2


def test_server_not_running_exits_3_with_a_hint() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = CliRunner().invoke(app, ["agent", "list"], env={"GODEL_URL": url})
    assert result.exit_code == 3
    assert result.stderr == f"error: Godel server is not running at {url} (start it with `godel serve`)\n"
    assert "Traceback" not in result.output


def test_age_is_relative() -> None:
    now = datetime(2025, 1, 1, 1, 0, 0, tzinfo=UTC)
    assert output.age("2025-01-01T00:59:30Z", now) == "30s ago"
    assert output.age("2025-01-01T00:00:00+00:00", now) == "1h ago"
    assert output.age("not a time", now) == "not a time"
