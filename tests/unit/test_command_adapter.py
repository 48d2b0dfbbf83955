"""The ``command`` agent adapter: options, launch, stream protocol, outcome."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from godel.agents import adapter_names, get_adapter
from godel.agents.command import CommandAdapter
from godel.core.ports import AgentSignal, Evidence, LaunchRequest, SignalKind
from godel.errors import UnknownAgentKindError, ValidationError


def request(tmp_path: Path, **options: object) -> LaunchRequest:
    return LaunchRequest(
        agent_id="a-1",
        task="fix the bug; rm -rf / # not a shell injection",
        model="scripted/test",
        workspace=tmp_path,
        config_dir=tmp_path / "cfg",
        options=dict(options),
    )


def evidence(exit_code: int | None, *signals: AgentSignal, timed_out: bool = False) -> Evidence:
    return Evidence(exit_code=exit_code, signals=list(signals), changed_files=0, commits=0, timed_out=timed_out)


# ------------------------------------------------------------------------------------------- registry


def test_registry_returns_the_command_adapter() -> None:
    assert "command" in adapter_names()
    adapter = get_adapter("command")
    assert isinstance(adapter, CommandAdapter)
    assert adapter.name == "command"


def test_registry_lists_valid_names_on_a_miss() -> None:
    with pytest.raises(UnknownAgentKindError, match="command") as info:
        get_adapter("nope")
    assert info.value.status_code == 400
    assert info.value.fields[0].field == "kind"


# ------------------------------------------------------------------------------------------- validate


def test_validate_accepts_a_command() -> None:
    CommandAdapter().validate({"command": "echo hi", "env": {"A": "1"}})


@pytest.mark.parametrize("options", [{}, {"command": ""}, {"command": "   "}, {"command": 42}])
def test_validate_requires_a_command(options: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as info:
        CommandAdapter().validate(options)
    assert [f.field for f in info.value.fields] == ["command"]


def test_validate_rejects_non_string_env() -> None:
    with pytest.raises(ValidationError) as info:
        CommandAdapter().validate({"command": "true", "env": {"A": 1}})
    assert [f.field for f in info.value.fields] == ["env"]


# --------------------------------------------------------------------------------------------- launch


def test_launch_builds_argv_with_the_task_as_dollar_one(tmp_path: Path) -> None:
    req = request(tmp_path, command='echo "$1"')
    spec = CommandAdapter().launch(req)
    assert spec.argv == ["/bin/sh", "-c", 'echo "$1"', "godel-agent", req.task]
    assert spec.cwd == tmp_path


def test_launch_env_carries_godel_variables_and_options_env(tmp_path: Path) -> None:
    req = request(tmp_path, command="true", env={"EXTRA": "yes", "GODEL_TASK": "spoofed"})
    req.gateway_url = "http://127.0.0.1:7373/proxy/v1"
    req.gateway_key = "gk-virtual"
    env = CommandAdapter().launch(req).env
    assert env["GODEL_TASK"] == req.task  # Godel's own variables win
    assert env["GODEL_AGENT_ID"] == "a-1"
    assert env["GODEL_WORKSPACE"] == str(tmp_path)
    assert env["GODEL_MODEL"] == "scripted/test"
    assert env["EXTRA"] == "yes"
    assert env["GODEL_GATEWAY_URL"] == "http://127.0.0.1:7373/proxy/v1"
    assert env["GODEL_GATEWAY_KEY"] == "gk-virtual"


def test_launch_env_is_only_what_the_adapter_adds(tmp_path: Path) -> None:
    # The runtime adds a minimal inherited environment; the adapter must not copy the server's.
    env = CommandAdapter().launch(request(tmp_path, command="true")).env
    assert set(env) == {"GODEL_TASK", "GODEL_AGENT_ID", "GODEL_WORKSPACE", "GODEL_MODEL"}


def test_launch_validates(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        CommandAdapter().launch(request(tmp_path))


def test_launched_argv_really_passes_the_task_verbatim(tmp_path: Path) -> None:
    req = request(tmp_path, command='printf "%s|%s" "$1" "$GODEL_TASK"')
    spec = CommandAdapter().launch(req)
    out = subprocess.run(spec.argv, env=spec.env, capture_output=True, text=True, check=True).stdout
    assert out == f"{req.task}|{req.task}"


# --------------------------------------------------------------------------------------------- parser


def test_plain_lines_are_not_signals() -> None:
    parser = CommandAdapter().parser()
    assert parser.feed("stdout", "hello") == []
    assert parser.feed("stdout", "GODEL_RESULT:no-space") == []
    assert parser.feed("stdout", " GODEL_RESULT: indented") == []
    assert parser.finish() == []


def test_result_line_is_a_final_signal() -> None:
    parser = CommandAdapter().parser()
    assert parser.feed("stdout", "GODEL_RESULT: all 12 tests pass") == [
        AgentSignal(SignalKind.FINAL, {"result": "all 12 tests pass"})
    ]


def test_needs_input_line() -> None:
    parser = CommandAdapter().parser()
    assert parser.feed("stdout", "GODEL_NEEDS_INPUT: which branch?") == [
        AgentSignal(SignalKind.NEEDS_INPUT, {"prompt": "which branch?"})
    ]


def test_stderr_lines_are_diagnostics_only() -> None:
    assert CommandAdapter().parser().feed("stderr", "GODEL_RESULT: nope") == []


# -------------------------------------------------------------------------------------------- outcome


def test_exit_zero_is_success() -> None:
    outcome = CommandAdapter().outcome(evidence(0))
    assert outcome.success
    assert outcome.result is None


def test_nonzero_exit_is_failure_with_reason() -> None:
    outcome = CommandAdapter().outcome(evidence(3))
    assert not outcome.success
    assert outcome.reason == "exited 3"


def test_signal_exit_is_named() -> None:
    outcome = CommandAdapter().outcome(evidence(137))
    assert not outcome.success
    assert "SIGKILL" in outcome.reason


def test_timeout_is_failure_even_with_exit_zero() -> None:
    outcome = CommandAdapter().outcome(evidence(0, timed_out=True))
    assert not outcome.success
    assert outcome.reason == "timed out"


def test_missing_exit_code_is_failure() -> None:
    assert not CommandAdapter().outcome(evidence(None)).success


def test_result_comes_from_the_last_final_signal() -> None:
    signals = [
        AgentSignal(SignalKind.FINAL, {"result": "first"}),
        AgentSignal(SignalKind.ERROR, {"message": "x"}),
        AgentSignal(SignalKind.FINAL, {"result": "second"}),
    ]
    ok = CommandAdapter().outcome(evidence(0, *signals))
    assert (ok.success, ok.result) == (True, "second")
    failed = CommandAdapter().outcome(evidence(1, *signals))
    assert (failed.success, failed.result) == (False, "second")
