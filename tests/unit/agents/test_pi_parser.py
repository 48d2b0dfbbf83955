"""pi's JSON stream → Godel signals, on streams recorded from pi 0.73.1 against the scripted model."""

from __future__ import annotations

from pathlib import Path

from godel.agents.pi import PiAdapter, PiParser
from godel.core.ports import AgentSignal, Evidence, SignalKind

FIXTURES = Path(__file__).parents[2] / "fixtures" / "agents" / "pi"


def parse(name: str) -> list[AgentSignal]:
    parser = PiParser()
    out: list[AgentSignal] = []
    for line in (FIXTURES / name).read_text().splitlines():
        out += parser.feed("stdout", line)
    return out + parser.finish()


def of(signals: list[AgentSignal], kind: SignalKind) -> list[dict]:
    return [s.data for s in signals if s.kind is kind]


def test_edit_stream() -> None:
    signals = parse("edit.jsonl")
    assert of(signals, SignalKind.SESSION) == [{"sessionId": "01a20117-acfe-71d6-9cce-70814ff20b6b"}]
    assert of(signals, SignalKind.TOOL_CALL) == [
        {"id": "call_1_0", "name": "write", "input": {"path": "hello.txt", "content": "hello\n"}}
    ]
    assert of(signals, SignalKind.TOOL_RESULT) == [
        {"id": "call_1_0", "output": "Successfully wrote 6 bytes to hello.txt", "isError": False}
    ]
    messages = of(signals, SignalKind.MESSAGE)
    assert messages == [{"role": "user", "text": "make hello"}, {"role": "assistant", "text": "Created hello.txt."}]
    usage = of(signals, SignalKind.USAGE)
    assert [(u["inputTokens"], u["outputTokens"]) for u in usage] == [(20, 5), (40, 5)]
    assert usage[0]["model"] == "scripted-model" and usage[0]["costUsd"] == 0
    assert of(signals, SignalKind.ERROR) == []
    (final,) = of(signals, SignalKind.FINAL)
    assert final["success"] is True and final["result"] == "Created hello.txt."


def test_endpoint_down_is_a_provider_failure_although_pi_exits_0() -> None:
    signals = parse("endpoint-down.jsonl")
    errors = of(signals, SignalKind.ERROR)
    assert len(errors) == 4 and all(e == {"message": "Connection error.", "provider": True} for e in errors)
    (final,) = of(signals, SignalKind.FINAL)
    assert final["success"] is False and "Connection error." in final["reason"]
    outcome = PiAdapter().outcome(Evidence(exit_code=0, signals=signals, changed_files=0, commits=0))
    assert not outcome.success and outcome.provider_error and "Connection error." in outcome.reason


def test_error_mid_run_after_a_successful_edit_fails() -> None:
    signals = parse("error-mid-run.jsonl")
    assert [c["name"] for c in of(signals, SignalKind.TOOL_CALL)] == ["write"]
    (final,) = of(signals, SignalKind.FINAL)
    assert final["success"] is False and "500 scripted failure mid-run" in final["reason"]
    outcome = PiAdapter().outcome(Evidence(exit_code=0, signals=signals, changed_files=1, commits=0))
    assert not outcome.success


def test_a_cut_off_stream_has_no_verdict() -> None:
    parser = PiParser()
    lines = (FIXTURES / "edit.jsonl").read_text().splitlines()[:12]  # killed before agent_end
    signals = [s for line in lines for s in parser.feed("stdout", line)] + parser.finish()
    assert of(signals, SignalKind.FINAL) == []
    outcome = PiAdapter().outcome(Evidence(exit_code=143, signals=signals, changed_files=1, commits=0))
    assert not outcome.success and "without a final result" in outcome.reason


def test_success_with_a_failing_exit_is_not_success() -> None:
    signals = parse("edit.jsonl")
    outcome = PiAdapter().outcome(Evidence(exit_code=1, signals=signals, changed_files=1, commits=0))
    assert not outcome.success and "exit 1" in outcome.reason


def test_noise_and_stderr_are_ignored() -> None:
    parser = PiParser()
    assert parser.feed("stdout", "not json") == []
    assert parser.feed("stdout", '{"type": "session"') == []  # truncated
    assert parser.feed("stderr", '{"type":"session","id":"x"}') == []
    assert parser.finish() == []
