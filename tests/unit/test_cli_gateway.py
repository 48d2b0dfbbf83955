"""``godel key …``, ``godel budget …`` and ``godel usage``: the requests they send and what they print.

As in test_cli_output: answers come from an ``httpx.MockTransport`` handed in through ``CliState``; under
CliRunner stdout is not a terminal, so output is the piped form unless ``output.is_tty`` is patched.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner, Result

from godel.cli import output
from godel.cli.context import CliState
from godel.cli.gateway import parse_duration, parse_expires, parse_time
from godel.cli.main import app
from godel.client import GodelClient

A1 = "0b7f2f2e-8a86-4a43-9d43-6f0f6d3f8e11"
K1 = "7d1c2b3a-1111-4a43-9d43-6f0f6d3f8e11"
K2 = "7d1c9999-2222-4b7e-8f5e-2d1b3c4a5e6f"
B1 = "9e8d7c6b-3333-4a43-9d43-6f0f6d3f8e11"
KEY_TEXT = "gdl_ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56"
NOW = datetime.now(UTC)


def iso(delta: timedelta) -> str:
    return (NOW + delta).isoformat()


KEY = {
    "id": K1,
    "prefix": "gdl_ab12",
    "scopeType": "user",
    "scopeId": "me",
    "models": ["openai/gpt-4o", "anthropic/claude"],
    "expiresAt": iso(timedelta(days=7, minutes=5)),
    "revokedAt": None,
    "createdAt": iso(timedelta(hours=-2)),
}
AGENT_KEY = {
    **KEY,
    "id": K2,
    "prefix": "gdl_zz99",
    "scopeType": "agent",
    "scopeId": A1,
    "models": [],
    "expiresAt": None,
    "revokedAt": iso(timedelta(minutes=-30)),
}
USAGE: dict[str, Any] = {
    "by": "model",
    "items": [
        {"key": "openai/gpt-4o", "requests": 3, "inputTokens": 1200, "outputTokens": 300, "cachedTokens": 100,
         "costUsd": 0.0123456},
        {"key": "local/llama", "requests": 2, "inputTokens": 10, "outputTokens": 5, "cachedTokens": 0,
         "costUsd": None},
    ],
}  # fmt: skip
BUDGET = {
    "id": B1,
    "scope": "agent",
    "scopeId": A1,
    "limitUsd": 12.5,
    "period": "daily",
    "spentUsd": 0.25,
    "remainingUsd": 12.25,
    "periodStart": iso(timedelta(hours=-3)),
    "periodEnd": iso(timedelta(hours=21, minutes=5)),
    "updatedAt": iso(timedelta(minutes=-1)),
}

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(autouse=True)
def _times_relative_to_now() -> None:
    """The rendered times ("in 7d", "30m ago") are relative to when a test runs, which in a full suite is
    minutes after this module was imported: re-anchor the fixtures' timestamps at each test's start."""
    global NOW
    NOW = datetime.now(UTC)
    KEY.update(expiresAt=iso(timedelta(days=7, minutes=5)), createdAt=iso(timedelta(hours=-2)))
    AGENT_KEY.update(createdAt=KEY["createdAt"], revokedAt=iso(timedelta(minutes=-30)))
    BUDGET.update(
        periodStart=iso(timedelta(hours=-3)),
        periodEnd=iso(timedelta(hours=21, minutes=5)),
        updatedAt=iso(timedelta(minutes=-1)),
    )


def ok(data: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"success": True, "data": data})


def fail(status: int, code: str, message: str, details: Any = None) -> httpx.Response:
    body = {"success": False, "error": {"code": code, "message": message, "details": details}}
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


def query(request: httpx.Request) -> dict[str, str]:
    return dict(request.url.params)


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


@pytest.fixture
def tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "is_tty", lambda: True)


# godel key create


def test_key_create_piped_prints_the_key_text_alone() -> None:
    seen: list[httpx.Request] = []
    handler = routes({("POST", "/api/v1/keys"): ok({**KEY, "key": KEY_TEXT}, 201)}, seen)
    result = invoke(
        handler, "key", "create", "--user", "me", "--models", "openai/gpt-4o, anthropic/claude", "--expires", "7d"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == KEY_TEXT + "\n"  # KEY=$(godel key create --user me) gets exactly the key
    assert result.stderr == ""
    assert [(r.method, r.url.path) for r in seen] == [("POST", "/api/v1/keys")]
    assert body(seen[0]) == {
        "scope": "user",
        "id": "me",
        "models": ["openai/gpt-4o", "anthropic/claude"],
        "expiresIn": 7 * 86400,
    }


def test_key_create_sends_only_what_was_given_and_json_prints_the_data() -> None:
    seen: list[httpx.Request] = []
    data = {**KEY, "scopeType": "team", "scopeId": "t1", "models": [], "expiresAt": None, "key": KEY_TEXT}
    result = invoke(routes({("POST", "/api/v1/keys"): ok(data, 201)}, seen), "key", "create", "--team", "t1", "--json")
    assert result.exit_code == 0, result.output
    assert result.stdout == json.dumps(data, indent=2) + "\n"
    assert body(seen[0]) == {"scope": "team", "id": "t1"}


def test_key_create_models_may_be_repeated() -> None:
    seen: list[httpx.Request] = []
    handler = routes({("POST", "/api/v1/keys"): ok({**KEY, "key": KEY_TEXT}, 201)}, seen)
    args = ("key", "create", "--user", "me", "--models", "a/b", "--models", "c/d,e/f", "--expires", "90")
    assert invoke(handler, *args).exit_code == 0
    assert body(seen[0])["models"] == ["a/b", "c/d", "e/f"]
    assert body(seen[0])["expiresIn"] == 90


def test_key_create_in_a_terminal_shows_the_key_and_says_it_is_shown_once(tty: None) -> None:
    handler = routes({("POST", "/api/v1/keys"): ok({**KEY, "key": KEY_TEXT}, 201)})
    result = invoke(handler, "key", "create", "--user", "me")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].strip() == KEY_TEXT
    assert "only time this key is shown" in result.stdout
    assert "user:me" in result.stdout and "openai/gpt-4o,anthropic/claude" in result.stdout
    assert "in 7d" in result.stdout


def test_key_create_for_an_agent_prefix_resolves_the_full_id() -> None:
    seen: list[httpx.Request] = []
    agents = {"items": [{"id": A1}], "pagination": {"hasMore": False, "cursor": None}}
    data = {**AGENT_KEY, "key": KEY_TEXT}
    handler = routes({("GET", "/api/v1/agents"): ok(agents), ("POST", "/api/v1/keys"): ok(data, 201)}, seen)
    result = invoke(handler, "key", "create", "--agent", A1[:6])
    assert result.exit_code == 0, result.output
    assert body(seen[-1]) == {"scope": "agent", "id": A1}


def test_a_full_agent_id_is_sent_without_a_lookup() -> None:
    seen: list[httpx.Request] = []
    handler = routes({("POST", "/api/v1/keys"): ok({**AGENT_KEY, "key": KEY_TEXT}, 201)}, seen)
    assert invoke(handler, "key", "create", "--agent", A1).exit_code == 0
    assert [r.url.path for r in seen] == ["/api/v1/keys"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("key", "create"), "missing scope: give one of --agent ID, --team ID or --user NAME"),
        (("key", "create", "--user", "me", "--team", "t"), "--team and --user exclude each other"),
        (("key", "list", "--agent", A1, "--user", "me"), "--agent and --user exclude each other"),
        (("budget", "set", "--usd", "5"), "missing scope"),
        (("budget", "set", "--usd", "5", "--agent", A1, "--team", "t"), "--agent and --team exclude each other"),
        (("budget", "show", "--team", "t", "--user", "u"), "--team and --user exclude each other"),
        (("key", "create", "--user", ""), "must not be empty"),
    ],
)
def test_scope_options_are_one_or_a_usage_error(args: tuple[str, ...], message: str) -> None:
    seen: list[httpx.Request] = []
    result = invoke(routes({}, seen), *args)
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.replace("│", " ").split())
    assert seen == []  # nothing was sent
    assert "Traceback" not in result.output


@pytest.mark.parametrize("expires", ["7x", "0", "0h", "-5", "soon", ""])
def test_a_bad_expiry_is_a_usage_error(expires: str) -> None:
    seen: list[httpx.Request] = []
    result = invoke(routes({}, seen), "key", "create", "--user", "me", "--expires", expires)
    assert result.exit_code == 2
    assert "--expires" in result.stderr
    assert seen == []


def test_an_api_error_exits_1_with_its_code() -> None:
    refusal = fail(400, "VALIDATION_ERROR", "unknown models: x/y", {"fields": [{"field": "models", "message": "no"}]})
    result = invoke(routes({("POST", "/api/v1/keys"): refusal}), "key", "create", "--user", "me", "--models", "x/y")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["error: unknown models: x/y (VALIDATION_ERROR)", "  models: no"]


# godel key list / revoke


def test_key_list_piped_sends_the_filters_and_prints_tab_separated_rows() -> None:
    seen: list[httpx.Request] = []
    handler = routes({("GET", "/api/v1/keys"): ok({"items": [KEY, AGENT_KEY]})}, seen)
    result = invoke(handler, "key", "list", "--agent", A1, "--revoked")
    assert result.exit_code == 0, result.output
    assert query(seen[0]) == {"scope": "agent", "id": A1, "revoked": "true"}
    lines = result.stdout.splitlines()
    assert lines[0] == "ID\tPREFIX\tSCOPE\tMODELS\tEXPIRES\tREVOKED\tCREATED"
    assert lines[1].split("\t") == [
        K1,
        "gdl_ab12",
        "user:me",
        "openai/gpt-4o,anthropic/claude",
        KEY["expiresAt"],
        "",
        KEY["createdAt"],
    ]
    assert lines[2].split("\t")[:6] == [K2, "gdl_zz99", f"agent:{A1}", "*", "", AGENT_KEY["revokedAt"]]
    for mark in ("\x1b[", "─", "│"):
        assert mark not in result.stdout


def test_key_list_without_filters_sends_none() -> None:
    seen: list[httpx.Request] = []
    result = invoke(routes({("GET", "/api/v1/keys"): ok({"items": []})}, seen), "key", "list")
    assert result.exit_code == 0, result.output
    assert query(seen[0]) == {}
    assert result.stdout == "ID\tPREFIX\tSCOPE\tMODELS\tEXPIRES\tREVOKED\tCREATED\n"


def test_key_list_json_prints_exactly_the_data() -> None:
    page = {"items": [KEY]}
    result = invoke(routes({("GET", "/api/v1/keys"): ok(page)}), "--json", "key", "list", "--user", "me")
    assert result.exit_code == 0, result.output
    assert result.stdout == json.dumps(page, indent=2) + "\n"


def test_key_list_in_a_terminal_shortens_ids_and_says_when(tty: None) -> None:
    result = invoke(routes({("GET", "/api/v1/keys"): ok({"items": [KEY, AGENT_KEY]})}), "key", "list", "--revoked")
    assert result.exit_code == 0, result.output
    assert K1[:8] in result.stdout and K1 not in result.stdout
    assert f"agent:{A1[:8]}" in result.stdout and A1 not in result.stdout
    assert "in 7d" in result.stdout and "never" in result.stdout and "30m ago" in result.stdout


def test_key_revoke_sends_delete_and_prints_the_id() -> None:
    seen: list[httpx.Request] = []
    revoked = {**KEY, "revokedAt": iso(timedelta(0))}
    result = invoke(routes({("DELETE", f"/api/v1/keys/{K1}"): ok(revoked)}, seen), "key", "revoke", K1)
    assert result.exit_code == 0, result.output
    assert [(r.method, r.url.path) for r in seen] == [("DELETE", f"/api/v1/keys/{K1}")]
    assert result.stdout == f"{K1}\n"


def test_key_revoke_json_prints_the_key() -> None:
    revoked = {**KEY, "revokedAt": iso(timedelta(0))}
    result = invoke(routes({("DELETE", f"/api/v1/keys/{K1}"): ok(revoked)}), "key", "revoke", K1, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == revoked


def test_key_revoke_resolves_a_unique_prefix_among_all_keys() -> None:
    seen: list[httpx.Request] = []
    table = {
        ("GET", "/api/v1/keys"): ok({"items": [KEY, AGENT_KEY]}),
        ("DELETE", f"/api/v1/keys/{K2}"): ok(AGENT_KEY),
    }
    result = invoke(routes(table, seen), "key", "revoke", "7d1c99")
    assert result.exit_code == 0, result.output
    assert query(seen[0]) == {"revoked": "true"}
    assert seen[-1].method == "DELETE" and seen[-1].url.path == f"/api/v1/keys/{K2}"


def test_key_revoke_of_an_ambiguous_prefix_is_refused() -> None:
    seen: list[httpx.Request] = []
    result = invoke(routes({("GET", "/api/v1/keys"): ok({"items": [KEY, AGENT_KEY]})}, seen), "key", "revoke", "7d1c")
    assert result.exit_code == 1
    assert result.stderr == f"error: '7d1c' matches 2 keys ({K1}, {K2}); give more of the id (AMBIGUOUS_ID)\n"
    assert all(r.method == "GET" for r in seen)


def test_key_revoke_of_an_unknown_key_is_the_servers_not_found() -> None:
    not_found = fail(404, "KEY_NOT_FOUND", "key 'nope' not found")
    table = {("GET", "/api/v1/keys"): ok({"items": [KEY]}), ("DELETE", "/api/v1/keys/nope"): not_found}
    result = invoke(routes(table), "key", "revoke", "nope")
    assert result.exit_code == 1
    assert result.stderr == "error: key 'nope' not found (KEY_NOT_FOUND)\n"


# godel usage


def test_usage_sends_by_and_times_and_prints_rows_piped() -> None:
    seen: list[httpx.Request] = []
    before = datetime.now(UTC).replace(microsecond=0)
    handler = routes({("GET", "/api/v1/usage"): ok(USAGE)}, seen)
    result = invoke(handler, "usage", "--by", "model", "--since", "24h", "--until", "2026-11-22T00:00:00")
    after = datetime.now(UTC)
    assert result.exit_code == 0, result.output
    params = query(seen[0])
    assert params["by"] == "model" and params["until"] == "2026-11-22T00:00:00Z"
    assert params["since"].endswith("Z")
    since = datetime.fromisoformat(params["since"])
    assert before - timedelta(hours=24) <= since <= after - timedelta(hours=24)
    assert result.stdout.splitlines() == [
        "KEY\tREQUESTS\tIN\tOUT\tCACHED\tCOST",
        "openai/gpt-4o\t3\t1200\t300\t100\t0.0123",
        "local/llama\t2\t10\t5\t0\t",
    ]  # no total row when piped: every line is data


def test_usage_defaults_send_no_times() -> None:
    seen: list[httpx.Request] = []
    result = invoke(routes({("GET", "/api/v1/usage"): ok({"by": "agent", "items": []})}, seen), "usage")
    assert result.exit_code == 0, result.output
    assert query(seen[0]) == {"by": "agent"}


def test_usage_json_prints_exactly_the_data() -> None:
    result = invoke(routes({("GET", "/api/v1/usage"): ok(USAGE)}), "usage", "--by", "model", "--json")
    assert result.exit_code == 0, result.output
    assert result.stdout == json.dumps(USAGE, indent=2) + "\n"


def test_usage_in_a_terminal_has_a_total_row_and_dashes_for_unpriced(tty: None) -> None:
    result = invoke(routes({("GET", "/api/v1/usage"): ok(USAGE)}), "usage", "--by", "model")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    assert rows["openai/gpt-4o"][1:] == ["3", "1200", "300", "100", "0.0123"]
    assert rows["local/llama"][-1] == "-"
    assert rows["TOTAL"][1:] == ["5", "1210", "305", "100", "0.0123"]


def test_usage_by_agent_shortens_agent_ids_in_a_terminal(tty: None) -> None:
    data = {"by": "agent", "items": [{**USAGE["items"][0], "key": A1}]}
    result = invoke(routes({("GET", "/api/v1/usage"): ok(data)}), "usage")
    assert A1[:8] in result.stdout and A1 not in result.stdout


@pytest.mark.parametrize("args", [("--since", "yesterday"), ("--since", "24"), ("--until", "7x"), ("--by", "bogus")])
def test_usage_bad_parameters_exit_2(args: tuple[str, ...]) -> None:
    seen: list[httpx.Request] = []
    result = invoke(routes({}, seen), "usage", *args)
    assert result.exit_code == 2
    assert args[0] in result.stderr
    assert seen == []


# godel budget


def test_budget_set_puts_the_limit_and_prints_the_id() -> None:
    seen: list[httpx.Request] = []
    handler = routes({("PUT", "/api/v1/budgets"): ok(BUDGET)}, seen)
    result = invoke(handler, "budget", "set", "--agent", A1, "--usd", "12.5", "--period", "daily")
    assert result.exit_code == 0, result.output
    assert [(r.method, r.url.path) for r in seen] == [("PUT", "/api/v1/budgets")]
    assert body(seen[0]) == {"scope": "agent", "id": A1, "usd": 12.5, "period": "daily"}
    assert result.stdout == f"{B1}\n"


def test_budget_set_period_defaults_to_total_and_json_prints_the_data() -> None:
    seen: list[httpx.Request] = []
    data = {**BUDGET, "scope": "user", "scopeId": "me", "period": "total", "periodEnd": None}
    handler = routes({("PUT", "/api/v1/budgets"): ok(data)}, seen)
    result = invoke(handler, "budget", "set", "--user", "me", "--usd", "3", "--json")
    assert result.exit_code == 0, result.output
    assert body(seen[0]) == {"scope": "user", "id": "me", "usd": 3.0, "period": "total"}
    assert result.stdout == json.dumps(data, indent=2) + "\n"


def test_budget_set_in_a_terminal_says_what_was_set(tty: None) -> None:
    result = invoke(routes({("PUT", "/api/v1/budgets"): ok(BUDGET)}), "budget", "set", "--agent", A1, "--usd", "12.5")
    assert result.exit_code == 0, result.output
    assert f"budget {B1}: 12.5000 USD daily for agent:{A1}" in result.stdout
    assert "spent 0.2500, remaining 12.2500" in result.stdout


@pytest.mark.parametrize("amount", ["0", "-1", "nan", "inf", "lots"])
def test_budget_set_needs_a_positive_amount(amount: str) -> None:
    seen: list[httpx.Request] = []
    result = invoke(routes({}, seen), "budget", "set", "--team", "t", "--usd", amount)
    assert result.exit_code == 2
    assert "--usd" in result.stderr
    assert seen == []


def test_budget_set_without_usd_or_with_a_bad_period_exits_2() -> None:
    assert invoke(routes({}), "budget", "set", "--team", "t").exit_code == 2
    assert invoke(routes({}), "budget", "set", "--team", "t", "--usd", "1", "--period", "weekly").exit_code == 2


def test_budget_show_piped_sends_the_filter_and_prints_rows() -> None:
    seen: list[httpx.Request] = []
    result = invoke(
        routes({("GET", "/api/v1/budgets"): ok({"items": [BUDGET]})}, seen), "budget", "show", "--team", "t1"
    )
    assert result.exit_code == 0, result.output
    assert query(seen[0]) == {"scope": "team", "id": "t1"}
    assert result.stdout.splitlines() == [
        "SCOPE\tID\tPERIOD\tLIMIT\tSPENT\tREMAINING\tPERIOD END",
        f"agent:{A1}\t{B1}\tdaily\t12.5000\t0.2500\t12.2500\t{BUDGET['periodEnd']}",
    ]


def test_budget_show_json_prints_exactly_the_data() -> None:
    seen: list[httpx.Request] = []
    page = {"items": [BUDGET]}
    result = invoke(routes({("GET", "/api/v1/budgets"): ok(page)}, seen), "budget", "show", "--json")
    assert result.exit_code == 0, result.output
    assert query(seen[0]) == {}
    assert result.stdout == json.dumps(page, indent=2) + "\n"


def test_budget_show_in_a_terminal(tty: None) -> None:
    total = {**BUDGET, "id": "b2", "scope": "user", "scopeId": "me", "period": "total", "periodEnd": None}
    result = invoke(routes({("GET", "/api/v1/budgets"): ok({"items": [BUDGET, total]})}), "budget", "show")
    assert result.exit_code == 0, result.output
    assert f"agent:{A1[:8]}" in result.stdout and B1[:8] in result.stdout and B1 not in result.stdout
    assert "in 21h" in result.stdout and "12.2500" in result.stdout


def test_budget_rm_deletes_and_prints_the_id() -> None:
    seen: list[httpx.Request] = []
    deleted = {"id": B1, "deleted": True}
    result = invoke(routes({("DELETE", f"/api/v1/budgets/{B1}"): ok(deleted)}, seen), "budget", "rm", B1)
    assert result.exit_code == 0, result.output
    assert [(r.method, r.url.path) for r in seen] == [("DELETE", f"/api/v1/budgets/{B1}")]
    assert result.stdout == f"{B1}\n"


def test_budget_rm_json_and_prefix() -> None:
    seen: list[httpx.Request] = []
    deleted = {"id": B1, "deleted": True}
    table = {("GET", "/api/v1/budgets"): ok({"items": [BUDGET]}), ("DELETE", f"/api/v1/budgets/{B1}"): ok(deleted)}
    result = invoke(routes(table, seen), "--json", "budget", "rm", B1[:6])
    assert result.exit_code == 0, result.output
    assert seen[-1].url.path == f"/api/v1/budgets/{B1}"
    assert json.loads(result.stdout) == deleted


# Parsing


FIXED = datetime(2026, 11, 22, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", "2026-11-21T12:00:00Z"),
        ("7d", "2026-11-15T12:00:00Z"),
        ("30m", "2026-11-22T11:30:00Z"),
        ("90s", "2026-11-22T11:58:30Z"),
        ("1w", "2026-11-15T12:00:00Z"),
        ("2026-11-01", "2026-11-01T00:00:00Z"),
        ("2026-11-01T10:00:00", "2026-11-01T10:00:00Z"),
        ("2026-11-01T10:00:00Z", "2026-11-01T10:00:00Z"),
        ("2026-11-01T10:00:00+02:00", "2026-11-01T08:00:00Z"),
    ],
)
def test_parse_time(text: str, expected: str) -> None:
    assert parse_time(text, "--since", now=FIXED) == expected


@pytest.mark.parametrize("text", ["", "24", "h", "-1h", "3 days", "2026-13-01", "yesterday"])
def test_parse_time_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_time(text, "--since", now=FIXED)


def test_parse_duration_and_expires() -> None:
    assert parse_duration("12h", bare_seconds=False) == 43200
    assert parse_duration("1.5H", bare_seconds=False) == 5400
    assert parse_duration("600", bare_seconds=False) is None
    assert parse_duration("600", bare_seconds=True) == 600
    assert parse_expires("30m") == 1800 and isinstance(parse_expires("30m"), int)
    assert parse_expires("0.5") == 0.5


def test_client_usage_sends_datetimes_as_iso() -> None:
    seen: list[httpx.Request] = []
    transport = httpx.MockTransport(routes({("GET", "/api/v1/usage"): ok({"by": "day", "items": []})}, seen))
    with GodelClient("http://godel.test", transport=transport) as godel:
        godel.usage(by="day", since=datetime(2026, 11, 1), until="2026-11-02T00:00:00Z")
    assert query(seen[0]) == {"by": "day", "since": "2026-11-01T00:00:00+00:00", "until": "2026-11-02T00:00:00Z"}
