"""aider's stdout and chat history → Godel signals, on output recorded from aider 0.86.2 (through
``AiderAdapter.launch``) against the scripted model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from godel.agents.aider import RUN_FILE, AiderAdapter, AiderParser, read_chat
from godel.core.ports import AgentSignal, Evidence, LaunchRequest, ModelEndpoint, SignalKind
from godel.errors import ValidationError

FIXTURES = Path(__file__).parents[2] / "fixtures" / "agents" / "aider"
REPLY = "hello.txt\n```\nhello from aider\n```"


def stdout(name: str) -> list[AgentSignal]:
    parser = AiderParser()
    out: list[AgentSignal] = []
    for line in (FIXTURES / f"{name}.stdout.txt").read_text().splitlines():
        out += parser.feed("stdout", line)
    return out + parser.finish()


def chat(name: str, **kw: bool) -> list[AgentSignal]:
    return read_chat((FIXTURES / f"{name}.chat.md").read_text(), "/out/chat-1.md", **kw)


def of(signals: list[AgentSignal], kind: SignalKind) -> list[dict]:
    return [s.data for s in signals if s.kind is kind]


@pytest.mark.parametrize("name", ["edit", "edit-anthropic"])
def test_edit_stdout_gives_the_usage_aider_reports(name: str) -> None:
    signals = stdout(name)
    assert of(signals, SignalKind.USAGE) == [
        {"model": "scripted-model", "inputTokens": 80, "outputTokens": 12, "cachedTokens": 0, "costUsd": None}
    ]
    assert of(signals, SignalKind.ERROR) == []


def test_cost_of_a_priced_model() -> None:
    (u,) = of(stdout("edit-cost"), SignalKind.USAGE)
    assert (u["model"], u["inputTokens"], u["outputTokens"], u["costUsd"]) == ("gpt-4o-mini", 80, 12, 0.000019)


def test_edit_chat_gives_messages_the_edit_session_and_success() -> None:
    signals = chat("edit")
    assert of(signals, SignalKind.SESSION) == [{"sessionId": "/out/chat-1.md"}]
    assert of(signals, SignalKind.MESSAGE) == [
        {"role": "user", "text": "create hello.txt"},
        {"role": "assistant", "text": REPLY},
    ]
    call = {"id": "edit-1", "name": "edit", "input": {"path": "hello.txt", "format": "whole"}}
    assert of(signals, SignalKind.TOOL_CALL) == [call]
    assert of(signals, SignalKind.TOOL_RESULT) == [
        {"id": "edit-1", "output": "Applied edit to hello.txt", "isError": False}
    ]
    assert [s.kind for s in signals][1:] == [SignalKind.MESSAGE, SignalKind.MESSAGE, SignalKind.TOOL_CALL,
                                             SignalKind.TOOL_RESULT, SignalKind.FINAL]  # fmt: skip
    (final,) = of(signals, SignalKind.FINAL)
    assert final == {"result": REPLY, "success": True, "reason": "aider applied 1 edit(s) to hello.txt, 1 commit(s)"}


def test_endpoint_down_is_a_provider_error_and_a_failure() -> None:
    (err,) = of(stdout("down"), SignalKind.ERROR)
    assert err["provider"] is True and "Connection error" in err["message"]
    signals = chat("down")
    (final,) = of(signals, SignalKind.FINAL)
    assert final["success"] is False and "Connection error" in final["reason"]
    assert of(signals, SignalKind.MESSAGE) == [{"role": "user", "text": "create hello.txt"}]
    assert of(signals, SignalKind.USAGE) == []


def test_scripted_error_fails_with_its_message() -> None:
    (err,) = of(stdout("error"), SignalKind.ERROR)
    assert err == {
        "message": "litellm.InternalServerError: InternalServerError: OpenAIException - scripted failure mid-run",
        "provider": True,
    }
    (final,) = of(chat("error"), SignalKind.FINAL)
    assert final["success"] is False and final["reason"].endswith("scripted failure mid-run")


def test_a_reply_without_an_edit_fails_unless_no_change_is_required() -> None:
    (final,) = of(chat("no-edit"), SignalKind.FINAL)
    assert final == {"result": "I would rather not change anything.", "success": False,
                     "reason": "aider replied without editing a file"}  # fmt: skip
    (final,) = of(chat("no-edit", require_change=False), SignalKind.FINAL)
    assert final["success"] is True


def test_follow_up_run_restores_and_edits_again() -> None:
    signals = chat("resume-followup")
    assert of(signals, SignalKind.MESSAGE)[0] == {"role": "user", "text": "thanks, anything else?"}
    assert [m["role"] for m in of(signals, SignalKind.MESSAGE)] == ["user", "assistant", "assistant"]
    (final,) = of(signals, SignalKind.FINAL)
    assert final["success"] is True and final["reason"].endswith("no commit")
    usage = of(stdout("resume-followup"), SignalKind.USAGE)
    assert [(u["inputTokens"], u["outputTokens"]) for u in usage] == [(100, 12), (120, 12)]


def test_token_counts_in_aiders_rounded_format() -> None:
    # aider's format_tokens: "1.2k" below 10000, "12k" above; cache counts go on the same line, the cost on the
    # next line when there are both (base_coder.calculate_and_show_tokens_and_cost)
    parser = AiderParser()
    assert parser.feed("stdout", "Tokens: 1.2k sent, 3.4k cache write, 12k cache hit, 345 received.") == []
    (u,) = parser.feed("stdout", "Cost: $0.0123 message, $0.05 session.")
    assert (u.data["inputTokens"], u.data["cachedTokens"], u.data["outputTokens"], u.data["costUsd"]) == (
        4600, 12000, 345, 0.0123)  # fmt: skip


def test_collect_reads_only_this_runs_part_of_the_history(tmp_path: Path) -> None:
    cfg = tmp_path / "run" / "config"
    req = LaunchRequest("a1", "t", "m", tmp_path, cfg)
    req.output_dir.mkdir(parents=True)
    first, second = (FIXTURES / "resume.chat.md").read_text(), (FIXTURES / "resume-followup.chat.md").read_text()
    history = req.output_dir / "chat-x.md"
    history.write_text(first + second)
    (req.output_dir / RUN_FILE).write_text(json.dumps({"chat": str(history), "offset": len(first.encode())}))
    signals = AiderAdapter().collect(req)
    assert of(signals, SignalKind.MESSAGE)[0]["text"] == "thanks, anything else?"
    assert of(signals, SignalKind.SESSION) == [{"sessionId": str(history)}]


def test_collect_without_a_run_file_is_empty(tmp_path: Path) -> None:
    assert AiderAdapter().collect(LaunchRequest("a1", "t", "m", tmp_path, tmp_path / "cfg")) == []


def test_launch_is_isolated_bounded_and_resumes(tmp_path: Path) -> None:
    binary = tmp_path / "aider"
    binary.write_text("#!/opt/venv/bin/python\nimport aider\n")
    ep = ModelEndpoint("p", "anthropic", "http://127.0.0.1:1", "claude-x", "sk-1")
    req = LaunchRequest("a1", "-fix it", "p/claude-x", tmp_path / "ws", tmp_path / "run" / "config", endpoint=ep,
                        options={"binary": str(binary), "files": ["a.py"]}, cli_retries=2)  # fmt: skip
    spec = AiderAdapter().launch(req)
    assert spec.argv[:3] == ["/opt/venv/bin/python", "-I", "-u"] and spec.argv[5] == "0.5"
    assert "--no-gitignore" in spec.argv and "--restore-chat-history" not in spec.argv
    assert spec.argv[-2:] == ["--message=-fix it", "a.py"]
    assert spec.argv[spec.argv.index("--model") + 1] == "anthropic/claude-x"
    assert spec.env["HOME"] == str(req.config_dir)
    settings = json.loads(spec.files[req.config_dir / "model-settings.yml"])
    params = {"api_base": "http://127.0.0.1:1", "api_key": "sk-1", "max_retries": 0}
    assert settings == [{"name": "anthropic/claude-x", "extra_params": params}]
    chat = spec.argv[spec.argv.index("--chat-history-file") + 1]
    assert Path(chat).parent == req.output_dir
    req.resume_session = chat
    again = AiderAdapter().launch(req)
    assert "--restore-chat-history" in again.argv and again.argv[again.argv.index("--chat-history-file") + 1] == chat


def test_options_are_validated() -> None:
    AiderAdapter().validate({"files": ["a.py"], "edit_format": "diff", "auto_commits": False, "request_timeout": 30})
    with pytest.raises(ValidationError) as exc:
        AiderAdapter().validate({"files": "a.py", "edit_format": "nope", "require_change": "no"})
    assert {e.field for e in exc.value.fields} == {"config.files", "config.edit_format", "config.require_change"}


def test_judged_from_the_final_event_not_the_exit_code() -> None:
    signals = [s for s in chat("down") if s.kind in (SignalKind.FINAL, SignalKind.ERROR)]
    outcome = AiderAdapter().outcome(Evidence(exit_code=0, signals=signals, changed_files=0, commits=0))
    assert outcome.success is False and "Connection error" in outcome.reason


def test_markdown_in_the_reply_and_multi_line_messages_of_aider() -> None:
    # The recorded edit history with a reply holding a heading and a quote (no trailing two spaces, as aider
    # writes replies), and a two-line error (aider prefixes only the first line with "> ", io.append_chat_history)
    text = (FIXTURES / "edit.chat.md").read_text()
    reply = "#### Plan\n> quoted\n\n" + REPLY
    text = text.replace(REPLY, reply)
    text += "> litellm.APIError: first line\nsecond line  \n"
    signals = read_chat(text)
    assert of(signals, SignalKind.MESSAGE)[1] == {"role": "assistant", "text": reply}
    (final,) = of(signals, SignalKind.FINAL)
    assert final["success"] is False and final["reason"] == "aider: litellm.APIError: first line\nsecond line"
