"""mini-swe-agent's trajectory reader, stderr parser and launch, on runs recorded from the real CLI (2.4.6) against
the scripted model (tests/fixtures/agents/mini-swe-agent: NAME.traj.json, NAME.stdout.txt, NAME.stderr.txt)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from godel.agents.base import judge
from godel.agents.miniswe import RUN_FILE, MiniSweAdapter, MiniSweParser, read_trajectory
from godel.core.ports import AgentSignal, Evidence, LaunchRequest, ModelEndpoint, SignalKind
from godel.errors import AgentSpawnError, ValidationError

FIXTURES = Path(__file__).parents[2] / "fixtures" / "agents" / "mini-swe-agent"


def trajectory(name: str) -> list[AgentSignal]:
    return read_trajectory(FIXTURES / f"{name}.traj.json")


def stream(name: str) -> list[AgentSignal]:
    parser = MiniSweParser()
    out: list[AgentSignal] = []
    for kind in ("stdout", "stderr"):
        for line in (FIXTURES / f"{name}.{kind}.txt").read_text().splitlines():
            out.extend(parser.feed(kind, line))
    return out + parser.finish()


def of(signals: list[AgentSignal], kind: SignalKind) -> list[dict]:
    return [s.data for s in signals if s.kind is kind]


def verdict(signals: list[AgentSignal], exit_code: int, changed: int = 1) -> tuple[bool, str, bool]:
    kept = [s for s in signals if s.kind in (SignalKind.FINAL, SignalKind.ERROR)]
    o = judge("mini-swe-agent", Evidence(exit_code=exit_code, signals=kept, changed_files=changed, commits=0))
    return o.success, o.reason, o.provider_error


@pytest.mark.parametrize("name", ["edit", "edit-anthropic"])
def test_submitted_edit_gives_prompt_calls_results_usage_and_final(name: str) -> None:
    signals = trajectory(name)
    assert [s.kind for s in signals] == [
        SignalKind.MESSAGE,
        SignalKind.TOOL_CALL, SignalKind.USAGE, SignalKind.TOOL_RESULT,
        SignalKind.TOOL_CALL, SignalKind.USAGE, SignalKind.TOOL_RESULT,
        SignalKind.FINAL,
    ]  # fmt: skip
    prompt = of(signals, SignalKind.MESSAGE)[0]
    assert prompt["role"] == "user" and "Please solve this issue: create hello.txt" in prompt["text"]
    calls = of(signals, SignalKind.TOOL_CALL)
    assert [c["name"] for c in calls] == ["bash", "bash"]
    assert calls[0]["input"] == {"command": "printf 'hello from mini\\n' > hello.txt"}
    results = of(signals, SignalKind.TOOL_RESULT)
    assert [r["id"] for r in results] == [c["id"] for c in calls]
    assert results[0] == {"id": calls[0]["id"], "output": "", "isError": False}
    # mini records the submit command as "not executed"; the reader shows what it printed instead
    assert results[1]["output"] == "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\nCreated hello.txt.\n"
    assert results[1]["isError"] is False
    # the scripted model reports 10 input tokens per message and the turn's output tokens (7, then 5)
    assert [(u["inputTokens"], u["outputTokens"], u["cachedTokens"]) for u in of(signals, SignalKind.USAGE)] == [
        (20, 7, 0),
        (40, 5, 0),
    ]
    assert all(u["costUsd"] is None and u["model"] == "scripted-model" for u in of(signals, SignalKind.USAGE))
    assert of(signals, SignalKind.FINAL) == [
        {"result": "Created hello.txt.", "success": True, "reason": "mini-swe-agent submitted"}
    ]
    assert verdict(signals, 0) == (True, "mini-swe-agent submitted; 1 file(s) changed, 0 commit(s)", False)
    assert stream(name if name == "edit" else "edit") == []  # stdout is for humans; nothing is duplicated


def test_endpoint_down_is_a_provider_error() -> None:
    signals = trajectory("endpoint-down")
    errors = of(signals, SignalKind.ERROR)
    assert len(errors) == 1 and errors[0]["provider"] is True
    assert "Connection error." in errors[0]["message"]
    assert not of(signals, SignalKind.USAGE) and not of(signals, SignalKind.TOOL_CALL)
    ok, reason, provider = verdict(signals, 1, changed=0)
    assert not ok and provider
    assert reason.startswith("mini-swe-agent ended with InternalServerError: litellm.InternalServerError")
    assert stream("endpoint-down") == []  # the trajectory has the verdict: the stderr traceback is not repeated


def test_scripted_error_mid_run_fails_after_the_first_edit() -> None:
    signals = trajectory("error-mid-run")
    assert len(of(signals, SignalKind.TOOL_RESULT)) == 1 and len(of(signals, SignalKind.USAGE)) == 1
    ok, reason, provider = verdict(signals, 1)
    assert not ok and provider and "scripted failure mid-run" in reason
    assert of(signals, SignalKind.FINAL)[0]["success"] is False


def test_text_replies_end_in_a_repeated_format_error_although_mini_exits_0() -> None:
    signals = trajectory("text-only")
    messages = of(signals, SignalKind.MESSAGE)
    assert [m["role"] for m in messages] == ["user"] + ["assistant", "user"] * 3
    assert messages[1]["text"] == "I think the task is done."
    assert "No tool calls found" in messages[2]["text"]
    assert len(of(signals, SignalKind.USAGE)) == 3  # the rejected replies were billed too
    ok, reason, provider = verdict(signals, 0)
    assert (ok, reason, provider) == (False, "mini-swe-agent ended with RepeatedFormatError", False)


def test_step_limit_ends_in_limits_exceeded_with_exit_0() -> None:
    ok, reason, _ = verdict(trajectory("step-limit"), 0)
    assert (ok, reason) == (False, "mini-swe-agent ended with LimitsExceeded")


def test_crash_before_the_agent_loop_is_read_from_stderr() -> None:
    signals = stream("crash")
    assert [s.kind for s in signals] == [SignalKind.ERROR]
    assert signals[0].data["message"].startswith("mini-swe-agent crashed: ValueError: Unknown model class")
    assert signals[0].data["provider"] is False
    ok, reason, _ = verdict(signals, 1, changed=0)
    assert not ok and "Unknown model class" in reason and reason.endswith("(exit 1)")


def test_missing_or_cut_trajectory_is_an_error(tmp_path: Path) -> None:
    assert "wrote no trajectory" in read_trajectory(tmp_path / "traj.json")[0].data["message"]
    cut = tmp_path / "cut.json"
    cut.write_text((FIXTURES / "edit.traj.json").read_text()[:500])
    assert "unreadable" in read_trajectory(cut)[0].data["message"]


def request(tmp_path: Path, kind: str = "openai-chat", **options: object) -> LaunchRequest:
    binary = tmp_path / "mini"
    binary.write_text("")
    base = "http://127.0.0.1:9/v1" if kind == "openai-chat" else "http://127.0.0.1:9"
    return LaunchRequest(
        agent_id="a1",
        task="-fix it",
        model="scripted/m",
        workspace=tmp_path / "ws",
        config_dir=tmp_path / "run" / "config",
        options={"binary": str(binary), **options},
        endpoint=ModelEndpoint("scripted", kind, base, "m", "sk-x"),  # type: ignore[arg-type]
        cli_retries=2,
    )


def test_launch_is_headless_isolated_bounded_and_names_a_fresh_trajectory(tmp_path: Path) -> None:
    req = request(tmp_path, step_limit=5, cost_limit=0.5, command_timeout=60, model_kwargs={"temperature": 0})
    spec = MiniSweAdapter().launch(req)
    assert spec.argv[1:3] == ["-m", "openai/m"]
    assert "--task=-fix it" in spec.argv and "-y" in spec.argv and "--exit-immediately" in spec.argv
    assert spec.argv[spec.argv.index("-c") + 1] == "mini.yaml"
    cfg = req.config_dir
    assert spec.env["MSWEA_GLOBAL_CONFIG_DIR"] == spec.env["HOME"] == str(cfg)
    assert spec.env["OPENAI_API_BASE"] == "http://127.0.0.1:9/v1" and spec.env["OPENAI_API_KEY"] == "sk-x"
    assert spec.env["MSWEA_MODEL_RETRY_STOP_AFTER_ATTEMPT"] == "3"
    config = json.loads(spec.files[cfg / "godel.yaml"])
    assert config == {
        "model": {"model_kwargs": {"temperature": 0, "max_retries": 0}},
        "agent": {"step_limit": 5, "cost_limit": 0.5},
        "environment": {"timeout": 60},
    }
    out = Path(spec.argv[spec.argv.index("-o") + 1])
    assert out.parent == req.output_dir and out.name.startswith("traj-")
    assert json.loads(spec.files[cfg / RUN_FILE]) == {"trajectory": str(out)}
    assert MiniSweAdapter().launch(req).argv != spec.argv  # each launch writes its own trajectory


def test_collect_reads_the_trajectory_of_the_last_launch(tmp_path: Path) -> None:
    adapter = MiniSweAdapter()
    req = request(tmp_path)
    assert adapter.collect(req) == []  # never launched
    spec = adapter.launch(req)
    for path, content in spec.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    assert "wrote no trajectory" in adapter.collect(req)[0].data["message"]
    out = Path(spec.argv[spec.argv.index("-o") + 1])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text((FIXTURES / "edit.traj.json").read_text())
    assert of(adapter.collect(req), SignalKind.FINAL)[0]["success"] is True


def test_launch_anthropic_uses_litellm_anthropic_prefix(tmp_path: Path) -> None:
    spec = MiniSweAdapter().launch(request(tmp_path, "anthropic"))
    assert spec.argv[1:3] == ["-m", "anthropic/m"]
    assert spec.env["ANTHROPIC_API_BASE"] == "http://127.0.0.1:9" and spec.env["ANTHROPIC_API_KEY"] == "sk-x"
    with pytest.raises(AgentSpawnError):
        MiniSweAdapter().launch(request(tmp_path, "openai-responses"))


def test_options_are_validated() -> None:
    adapter = MiniSweAdapter()
    adapter.validate({"step_limit": 3, "cost_limit": 1.5, "command_timeout": 10, "model_kwargs": {}})
    cases: list[dict[str, object]] = [
        {"step_limit": -1}, {"cost_limit": "x"}, {"command_timeout": 0}, {"model_kwargs": []}, {"tools": []},
    ]  # fmt: skip
    for bad in cases:
        with pytest.raises(ValidationError):
            adapter.validate(bad)
