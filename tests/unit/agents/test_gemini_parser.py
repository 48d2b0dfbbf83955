"""The gemini parser on streams recorded from the real CLI (gemini 0.61.0 against the scripted model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from godel.agents.base import judge
from godel.agents.gemini import GeminiAdapter, GeminiParser
from godel.core.ports import AgentSignal, Evidence, LaunchRequest, ModelEndpoint, SignalKind
from godel.errors import ValidationError

FIXTURES = Path(__file__).parents[2] / "fixtures" / "agents" / "gemini"


def parse(name: str) -> list[AgentSignal]:
    parser = GeminiParser()
    out: list[AgentSignal] = []
    for line in (FIXTURES / name).read_text().splitlines():
        out += parser.feed("stdout", line)
    return out + parser.finish()


def of(signals: list[AgentSignal], kind: SignalKind) -> list[dict]:
    return [s.data for s in signals if s.kind is kind]


def verdict(signals: list[AgentSignal], exit_code: int, changed: int = 0):
    relevant = [s for s in signals if s.kind in (SignalKind.FINAL, SignalKind.ERROR)]
    return judge("gemini", Evidence(exit_code=exit_code, signals=relevant, changed_files=changed, commits=0))


def test_edit_stream() -> None:
    signals = parse("edit.jsonl")
    assert [s.kind for s in signals] == [
        SignalKind.SESSION,
        SignalKind.MESSAGE,
        SignalKind.TOOL_CALL,
        SignalKind.TOOL_RESULT,
        SignalKind.MESSAGE,
        SignalKind.USAGE,
        SignalKind.FINAL,
    ]
    assert of(signals, SignalKind.SESSION) == [{"sessionId": "97c5e1cc-215f-4d91-8e90-35efefa596b6"}]
    messages = of(signals, SignalKind.MESSAGE)
    assert messages == [
        {"role": "user", "text": "create hello.txt"},
        {"role": "assistant", "text": "Created hello.txt."},
    ]
    (call,) = of(signals, SignalKind.TOOL_CALL)
    assert call["name"] == "write_file"
    assert call["input"] == {"file_path": "hello.txt", "content": "hello from gemini\n"}
    (result,) = of(signals, SignalKind.TOOL_RESULT)
    assert result["id"] == call["id"] and result["isError"] is False
    # the scripted model reported 20 + 40 input and 5 + 5 output tokens over two requests
    assert of(signals, SignalKind.USAGE) == [
        {"model": "scripted-model", "inputTokens": 60, "outputTokens": 10, "cachedTokens": 0, "costUsd": None}
    ]
    assert of(signals, SignalKind.FINAL) == [
        {"result": "Created hello.txt.", "success": True, "reason": "gemini finished (status success)"}
    ]
    outcome = verdict(signals, 0, changed=1)
    assert outcome.success and outcome.result == "Created hello.txt."


def test_endpoint_down_is_a_provider_error() -> None:
    signals = parse("endpoint-down.jsonl")
    assert of(signals, SignalKind.USAGE) == []
    (err,) = of(signals, SignalKind.ERROR)
    assert err == {"message": "[API Error: exception TypeError: fetch failed sending request]", "provider": True}
    (fin,) = of(signals, SignalKind.FINAL)
    assert fin["success"] is False and "fetch failed" in fin["reason"]
    outcome = verdict(signals, 1)
    assert not outcome.success and outcome.provider_error and "fetch failed" in outcome.reason


def test_error_mid_run_fails_after_the_tool_call() -> None:
    signals = parse("error-mid-run.jsonl")
    assert [c["name"] for c in of(signals, SignalKind.TOOL_CALL)] == ["write_file"]
    assert of(signals, SignalKind.USAGE)[0]["outputTokens"] == 5  # only the first request was answered
    (err,) = of(signals, SignalKind.ERROR)
    assert "scripted failure mid-run" in err["message"] and err["provider"] is True
    outcome = verdict(signals, 244, changed=1)  # gemini exits with the HTTP status modulo 256
    assert not outcome.success and "scripted failure mid-run" in outcome.reason


def test_resumed_stream_keeps_the_session_id() -> None:
    signals = parse("resume.jsonl")
    assert of(signals, SignalKind.SESSION) == [{"sessionId": "97c5e1cc-215f-4d91-8e90-35efefa596b6"}]
    assert of(signals, SignalKind.MESSAGE)[0] == {"role": "user", "text": "thanks, anything else?"}
    assert of(signals, SignalKind.FINAL)[0]["success"] is True


def test_assistant_deltas_are_joined_and_a_cut_off_stream_has_no_final() -> None:
    parser = GeminiParser()
    assert parser.feed("stdout", json.dumps({"type": "message", "role": "assistant", "content": "Hel"})) == []
    assert parser.feed("stdout", json.dumps({"type": "message", "role": "assistant", "content": "lo"})) == []
    assert parser.feed("stderr", "YOLO mode is enabled.") == []
    assert parser.finish() == [AgentSignal(SignalKind.MESSAGE, {"role": "assistant", "text": "Hello"})]


def test_error_event_explains_a_result_without_error() -> None:
    parser = GeminiParser()
    out = parser.feed("stdout", json.dumps({"type": "error", "severity": "error", "message": "empty response"}))
    out += parser.feed("stdout", json.dumps({"type": "error", "severity": "warning", "message": "loop detected"}))
    out += parser.feed("stdout", json.dumps({"type": "result", "status": "error", "stats": {}}))
    assert of(out, SignalKind.ERROR) == [{"message": "empty response", "provider": False}]
    assert of(out, SignalKind.FINAL)[0]["reason"] == "gemini failed: empty response"


def request(tmp_path: Path, **kw: object) -> LaunchRequest:
    ep = ModelEndpoint("scripted-gemini", "gemini", "http://127.0.0.1:9/", "scripted-model", "sk-x")
    values: dict = {"agent_id": "a1", "task": "do it", "model": ep.name, "workspace": tmp_path / "ws",
                    "config_dir": tmp_path / "cfg", "endpoint": ep, "tools_dir": None, "cli_retries": 0,
                    "options": {"binary": "/bin/true"}}  # fmt: skip
    values.update(kw)
    return LaunchRequest(**values)


def test_launch_isolates_and_bounds_retries(tmp_path: Path) -> None:
    req = request(tmp_path, options={"binary": "/bin/true", "tools": ["write_file"]}, cli_retries=3)
    spec = GeminiAdapter().launch(req)
    assert spec.argv[0] == "/bin/true" and spec.argv[-2:] == ["-p", "do it"]
    assert ["-m", "scripted-model"] == spec.argv[spec.argv.index("-m") : spec.argv.index("-m") + 2]
    assert spec.env["GEMINI_CLI_HOME"] == spec.env["HOME"] == str(tmp_path / "cfg")
    assert spec.env["GOOGLE_GEMINI_BASE_URL"] == "http://127.0.0.1:9" and spec.env["GEMINI_API_KEY"] == "sk-x"
    settings = json.loads(spec.files[tmp_path / "cfg" / ".gemini" / "settings.json"])
    assert settings["security"]["auth"]["selectedType"] == "gemini-api-key"
    assert settings["general"]["maxAttempts"] == 4
    assert settings["tools"] == {"core": ["write_file"]}
    assert "--resume" not in spec.argv
    many = GeminiAdapter().launch(request(tmp_path, cli_retries=50))
    assert json.loads(many.files[tmp_path / "cfg" / ".gemini" / "settings.json"])["general"]["maxAttempts"] == 10


def test_options_are_validated() -> None:
    with pytest.raises(ValidationError):
        GeminiAdapter().validate({"tools": "write_file"})
    with pytest.raises(ValidationError):
        GeminiAdapter().validate({"settings": []})
    GeminiAdapter().validate({"tools": ["write_file"], "settings": {"general": {"vimMode": True}}})


def test_resume_drops_the_duplicate_tool_results_headless_gemini_records(tmp_path: Path) -> None:
    recorded = (FIXTURES / "edit-session.jsonl").read_text()
    session_id = json.loads(recorded.splitlines()[0])["sessionId"]
    chats = tmp_path / "cfg" / ".gemini" / "tmp" / "repo" / "chats"
    chats.mkdir(parents=True)
    path = chats / f"session-2026-11-22T02-47-{session_id[:8]}.jsonl"
    path.write_text(recorded)
    spec = GeminiAdapter().launch(request(tmp_path, resume_session=session_id))
    assert spec.argv[spec.argv.index("--resume") + 1] == session_id
    repaired = spec.files[path].splitlines()
    dropped = [line for line in recorded.splitlines() if line not in repaired]
    assert len(dropped) == 1 and '"type":"user"' in dropped[0] and "functionResponse" in dropped[0]
    # the model's call with its result is kept
    assert any("toolCalls" in line and "functionResponse" in line for line in repaired)
