"""Role profiles: the built-ins, godel.toml's [roles] laid over them, a team's own profiles, tool allowlists."""

from __future__ import annotations

from pathlib import Path

import pytest

from godel.agents.roles import BUILTIN_ROLES, load_roles, role_named, takes_tools, with_overrides
from godel.errors import UnknownAgentKindError, UnknownRoleError, ValidationError
from godel.settings import Settings


def test_builtins() -> None:
    assert set(BUILTIN_ROLES) == {"coordinator", "worker", "reviewer", "refinery", "monitor"}
    gates = {name: role.gate for name, role in BUILTIN_ROLES.items()}
    assert gates == {"coordinator": "none", "worker": "none", "reviewer": "verdict", "refinery": "merge",
                     "monitor": "monitor"}  # fmt: skip
    assert "VERDICT: approve" in BUILTIN_ROLES["reviewer"].preamble
    assert "JSON list" in BUILTIN_ROLES["coordinator"].preamble
    assert BUILTIN_ROLES["worker"].tools_for("pi") is None  # every tool
    assert BUILTIN_ROLES["coordinator"].tools_for("pi") == ["read", "grep", "find", "ls"]
    assert BUILTIN_ROLES["coordinator"].tools_for("claude") == ["Read", "Grep", "Glob"]
    assert BUILTIN_ROLES["coordinator"].tools_for("codex") is None  # no list for that CLI


def test_which_clis_take_an_allowlist() -> None:
    assert {k for k in ("pi", "claude", "gemini", "codex", "aider", "command") if takes_tools(k)} == {
        "pi", "claude", "gemini",
    }  # fmt: skip


def test_godel_toml_overrides_key_by_key_and_adds_roles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "godel.toml"
    toml.write_text(
        "[roles.reviewer]\n"
        'model = "anthropic/claude-sonnet"\n'
        "[roles.reviewer.tools]\n"
        'pi = ["read"]\n'
        '"*" = ["view"]\n'
        "[roles.tester]\n"
        'preamble = "Run the tests."\n'
        'tools = ["bash", "read"]\n'
        'agent = "pi"\n'
        'gate = "verdict"\n'
    )
    monkeypatch.setenv("GODEL_CONFIG", str(toml))
    roles = load_roles(Settings().roles)
    reviewer = roles["reviewer"]
    assert reviewer.model == "anthropic/claude-sonnet"
    assert reviewer.gate == "verdict" and "VERDICT" in reviewer.preamble  # kept from the built-in
    assert reviewer.tools_for("pi") == ["read"] and reviewer.tools_for("claude") == ["view"]
    tester = roles["tester"]
    assert (tester.agent, tester.gate, tester.tools_for("claude")) == ("pi", "verdict", ["bash", "read"])
    assert roles["worker"] == BUILTIN_ROLES["worker"]


def test_team_profiles_override_for_that_team_only() -> None:
    base = load_roles({})
    mine = with_overrides(base, {"worker": {"model": "p/m"}, "critic": {"gate": "verdict", "preamble": "Be harsh."}})
    assert mine["worker"].model == "p/m" and base["worker"].model is None
    assert mine["critic"].gate == "verdict" and mine["critic"].tools_for("pi") is None


@pytest.mark.parametrize(
    ("raw", "error", "field"),
    [
        ({"gate": "sometimes"}, ValidationError, "roles.x.gate"),
        ({"colour": "red"}, ValidationError, "roles.x.colour"),
        ({"tools": "read"}, ValidationError, "roles.x.tools"),
        ({"tools": {"pi": [1]}}, ValidationError, "roles.x.tools.pi"),
        ({"preamble": 3}, ValidationError, "roles.x.preamble"),
        ({"agent": "robot"}, UnknownAgentKindError, "kind"),
    ],
)
def test_bad_profiles_are_refused(raw: dict, error: type[Exception], field: str) -> None:
    with pytest.raises(error) as info:
        load_roles({"x": raw})
    assert field in [f.field for f in info.value.fields]  # type: ignore[attr-defined]


def test_unknown_role_lists_the_known_ones() -> None:
    with pytest.raises(UnknownRoleError, match="known roles: coordinator, monitor, refinery, reviewer, worker"):
        role_named(load_roles({}), "wizard", field="roles.worker")


def test_profile_as_dict_round_trips_tools() -> None:
    shown = BUILTIN_ROLES["reviewer"].as_dict()
    assert shown["gate"] == "verdict" and shown["tools"]["pi"][-1] == "bash"
