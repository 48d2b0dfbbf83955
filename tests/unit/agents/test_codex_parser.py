"""The codex parser on streams recorded from the real CLI (codex 0.169.0 against the scripted model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from godel.agents.base import json_line
from godel.agents.codex import CodexAdapter, CodexParser, thread_usage
from godel.core.ports import AgentSignal, LaunchRequest, ModelEndpoint, SignalKind
from godel.errors import ValidationError

FIXTURES = Path(__file__).parents[2] / "fixtures" / "agents" / "codex"


def parse(name: str, parser: CodexParser | None = None) -> list[AgentSignal]:
    parser = parser or CodexParser("create hello.txt")
    out: list[AgentSignal] = []
    for line in (FIXTURES / name).read_text().splitlines():
        out += parser.feed("stdout", line)
    return out + parser.finish()


def of(signals: list[AgentSignal], kind: SignalKind) -> list[dict]:
    return [s.data for s in signals if s.kind is kind]


def test_edit_stream() -> None:
    sig = parse("edit.jsonl")
    assert [s.kind for s in sig] == [
        SignalKind.SESSION, SignalKind.MESSAGE, SignalKind.TOOL_CALL, SignalKind.TOOL_RESULT, SignalKind.MESSAGE,
        SignalKind.USAGE, SignalKind.FINAL,
    ]  # fmt: skip
    assert of(sig, SignalKind.SESSION) == [{"sessionId": "01a20126-d34b-7b93-a33f-bf0c1c4a88d7"}]
    assert of(sig, SignalKind.MESSAGE) == [
        {"role": "user", "text": "create hello.txt"},
        {"role": "assistant", "text": "Created hello.txt."},
    ]
    (call,) = of(sig, SignalKind.TOOL_CALL)
    assert call["id"] == "item_1" and call["name"] == "command_execution"
    assert "hello.txt" in call["input"]["command"]
    assert of(sig, SignalKind.TOOL_RESULT) == [{"id": "item_1", "output": "", "isError": False}]
    # two model calls of 40 and 60 input tokens (10 per input item) and 5 output tokens each
    assert of(sig, SignalKind.USAGE) == [
        {"model": None, "inputTokens": 100, "outputTokens": 10, "cachedTokens": 0, "costUsd": None}
    ]
    assert of(sig, SignalKind.FINAL) == [
        {"result": "Created hello.txt.", "success": True, "reason": "codex completed the turn"}
    ]
    # the "Model metadata ... not found" warning item is not an error of the run
    assert of(sig, SignalKind.ERROR) == []


def test_endpoint_down_is_a_provider_error_and_a_failed_final() -> None:
    sig = parse("endpoint-down.jsonl")
    assert of(sig, SignalKind.ERROR) == [{"message": "Connection failed: error sending request", "provider": True}]
    (fin,) = of(sig, SignalKind.FINAL)
    assert fin["success"] is False and "Connection failed" in fin["reason"]
    assert of(sig, SignalKind.USAGE) == []


def test_error_mid_run_after_a_tool_call() -> None:
    sig = parse("error-mid-run.jsonl")
    assert len(of(sig, SignalKind.TOOL_RESULT)) == 1
    # codex shows its own text for an HTTP 500, not the server's message
    (err,) = of(sig, SignalKind.ERROR)
    assert err["provider"] is True and "high demand" in err["message"]
    (fin,) = of(sig, SignalKind.FINAL)
    assert fin["success"] is False and fin["reason"].startswith("codex turn failed: ")


def test_retry_notice_then_the_fatal_error_once() -> None:
    sig = parse("error-retried.jsonl")
    messages = [e["message"] for e in of(sig, SignalKind.ERROR)]
    assert len(messages) == 2 and messages[0].startswith("Reconnecting... 1/1")
    assert of(sig, SignalKind.FINAL)[0]["success"] is False


def test_http_400_body_is_reduced_to_its_message() -> None:
    sig = parse("http-400.jsonl")
    assert of(sig, SignalKind.ERROR) == [{"message": "scripted 400 failure", "provider": True}]
    assert of(sig, SignalKind.FINAL)[0]["reason"] == "codex turn failed: scripted 400 failure"


def test_resumed_thread_reports_only_this_runs_usage() -> None:
    # turn.completed of a resumed thread carries the thread's total (here 180 in, 15 out); 100/10 came before
    sig = parse("resume.jsonl", CodexParser("thanks", baseline={"input_tokens": 100, "output_tokens": 10}))
    assert of(sig, SignalKind.USAGE) == [
        {"model": None, "inputTokens": 80, "outputTokens": 5, "cachedTokens": 0, "costUsd": None}
    ]
    assert of(sig, SignalKind.SESSION) == [{"sessionId": "01a20126-d34b-7b93-a33f-bf0c1c4a88d7"}]
    assert of(sig, SignalKind.FINAL)[0]["success"] is True


def test_no_turn_event_gives_no_final() -> None:
    parser = CodexParser()
    lines = (FIXTURES / "edit.jsonl").read_text().splitlines()[:4]  # cut off while the command runs
    for line in lines:
        parser.feed("stdout", line)
    assert parser.finish() == []
    assert parser.feed("stderr", "Reading additional input from stdin...") == []


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("resume-unknown-thread.stderr.txt", "no rollout found for thread id"),
        ("bad-config.stderr.txt", "unknown variant `bogus`"),
    ],
)
def test_start_up_errors_on_stderr(name: str, text: str) -> None:
    parser = CodexParser()
    sig = [s for line in (FIXTURES / name).read_text().splitlines() for s in parser.feed("stderr", line)]
    (err,) = of(sig + parser.finish(), SignalKind.ERROR)
    assert err["provider"] is False and err["message"].startswith("Error") and text in err["message"]


def test_launch_config_resume_and_baseline(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    thread = "01a20126-d34b-7b93-a33f-bf0c1c4a88d7"
    rollout = cfg / "sessions" / "2026" / "11" / "22" / f"rollout-2026-11-22T02-47-31-{thread}.jsonl"
    rollout.parent.mkdir(parents=True)
    rollout.write_text(
        '{"type":"event_msg","payload":{"type":"token_count","info":{"total_token_usage":'
        '{"input_tokens":100,"cached_input_tokens":0,"output_tokens":10}}}}\n'
    )
    ep = ModelEndpoint("scripted-responses", "openai-responses", "http://127.0.0.1:9/v1", "scripted-model", None)
    req = LaunchRequest(
        agent_id="a", task="-do it", model="m", workspace=tmp_path, config_dir=cfg, endpoint=ep,
        options={"binary": "/bin/true", "config": {"model_verbosity": "low"}}, cli_retries=2, resume_session=thread,
    )  # fmt: skip
    adapter = CodexAdapter()
    spec = adapter.launch(req)
    assert spec.argv[1:3] == ["exec", "resume"] and spec.argv[-3:] == ["--", thread, "-do it"]
    assert ["-c", 'model_verbosity="low"'] == spec.argv[spec.argv.index("-c") : spec.argv.index("-c") + 2]
    assert spec.env["CODEX_HOME"] == str(cfg) and spec.env["GODEL_CODEX_API_KEY"] == "unused"
    toml = spec.files[cfg / "config.toml"]
    for line in ('base_url = "http://127.0.0.1:9/v1"', 'wire_api = "responses"', "request_max_retries = 2",
                 "stream_max_retries = 2", "unbounded_connection_retries = false", 'approval_policy = "never"',
                 'sandbox_mode = "danger-full-access"'):  # fmt: skip
        assert line in toml
    assert thread_usage(cfg, thread)["input_tokens"] == 100
    parser = adapter.parser()
    assert parser.baseline["output_tokens"] == 10 and parser.prompt == "-do it"
    assert json_line(spec.files[cfg / "config.toml"]) is None  # TOML, not JSON


def test_options_are_validated() -> None:
    adapter = CodexAdapter()
    adapter.validate({"sandbox_mode": "workspace-write", "reasoning_effort": "low", "config": {"a.b": [1, "x"]}})
    with pytest.raises(ValidationError) as info:
        adapter.validate({"sandbox_mode": "none", "reasoning_effort": "max", "config": {"a": {"b": 1}}})
    assert {e.field for e in info.value.fields} == {"config.sandbox_mode", "config.reasoning_effort", "config.config"}
