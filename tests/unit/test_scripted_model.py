"""ScriptedModel against the official OpenAI and Anthropic SDKs: a real server, real clients, no mocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from godel.testing import ScriptedModel, ScriptError, Usage, load_script

ROUND_TRIP: list[Any] = [
    {"tool_call": {"name": "write", "arguments": {"path": "hello.txt", "content": "hi\n"}}, "output_tokens": 7},
    {"text": "Done: hello.txt written."},
]
TASK = "Create hello.txt containing a greeting"


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel(ROUND_TRIP) as server:
        yield server


def oai(server: ScriptedModel) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=10)


def claude(server: ScriptedModel) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="sk-test", max_retries=0, timeout=10)


def test_chat_round_trip_without_streaming(model: ScriptedModel) -> None:
    client = oai(model)
    messages: list[Any] = [{"role": "user", "content": TASK}]
    first = client.chat.completions.create(model="scripted-model", messages=messages)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "write"
    assert json.loads(call.function.arguments) == {"path": "hello.txt", "content": "hi\n"}
    assert first.usage is not None and (first.usage.prompt_tokens, first.usage.completion_tokens) == (10, 7)

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "ok"},
    ]
    second = client.chat.completions.create(model="scripted-model", messages=messages)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "Done: hello.txt written."
    assert second.usage is not None and second.usage.prompt_tokens == 30


def test_chat_stream_with_usage_round_trip(model: ScriptedModel) -> None:
    client = oai(model)
    messages: list[Any] = [{"role": "user", "content": TASK}]
    chunks = list(
        client.chat.completions.create(
            model="scripted-model", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [tc for d in deltas for tc in d.tool_calls or []]
    assert calls[0].id and calls[0].function and calls[0].function.name == "write"
    arguments = "".join(tc.function.arguments or "" for tc in calls if tc.function)
    assert json.loads(arguments)["path"] == "hello.txt"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    # The usage chunk comes last, with no choices, only because include_usage asked for it.
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 7

    messages += [
        {"role": "assistant", "tool_calls": [{"id": calls[0].id, "type": "function",
                                              "function": {"name": "write", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "Successfully wrote 3 bytes"},
    ]  # fmt: skip
    text_chunks = list(client.chat.completions.create(model="scripted-model", messages=messages, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in text_chunks if c.choices)
    assert text == "Done: hello.txt written."
    assert all(c.usage is None for c in text_chunks)


def test_responses_stream_ends_with_completed_usage(model: ScriptedModel) -> None:
    client = oai(model)
    events = list(client.responses.create(model="scripted-model", input=TASK, stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_item.added" in kinds and "response.output_item.done" in kinds
    completed = events[-1].response
    call = completed.output[0]
    assert call.type == "function_call" and call.name == "write"
    assert completed.usage is not None and (completed.usage.input_tokens, completed.usage.output_tokens) == (10, 7)

    follow_up: list[Any] = [
        {"role": "user", "content": TASK},
        {"type": "function_call", "call_id": call.call_id, "name": "write", "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "ok"},
    ]
    events = list(client.responses.create(model="scripted-model", input=follow_up, stream=True))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Done: hello.txt written."
    final = client.responses.create(model="scripted-model", input=follow_up)
    assert final.output_text == "Done: hello.txt written." and final.usage is not None
    assert final.usage.total_tokens == 35


def test_anthropic_tool_use_then_text(model: ScriptedModel) -> None:
    client = claude(model)
    messages: list[Any] = [{"role": "user", "content": TASK}]
    first = client.messages.create(model="scripted-model", max_tokens=1024, messages=messages)
    assert first.stop_reason == "tool_use" and first.usage.output_tokens == 7
    tool_use = first.content[0]
    assert tool_use.type == "tool_use" and tool_use.name == "write"
    assert tool_use.input == {"path": "hello.txt", "content": "hi\n"}

    with client.messages.stream(model="scripted-model", max_tokens=1024, messages=messages) as stream:
        streamed = stream.get_final_message()
    assert streamed.content[0].type == "tool_use" and streamed.content[0].input == tool_use.input
    assert streamed.stop_reason == "tool_use" and streamed.usage.output_tokens == 7

    messages += [
        {"role": "assistant", "content": [tool_use.model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "ok"}]},
    ]
    with client.messages.stream(model="scripted-model", max_tokens=1024, messages=messages) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Done: hello.txt written." and final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (30, 5)


def test_count_tokens_and_model_lists(model: ScriptedModel) -> None:
    count = claude(model).messages.count_tokens(
        model="scripted-model", system="be brief", messages=[{"role": "user", "content": "hi"}]
    )
    assert count.input_tokens == 20
    assert [m.id for m in oai(model).models.list()] == ["scripted-model"]
    assert [m.id for m in claude(model).models.list()] == ["scripted-model"]
    # Neither counts as a reply, so neither adds to the metered usage.
    assert model.usage_reported == Usage(0, 0)


@pytest.mark.parametrize(
    ("status", "openai_error", "anthropic_error"),
    [
        (429, openai.RateLimitError, anthropic.RateLimitError),
        (500, openai.InternalServerError, anthropic.InternalServerError),
        (401, openai.AuthenticationError, anthropic.AuthenticationError),
    ],
)
def test_error_turn_raises_the_sdk_exception(status: int, openai_error: type, anthropic_error: type) -> None:
    with ScriptedModel([{"error": {"status": status, "message": "scripted outage"}}]) as server:
        with pytest.raises(openai_error) as caught:
            oai(server).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert caught.value.status_code == status and "scripted outage" in caught.value.message
        with pytest.raises(openai_error):
            oai(server).responses.create(model="m", input="x", stream=True)
        with pytest.raises(anthropic_error) as caught_a:
            claude(server).messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}])
        assert caught_a.value.status_code == status
        assert caught_a.value.body == {"type": "error", "error": {"type": caught_a.value.body["error"]["type"],
                                                                   "message": "scripted outage"}}  # fmt: skip
        assert [r.outcome for r in server.requests] == ["error"] * 3
        assert server.usage_reported == Usage(0, 0)


@pytest.mark.parametrize(
    ("path", "body", "shape"),
    [
        ("/v1/chat/completions", b"{not json", "openai"),
        ("/v1/chat/completions", b'{"model": "m"}', "openai"),
        ("/v1/responses", b'{"model": "m", "stream": true}', "openai"),
        ("/v1/messages", b"[1, 2]", "anthropic"),
        ("/v1/messages/count_tokens", b'{"model": "m", "messages": []}', "anthropic"),
    ],
)
def test_malformed_request_is_a_400_in_the_dialect_shape(
    model: ScriptedModel, path: str, body: bytes, shape: str
) -> None:
    reply = httpx.post(model.url + path, content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 400
    data = reply.json()
    if shape == "openai":
        assert data["error"]["type"] == "invalid_request_error" and data["error"]["message"]
    else:
        assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    assert model.requests[-1].outcome == "bad-request" and model.requests[-1].status == 400


def test_turn_is_chosen_by_tool_results_so_a_retry_gets_the_same_turn(model: ScriptedModel) -> None:
    client = oai(model)
    after_tool: list[Any] = [
        {"role": "user", "content": TASK},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "write", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]  # fmt: skip
    replies = [client.chat.completions.create(model="m", messages=after_tool) for _ in range(2)]
    assert [r.choices[0].message.content for r in replies] == ["Done: hello.txt written."] * 2
    first = [client.chat.completions.create(model="m", messages=after_tool[:1]) for _ in range(2)]
    assert all(r.choices[0].finish_reason == "tool_calls" for r in first)
    assert [r.turn for r in model.requests] == [1, 1, 0, 0]


def test_several_tool_calls_in_one_turn_need_as_many_results() -> None:
    script = [
        {"tool_calls": [{"name": "bash", "arguments": {"command": "ls"}}, {"name": "bash", "arguments": "{}"}]},
        "finished",
    ]
    with ScriptedModel(script) as server:
        client = claude(server)
        first = client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "go"}])
        assert [block.type for block in first.content] == ["tool_use", "tool_use"]
        results = [{"type": "tool_result", "tool_use_id": b.id, "content": "ok"} for b in first.content]
        history: list[Any] = [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": results},
        ]
        second = client.messages.create(model="m", max_tokens=10, messages=history)
        assert second.content[0].type == "text" and second.content[0].text == "finished"
        history[-1] = {"role": "user", "content": results[:1]}
        # One result of two: no turn answers it, and the reply says so instead of guessing.
        with pytest.raises(anthropic.BadRequestError, match="no turn"):
            client.messages.create(model="m", max_tokens=10, messages=history)
        assert server.requests[-1].outcome == "exhausted" and server.requests[-1].tool_results == 1


def test_exhausted_script_is_a_clear_error(model: ScriptedModel) -> None:
    messages: list[Any] = [{"role": "user", "content": "x"}] + [
        {"role": "tool", "tool_call_id": f"c{i}", "content": "ok"} for i in range(2)
    ]
    with pytest.raises(openai.BadRequestError, match="no turn for a request carrying 2 tool results"):
        oai(model).chat.completions.create(model="m", messages=messages)
    assert model.requests[-1].outcome == "exhausted" and model.requests[-1].turn is None


def test_aider_commit_message_calls_do_not_use_a_turn(model: ScriptedModel) -> None:
    system = "You are an expert software engineer that generates concise, one-line Git commit messages based on diffs."
    reply = oai(model).chat.completions.create(
        model="m", messages=[{"role": "system", "content": system}, {"role": "user", "content": "diff --git a b"}]
    )
    assert reply.choices[0].message.content == "Apply the scripted change"
    assert model.requests[-1].outcome == "commit-message" and model.requests[-1].turn is None
    first = oai(model).chat.completions.create(model="m", messages=[{"role": "user", "content": TASK}])
    assert first.choices[0].finish_reason == "tool_calls"


def test_request_log_and_usage_totals(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    with ScriptedModel(ROUND_TRIP, log_path=log) as server:
        oai(server).chat.completions.create(
            model="scripted-model", messages=[{"role": "user", "content": TASK}], stream=True
        ).close()
        claude(server).messages.create(model="claude-x", max_tokens=5, messages=[{"role": "user", "content": TASK}])
        entries = server.requests
        assert [(e.path, e.dialect, e.model, e.stream, e.tool_results, e.turn, e.status) for e in entries] == [
            ("/v1/chat/completions", "openai-chat", "scripted-model", True, 0, 0, 200),
            ("/v1/messages", "anthropic", "claude-x", False, 0, 0, 200),
        ]
        assert entries[1].body["messages"] == [{"role": "user", "content": TASK}]
        assert server.usage_reported == Usage(20, 14)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["path"] for line in lines] == ["/v1/chat/completions", "/v1/messages"]
    assert lines[0]["usage"] == {"input_tokens": 10, "output_tokens": 7}


def test_delay_turn_waits_before_answering() -> None:
    with ScriptedModel([{"text": "late", "delay": 0.3}]) as server:
        started = time.monotonic()
        reply = oai(server).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert time.monotonic() - started >= 0.3
        assert reply.choices[0].message.content == "late"


def test_yaml_script_loading(tmp_path: Path) -> None:
    path = tmp_path / "script.yaml"
    path.write_text(
        "models: [scripted-model, other]\n"
        "usage: {input_tokens_per_message: 3, output_tokens: 2}\n"
        "commit_message: 'Add hello'\n"
        "turns:\n"
        "  - tool_call: {name: exec_command, arguments: {cmd: 'echo hi > hello.txt'}}\n"
        "  - error: {status: 503, message: overloaded}\n"
    )
    script = load_script(path)
    assert script.models == ("scripted-model", "other") and script.commit_message == "Add hello"
    assert script.turns[0].tool_calls[0].parsed_arguments() == {"cmd": "echo hi > hello.txt"}
    assert script.turns[1].error is not None and script.turns[1].error.status == 503
    with ScriptedModel(path) as server:
        reply = oai(server).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 2)


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (["first", "second"], "turn 1 can never be reached"),
        ([{"text": "a", "error": "b"}], "not text and error"),
        ([{"tool_call": {"arguments": {}}}], "needs a `name`"),
        ({"turns": [], "colour": "red"}, "unknown script keys: colour"),
        ([{"error": {"status": 200}}], "HTTP error status"),
    ],
)
def test_bad_scripts_are_refused_with_the_reason(script: Any, message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        load_script(script)


def test_godel_dev_model_serves_until_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "script.yaml"
    path.write_text("- text: hello\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "godel", "dev", "model", "--script", str(path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        base_url = lines[1].split()[-1]
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        # uvicorn may print its first line a moment after the socket is bound, so poll briefly.
        for _ in range(100):
            try:
                models = httpx.get(base_url + "/models").json()
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert models["data"][0]["id"] == "scripted-model"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert "stopped" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_agent_cli_bodies_are_tolerated(model: ScriptedModel) -> None:
    # Shapes measured from Claude Code and codex: a system message mid-conversation, extra fields, a query string.
    claude_body = {
        "model": "scripted-model", "max_tokens": 32000, "stream": True, "thinking": {"type": "adaptive"},
        "context_management": {"edits": []}, "system": [{"type": "text", "text": "You are a Claude agent."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": TASK, "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": "Available agent types: ..."},
        ],
    }  # fmt: skip
    reply = httpx.post(model.url + "/v1/messages?beta=true", json=claude_body)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    assert "event: message_stop" in reply.text and '"name":"write"' in reply.text
    codex_body = {
        "model": "scripted-model", "stream": True, "store": False, "instructions": "",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are codex"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": TASK}]},
            {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": "c1", "output": "Success."},
        ],
    }  # fmt: skip
    reply = httpx.post(model.base_url + "/responses", json=codex_body)
    assert "event: response.completed" in reply.text and "Done: hello.txt written." in reply.text
    assert [(r.dialect, r.tool_results, r.turn) for r in model.requests] == [
        ("anthropic", 0, 0),
        ("openai-responses", 1, 1),
    ]


# -- Gemini (gemini-cli 0.61.0 sends these; it has no other endpoint setting than GOOGLE_GEMINI_BASE_URL) --------

GEMINI = "/v1beta/models/scripted-model"


def gemini_body(*extra: dict[str, Any]) -> dict[str, Any]:
    # The shape gemini-cli sent, trimmed: system instruction, tools, thinking config, ids on calls and results.
    return {
        "contents": [{"role": "user", "parts": [{"text": "<session_context>"}, {"text": TASK}]}, *extra],
        "systemInstruction": {"role": "user", "parts": [{"text": "You are Gemini CLI."}]},
        "tools": [{"functionDeclarations": [{"name": "write_file", "parametersJsonSchema": {"type": "object"}}]}],
        "generationConfig": {"temperature": 1, "thinkingConfig": {"includeThoughts": True}},
    }


GEMINI_CALL = {
    "role": "model",
    "parts": [
        {
            "functionCall": {"id": "w_0", "name": "write", "args": {"path": "hello.txt", "content": "hi\n"}},
            "thoughtSignature": "skip_thought_signature_validator",
        }
    ],
}
GEMINI_RESULT = {"role": "user", "parts": [{"functionResponse": {"id": "w_0", "name": "write", "response": {}}}]}


def sse_data(text: str) -> list[Any]:
    return [json.loads(line[len("data: ") :]) for line in text.splitlines() if line.startswith("data: ")]


def test_gemini_stream_tool_call_then_text(model: ScriptedModel) -> None:
    # Regression: gemini-cli got a 404 ("[API Error: Not Found]", rc 1) because no Gemini route existed.
    reply = httpx.post(model.url + GEMINI + ":streamGenerateContent?alt=sse", json=gemini_body())
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    (chunk,) = sse_data(reply.text)
    candidate = chunk["candidates"][0]
    assert candidate["content"] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "write", "args": {"path": "hello.txt", "content": "hi\n"}}}],
    }
    assert candidate["finishReason"] == "STOP"
    # system instruction + 1 content = 2 messages x 10; the turn's own output_tokens.
    assert chunk["usageMetadata"] == {"promptTokenCount": 20, "candidatesTokenCount": 7, "totalTokenCount": 27}

    reply = httpx.post(model.url + GEMINI + ":generateContent", json=gemini_body(GEMINI_CALL, GEMINI_RESULT))
    assert reply.status_code == 200
    assert reply.json()["candidates"][0]["content"]["parts"] == [{"text": "Done: hello.txt written."}]
    assert [(r.dialect, r.stream, r.tool_results, r.turn, r.model) for r in model.requests] == [
        ("gemini", True, 0, 0, "scripted-model"),
        ("gemini", False, 1, 1, "scripted-model"),
    ]
    assert model.usage_reported == Usage(20 + 40, 7 + 5)


def test_gemini_errors_count_tokens_and_unknown_methods(model: ScriptedModel) -> None:
    count = httpx.post(model.url + GEMINI + ":countTokens", json={"contents": [{"role": "user", "parts": []}]})
    assert count.json() == {"totalTokens": 10}
    bad = httpx.post(model.url + GEMINI + ":generateContent", json={"contents": []})
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"
    unknown = httpx.post(model.url + GEMINI + ":embedContent", json={})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == 404
    with ScriptedModel([{"error": {"status": 429, "message": "scripted quota"}}]) as server:
        reply = httpx.post(server.url + GEMINI + ":streamGenerateContent?alt=sse", json=gemini_body())
        assert reply.status_code == 429
        assert reply.json() == {"error": {"code": 429, "message": "scripted quota", "status": "RESOURCE_EXHAUSTED"}}


# --- alternatives chosen by `match` (a substring of the request's text) ---------------------------------------

REVIEW = [
    [
        {"match": "review round 2", "text": "VERDICT: approve"},
        {"text": "VERDICT: reject\nAdd a test."},
    ]
]


def test_alternatives_are_chosen_by_the_request_text_statelessly() -> None:
    with ScriptedModel(REVIEW) as server:
        client = oai(server)

        def ask(text: str) -> str | None:
            reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}])
            return reply.choices[0].message.content

        assert ask("please review (review round 1)") == "VERDICT: reject\nAdd a test."
        assert ask("please review (review round 2)") == "VERDICT: approve"
        assert ask("please review (review round 1)") == "VERDICT: reject\nAdd a test."  # same request, same turn
        assert [r.turn for r in server.requests] == [0, 0, 0]


def test_match_sees_system_prompt_and_tool_results_across_dialects() -> None:
    script = [
        {"tool_call": {"name": "read", "arguments": {"path": "a"}}},
        [{"match": "SECRET-42", "text": "found it"}, {"text": "not found"}],
    ]
    with ScriptedModel(script) as server:
        first = claude(server).messages.create(
            model="m", max_tokens=10, system="sys", messages=[{"role": "user", "content": "go"}]
        )
        call = next(b for b in first.content if b.type == "tool_use")
        follow: list[Any] = [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        ]
        hit = [*follow, {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                       "content": "SECRET-42"}]}]  # fmt: skip
        miss = [*follow, {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "x"}]}]
        texts = [
            claude(server).messages.create(model="m", max_tokens=10, messages=m).content[0].text  # type: ignore[union-attr]
            for m in (hit, miss)
        ]
        assert texts == ["found it", "not found"]


def test_no_matching_alternative_is_a_clear_400() -> None:
    with ScriptedModel([[{"match": "only this", "text": "yes"}]]) as server:
        with pytest.raises(openai.BadRequestError, match="no alternative of turn 0 matches"):
            oai(server).chat.completions.create(model="m", messages=[{"role": "user", "content": "other"}])
        assert server.requests[-1].outcome == "no-match"


def test_request_text_reads_messages_not_tool_definitions() -> None:
    from godel.testing.script import request_text

    body = {
        "model": "m",
        "system": "SYS",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "HELLO"}]}],
        "tools": [{"name": "write", "description": "TOOLDOC"}],
    }
    text = request_text(body)
    assert "SYS" in text and "HELLO" in text and "TOOLDOC" not in text
    assert request_text({"input": [{"content": "R"}], "instructions": "I"}) == "I\nR"
    assert request_text({"contents": [{"parts": [{"text": "G"}]}]}) == "G"


def test_yaml_alternatives_load() -> None:
    script = load_script({"turns": [[{"match": "a", "text": "A"}, "B"]]})
    assert script.turns[0].text == "A" and [t.text for t in script.choices[0]] == ["A", "B"]
    assert script.pick(0, "xax") is script.choices[0][0] and script.pick(0, "zzz") is script.choices[0][1]


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ([[]], "turn 0: an empty list of alternatives"),
        ([[{"text": "a"}, {"text": "b"}]], "turn 0, alternative 0: no `match`"),
        ([[{"match": "x", "text": "a"}, {"tool_call": {"name": "w", "arguments": {}}}]], "different numbers"),
        ([[{"match": "", "text": "a"}]], "`match` must be a non-empty string"),
        ([[{"match": 3, "text": "a"}]], "`match` must be a non-empty string"),
        ([[["nested"]]], "alternatives do not nest"),
        ([[{"match": "x", "txt": "a"}]], "turn 0, alternative 0: unknown keys txt"),
    ],
)
def test_bad_alternatives_are_refused_with_the_reason(script: Any, message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        load_script(script)
