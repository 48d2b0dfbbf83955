"""The Claude Code stream parser and launch, on streams recorded from the real CLI (2.1.330) against the
scripted model (tests/fixtures/agents/claude)."""

from __future__ import annotations

from pathlib import Path

import pytest

from godel.agents.base import judge
from godel.agents.claude import ClaudeAdapter, ClaudeParser
from godel.core.ports import AgentSignal, Evidence, LaunchRequest, ModelEndpoint, SignalKind
from godel.errors import ValidationError

FIXTURES = Path(__file__).parents[2] / "fixtures" / "agents" / "claude"


def parse(name: str) -> list[AgentSignal]:
    parser = ClaudeParser()
    out: list[AgentSignal] = []
    for line in (FIXTURES / name).read_text().splitlines():
        out.extend(parser.feed("stdout", line))
    out.extend(parser.finish())
    return out


def of(signals: list[AgentSignal], kind: SignalKind) -> list[dict]:
    return [s.data for s in signals if s.kind is kind]


def verdict(signals: list[AgentSignal], exit_code: int) -> tuple[bool, str, bool]:
    kept = [s for s in signals if s.kind in (SignalKind.FINAL, SignalKind.ERROR)]
    o = judge("claude", Evidence(exit_code=exit_code, signals=kept, changed_files=1, commits=0))
    return o.success, o.reason, o.provider_error


def test_edit_gives_session_tool_call_result_message_usage_and_final() -> None:
    signals = parse("edit.jsonl")
    assert [s.kind for s in signals] == [
        SignalKind.SESSION, SignalKind.TOOL_CALL, SignalKind.TOOL_RESULT, SignalKind.MESSAGE, SignalKind.USAGE,
        SignalKind.FINAL,
    ]  # fmt: skip
    assert of(signals, SignalKind.SESSION) == [{"sessionId": "d959f3ff-e2d2-4c40-bbdc-f3a48cd83047"}]
    call = of(signals, SignalKind.TOOL_CALL)[0]
    assert call["name"] == "Write" and call["id"] == "toolu_1_0"
    assert call["input"] == {"file_path": "/tmp/claude-rec/repo/hello.txt", "content": "hello from claude\n"}
    result = of(signals, SignalKind.TOOL_RESULT)[0]
    assert result["id"] == "toolu_1_0" and result["isError"] is False
    assert result["output"].startswith("File created successfully")
    assert of(signals, SignalKind.MESSAGE) == [{"role": "assistant", "text": "Created hello.txt."}]
    # the run's total from the result event (the scripted model reported 30+50 in, 5+5 out)
    [u] = of(signals, SignalKind.USAGE)
    assert u == {"model": "scripted-model", "inputTokens": 80, "outputTokens": 10, "cachedTokens": 0,
                 "costUsd": pytest.approx(0.00052)}  # fmt: skip
    assert of(signals, SignalKind.FINAL) == [
        {"result": "Created hello.txt.", "success": True, "reason": "claude finished (completed, 2 turn(s))"}
    ]
    assert verdict(signals, 0)[0] is True


def test_endpoint_down_is_a_provider_error_and_a_failed_final() -> None:
    signals = parse("endpoint-down.jsonl")
    [err] = of(signals, SignalKind.ERROR)
    assert err["provider"] is True and "Connection refused" in err["message"]
    [fin] = of(signals, SignalKind.FINAL)
    assert fin["success"] is False and "ECONNREFUSED" in fin["reason"]
    assert of(signals, SignalKind.USAGE) == []  # no tokens and no cost: nothing to meter
    assert of(signals, SignalKind.MESSAGE) == []  # the synthetic error message is not the model's text
    success, reason, provider = verdict(signals, 1)
    assert not success and "Connection refused" in reason and provider


def test_retries_are_reported_as_provider_errors() -> None:
    signals = parse("endpoint-down-retries.jsonl")
    errors = of(signals, SignalKind.ERROR)
    assert len(errors) == 3 and all(e["provider"] for e in errors)
    assert errors[0]["message"].startswith("model request failed (unknown); retry 1 of 2")
    assert "Connection refused" in errors[-1]["message"]
    assert verdict(signals, 1)[2] is True


def test_scripted_error_mid_run_fails_with_the_message_and_keeps_the_usage() -> None:
    signals = parse("error-mid-run.jsonl")
    assert len(of(signals, SignalKind.TOOL_CALL)) == 1 and len(of(signals, SignalKind.TOOL_RESULT)) == 1
    [err] = of(signals, SignalKind.ERROR)
    assert err["provider"] is True and "500 scripted failure mid-run" in err["message"]
    [u] = of(signals, SignalKind.USAGE)
    assert (u["inputTokens"], u["outputTokens"]) == (30, 5)
    success, reason, provider = verdict(signals, 1)
    assert not success and "scripted failure mid-run" in reason and provider


def test_unavailable_tool_gives_an_error_tool_result() -> None:
    signals = parse("tool-unavailable.jsonl")
    [result] = of(signals, SignalKind.TOOL_RESULT)
    assert result["isError"] is True and "No such tool available: Write" in result["output"]


def test_resumed_run_reports_the_same_session() -> None:
    signals = parse("resume.jsonl")
    assert of(signals, SignalKind.SESSION) == [{"sessionId": "46d2dd4e-3a48-4985-b1b9-0f00380c509f"}]
    assert of(signals, SignalKind.FINAL)[0]["success"] is True


def test_stderr_and_non_json_lines_are_ignored() -> None:
    parser = ClaudeParser()
    assert parser.feed("stderr", (FIXTURES / "stderr.txt").read_text().strip()) == []
    assert parser.feed("stdout", "not json") == []
    assert parser.finish() == []
    # cut off before its result event: no final, judged as a failure
    assert verdict(parse_lines((FIXTURES / "edit.jsonl").read_text().splitlines()[:-1]), 0)[0] is False


def parse_lines(lines: list[str]) -> list[AgentSignal]:
    parser = ClaudeParser()
    return [s for line in lines for s in parser.feed("stdout", line)] + parser.finish()


def request(tmp_path: Path, **kw: object) -> LaunchRequest:
    ep = ModelEndpoint("scripted-anthropic", "anthropic", "http://127.0.0.1:9", "scripted-model", None)
    return LaunchRequest(agent_id="a1", task="-do it", model="m", workspace=tmp_path / "ws",
                         config_dir=tmp_path / "run" / "config", endpoint=ep, **kw)  # type: ignore[arg-type]  # fmt: skip


def test_launch_is_headless_isolated_bounded_and_resumes(tmp_path: Path) -> None:
    binary = tmp_path / "claude"
    binary.write_text("")
    opts = {"binary": str(binary), "tools": ["Read", "Write"], "disallowed_tools": ["WebFetch"]}
    spec = ClaudeAdapter().launch(request(tmp_path, options=opts, cli_retries=2, resume_session="s-1"))
    argv = spec.argv
    assert argv[0] == str(binary) and argv[-2:] == ["--", "-do it"]
    assert argv[argv.index("--model") + 1] == "scripted-model"
    assert argv[argv.index("--resume") + 1] == "s-1"
    assert argv[argv.index("--tools") + 1] == "Read,Write"
    assert argv[argv.index("--disallowedTools") + 1] == "WebFetch"
    assert {"-p", "--verbose", "--dangerously-skip-permissions"} <= set(argv)
    assert argv[argv.index("--output-format") + 1] == "stream-json"
    env = spec.env
    assert env["CLAUDE_CONFIG_DIR"] == str(tmp_path / "run" / "config")
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9" and env["ANTHROPIC_API_KEY"]
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "2" and env["IS_SANDBOX"] == "1"
    assert spec.cwd == tmp_path / "ws"


def test_options_are_validated() -> None:
    with pytest.raises(ValidationError):
        ClaudeAdapter().validate({"tools": "Write"})
    with pytest.raises(ValidationError):
        ClaudeAdapter().validate({"allowed": ["Write"]})
    ClaudeAdapter().validate({"tools": [], "disallowed_tools": ["Bash(rm *)"]})
