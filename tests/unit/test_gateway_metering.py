"""The gateway's Meter against bodies recorded from the scripted model server (itself verified with the official
SDKs), fed in chunks of every size that matters; variants are edits of those recordings, checked with the SDKs."""

from __future__ import annotations

import gzip
import json
import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from anthropic.types import Message, RawMessageDeltaEvent, RawMessageStartEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseCompletedEvent, ResponseFailedEvent
from pydantic import BaseModel

from godel.gateway.metering import DIALECTS, Dialect, Meter, Usage, inject_stream_usage
from godel.testing import ScriptedModel

MODEL = "scripted-modèle"  # not ASCII: the model field is read, so a split "è" must come out whole
TURN = {"tool_call": {"name": "write", "arguments": {"path": "hé.txt", "content": "ça va\n"}}, "output_tokens": 12}
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "write hé.txt"}]
CHUNK_SIZES = (1, 7, 4096)


@dataclass(frozen=True)
class Recording:
    dialect: Dialect
    stream: bool
    status: int
    body: bytes
    input_tokens: int  # as the server reported them (its usage_reported grew by these)
    output_tokens: int


def _request(server: ScriptedModel, dialect: Dialect, stream: bool) -> tuple[str, dict[str, Any]]:
    if dialect == "openai-chat":
        body = inject_stream_usage({"model": MODEL, "messages": MESSAGES, "stream": stream})
        return server.base_url + "/chat/completions", body
    if dialect == "openai-responses":
        return server.base_url + "/responses", {"model": MODEL, "input": MESSAGES, "stream": stream}
    if dialect == "gemini":
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        contents = [{"role": "user", "parts": [{"text": m["content"]}]} for m in MESSAGES]
        return f"{server.url}/v1beta/models/{MODEL}:{method}", {"contents": contents}
    return server.url + "/v1/messages", {"model": MODEL, "max_tokens": 64, "messages": MESSAGES, "stream": stream}


def _record(script: list[Any]) -> dict[tuple[str, bool], Recording]:
    recordings: dict[tuple[str, bool], Recording] = {}
    with ScriptedModel(script) as server, httpx.Client(timeout=10) as client:
        for dialect in DIALECTS:
            for stream in (False, True):
                url, body = _request(server, dialect, stream)
                before = server.usage_reported
                response = client.post(url, json=body)
                after = server.usage_reported
                recordings[dialect, stream] = Recording(
                    dialect,
                    stream,
                    response.status_code,
                    response.content,
                    after.input_tokens - before.input_tokens,
                    after.output_tokens - before.output_tokens,
                )
    return recordings


@pytest.fixture(scope="module")
def replies() -> dict[tuple[str, bool], Recording]:
    return _record([TURN])


@pytest.fixture(scope="module")
def errors() -> dict[tuple[str, bool], Recording]:
    return _record([{"error": {"status": 429, "message": "slow down, répète"}}])


def chunks(body: bytes, size: int) -> Iterator[bytes]:
    return (body[i : i + size] for i in range(0, len(body), size))


def meter(dialect: Dialect, stream: bool, body: bytes, size: int = 7, **options: Any) -> Meter:
    m = Meter(dialect, stream, **options)
    for chunk in chunks(body, size):
        m.feed(chunk)
    return m


def events(body: bytes) -> list[bytes]:
    """The SSE events of a recorded stream, each with its blank line."""
    return [event + b"\n\n" for event in body.split(b"\n\n") if event]


def edit_data(event: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """One SSE event with its JSON data edited (ASCII-escaped, as the recording is)."""
    lines = event.rstrip(b"\n").split(b"\n")
    data = json.loads(lines[-1].removeprefix(b"data: "))
    edit(data)
    return b"\n".join([*lines[:-1], b"data: " + json.dumps(data).encode()]) + b"\n\n"


def data_of(event: bytes) -> dict[str, Any]:
    return json.loads(event.rstrip(b"\n").split(b"\n")[-1].removeprefix(b"data: "))


def _with_cache_writes(response: dict[str, Any]) -> dict[str, Any]:
    response["usage"]["input_tokens_details"].setdefault("cache_write_tokens", 0)
    return response


def find(body: bytes, marker: bytes) -> int:
    """The index of the recorded stream's event that contains ``marker``."""
    matches = [i for i, event in enumerate(events(body)) if marker in event]
    assert len(matches) == 1, marker
    return matches[0]


# The recordings are what the meter was written against


def test_the_recordings_are_the_shapes_the_sdks_read(replies: dict[tuple[str, bool], Recording]) -> None:
    assert all(r.status == 200 and r.input_tokens == 20 and r.output_tokens == 12 for r in replies.values())
    ChatCompletion.model_validate_json(replies["openai-chat", False].body)
    for event in events(replies["openai-chat", True].body)[:-1]:
        ChatCompletionChunk.model_validate(data_of(event))
    assert events(replies["openai-chat", True].body)[-1] == b"data: [DONE]\n\n"
    # openai 3.x declares input_tokens_details.cache_write_tokens required; the scripted server omits it (the SDK
    # parses responses leniently, so clients never notice). It is filled in here, and only it.
    response = json.loads(replies["openai-responses", False].body)
    Response.model_validate(_with_cache_writes(response))
    completed = data_of(events(replies["openai-responses", True].body)[-1])
    _with_cache_writes(completed["response"])
    ResponseCompletedEvent.model_validate(completed)
    Message.model_validate_json(replies["anthropic", False].body)
    stream = replies["anthropic", True].body
    RawMessageStartEvent.model_validate(data_of(events(stream)[find(stream, b'"message_start"')]))
    RawMessageDeltaEvent.model_validate(data_of(events(stream)[find(stream, b'"message_delta"')]))
    # Non-stream JSON carries the model raw (UTF-8); the SSE framing escapes it.
    assert MODEL.encode() in replies["anthropic", False].body and b"mod\\u00e8le" in stream


# Whole replies, in chunks of 1, 7 and 4096 bytes


@pytest.mark.parametrize("size", CHUNK_SIZES)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_whole_reply_meters_what_the_server_reported(
    replies: dict[tuple[str, bool], Recording], dialect: Dialect, stream: bool, size: int
) -> None:
    recording = replies[dialect, stream]
    m = meter(dialect, stream, recording.body, size)
    assert m.finish() == Usage(recording.input_tokens, recording.output_tokens, 0, MODEL)
    assert m.complete and m.error is None and m.gave_up is None


def test_usage_summed_over_the_recordings_is_the_servers_total() -> None:
    with ScriptedModel([TURN]) as server, httpx.Client(timeout=10) as client:
        total = Usage()
        for dialect in DIALECTS:
            for stream in (False, True):
                url, body = _request(server, dialect, stream)
                usage = meter(dialect, stream, client.post(url, json=body).content, 1).finish()
                total.input_tokens += usage.input_tokens
                total.output_tokens += usage.output_tokens
        reported = server.usage_reported
    assert (total.input_tokens, total.output_tokens) == (reported.input_tokens, reported.output_tokens) == (160, 96)


def test_a_chat_stream_without_include_usage_has_no_usage_to_meter() -> None:
    with ScriptedModel([TURN]) as server:
        url, body = _request(server, "openai-chat", True)
        del body["stream_options"]
        recorded = httpx.post(url, json=body, timeout=10).content
    assert b'"usage"' not in recorded and recorded.endswith(b"data: [DONE]\n\n")
    m = meter("openai-chat", True, recorded)
    assert m.finish() == Usage(model=MODEL) and not m.complete


# Cache counts: each dialect's convention (recorded usages edited; the server never reports caching)


def _chat_cached(data: dict[str, Any]) -> None:
    if data.get("usage"):
        data["usage"]["prompt_tokens_details"] = {"cached_tokens": 15, "audio_tokens": 0}


def _responses_cached(data: dict[str, Any]) -> None:
    usage = (data.get("response") or data).get("usage")
    if usage:
        usage["input_tokens_details"] = {"cached_tokens": 15, "cache_write_tokens": 0}


def _gemini_cached(data: dict[str, Any]) -> None:
    data["usageMetadata"]["cachedContentTokenCount"] = 15


class _GeminiShape(BaseModel):  # no Gemini SDK is installed here: the recorded shape is checked by hand
    usageMetadata: dict[str, int]  # Gemini's own field name
    candidates: list[dict[str, Any]]


def _anthropic_cached(data: dict[str, Any]) -> None:
    usage = (data.get("message") or data).get("usage")
    if usage and "input_tokens" in usage:
        usage.update(cache_read_input_tokens=15, cache_creation_input_tokens=4)


CACHED: dict[str, tuple[Callable[[dict[str, Any]], None], Usage, type[BaseModel], type[BaseModel]]] = {
    # OpenAI's input counts include the cache reads; Anthropic's exclude reads and writes, and writes are input.
    "openai-chat": (_chat_cached, Usage(5, 12, 15, MODEL), ChatCompletion, ChatCompletionChunk),
    "openai-responses": (_responses_cached, Usage(5, 12, 15, MODEL), Response, ResponseCompletedEvent),
    "anthropic": (_anthropic_cached, Usage(24, 12, 15, MODEL, 4), Message, RawMessageStartEvent),
    # Gemini's prompt count includes the cached content, as OpenAI's does.
    "gemini": (_gemini_cached, Usage(5, 12, 15, MODEL), _GeminiShape, _GeminiShape),
}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_cached_tokens_follow_each_dialects_convention(
    replies: dict[tuple[str, bool], Recording], dialect: Dialect
) -> None:
    edit, expected, body_type, event_type = CACHED[dialect]
    data = json.loads(replies[dialect, False].body)
    edit(data)
    body_type.model_validate(data)
    assert meter(dialect, False, json.dumps(data).encode(), 1).finish() == expected

    stream = events(replies[dialect, True].body)
    edited = [edit_data(e, edit) if e.startswith((b"data: {", b"event: ")) else e for e in stream]
    marks = (b'cached_tokens": 15', b'cache_read_input_tokens": 15', b'cachedContentTokenCount": 15')
    usage_event = [data_of(e) for e in edited if any(mark in e for mark in marks)]
    assert len(usage_event) == 1
    event_type.model_validate(usage_event[0])
    m = meter(dialect, True, b"".join(edited), 1)
    assert m.finish() == expected and m.complete


def test_anthropic_message_delta_counts_are_cumulative(replies: dict[tuple[str, bool], Recording]) -> None:
    stream = events(replies["anthropic", True].body)
    at = find(replies["anthropic", True].body, b'"message_delta"')

    def partial(data: dict[str, Any]) -> None:
        data["usage"] = {"output_tokens": 5}

    def with_input(data: dict[str, Any]) -> None:  # newer deltas repeat the input counts, cumulative too
        data["usage"].update(input_tokens=20, cache_read_input_tokens=3, cache_creation_input_tokens=None)

    first, last = edit_data(stream[at], partial), edit_data(stream[at], with_input)
    RawMessageDeltaEvent.model_validate(data_of(last))
    m = meter("anthropic", True, b"".join([*stream[:at], first, last, *stream[at + 1 :]]), 1)
    assert m.finish() == Usage(20, 12, 3, MODEL) and m.complete


def test_chat_usage_on_a_choices_chunk_completes_at_done(replies: dict[tuple[str, bool], Recording]) -> None:
    """Some compatible servers put the usage on a chunk with choices (even on every one): [DONE] ends it."""
    stream = events(replies["openai-chat", True].body)
    usage = data_of(stream[-2])["usage"]
    assert data_of(stream[-2])["choices"] == []

    def add_usage(data: dict[str, Any]) -> None:
        data["usage"] = usage

    finish_chunk = edit_data(stream[-3], add_usage)
    ChatCompletionChunk.model_validate(data_of(finish_chunk))
    m = meter("openai-chat", True, b"".join([*stream[:-3], finish_chunk]))
    assert m.usage == Usage(20, 12, 0, MODEL) and not m.complete
    m.feed(stream[-1])
    assert m.finish() == Usage(20, 12, 0, MODEL) and m.complete


# Streams cut off


@pytest.mark.parametrize(
    ("dialect", "marker", "partial"),
    [
        ("openai-chat", b'"usage"', Usage(model=MODEL)),
        ("openai-responses", b'"response.completed"', Usage(model=MODEL)),
        ("anthropic", b'"message_delta"', Usage(20, 0, 0, MODEL)),  # message_start's counts are kept
    ],
)
def test_a_stream_cut_inside_its_usage_event_keeps_what_it_saw(
    replies: dict[tuple[str, bool], Recording], dialect: Dialect, marker: bytes, partial: Usage
) -> None:
    body = replies[dialect, True].body
    cut = body.index(marker) + len(marker) // 2  # half-way through the line that would have completed it
    for size in CHUNK_SIZES:
        m = meter(dialect, True, body[:cut], size)
        assert m.finish() == partial and not m.complete and m.error is None


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_json_body_cut_short_meters_nothing(replies: dict[tuple[str, bool], Recording], dialect: Dialect) -> None:
    body = replies[dialect, False].body
    m = meter(dialect, False, body[: len(body) - 2])
    assert m.finish() == Usage() and not m.complete


def test_a_last_event_without_its_blank_line_still_counts(replies: dict[tuple[str, bool], Recording]) -> None:
    """The upstream reported those tokens; only the framing's last byte is missing."""
    stream = events(replies["anthropic", True].body)
    at = find(replies["anthropic", True].body, b'"message_delta"')
    body = b"".join(stream[: at + 1]).removesuffix(b"\n")
    m = meter("anthropic", True, body, 1)
    assert m.usage == Usage(20, 0, 0, MODEL)  # not yet dispatched: the blank line may still come
    assert m.finish() == Usage(20, 12, 0, MODEL) and m.complete
    m = meter("anthropic", True, body.removesuffix(b"\n"), 1)  # not even the line's end
    assert m.finish() == Usage(20, 12, 0, MODEL) and m.complete


def test_a_chat_stream_cut_after_the_usage_chunk_is_complete(replies: dict[tuple[str, bool], Recording]) -> None:
    body = replies["openai-chat", True].body
    m = meter("openai-chat", True, body.removesuffix(b"data: [DONE]\n\n"))
    assert m.finish() == Usage(20, 12, 0, MODEL) and m.complete


# Errors


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse-asked"])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_error_body_is_reported(errors: dict[tuple[str, bool], Recording], dialect: Dialect, stream: bool) -> None:
    """A failed streamed request is answered with a plain JSON error body: the meter reads it as JSON."""
    recording = errors[dialect, stream]
    assert recording.status == 429 and recording.body.startswith(b"{")
    for size in CHUNK_SIZES:
        m = meter(dialect, stream, recording.body, size)
        assert m.finish() == Usage() and not m.complete
        assert m.error == "slow down, répète"


def _sdk_client(kind: str, body: bytes) -> Any:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    http = httpx2.Client(transport=httpx2.MockTransport(handler))  # both SDKs run on httpx2 now
    if kind == "openai":
        return openai.OpenAI(base_url="http://upstream/v1", api_key="sk-test", http_client=http, max_retries=0)
    return anthropic.Anthropic(base_url="http://upstream", api_key="sk-test", http_client=http, max_retries=0)


def test_an_anthropic_error_event_mid_stream(replies: dict[tuple[str, bool], Recording]) -> None:
    stream = events(replies["anthropic", True].body)
    at = find(replies["anthropic", True].body, b'"message_delta"')
    error = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    body = b"".join([*stream[:at], error])
    client = _sdk_client("anthropic", body)
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        list(client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES, stream=True))
    m = meter("anthropic", True, body, 1)
    assert m.finish() == Usage(20, 0, 0, MODEL) and not m.complete and m.error == "Overloaded"


def test_a_chat_error_chunk_mid_stream(replies: dict[tuple[str, bool], Recording]) -> None:
    stream = events(replies["openai-chat", True].body)
    error = b'data: {"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}\n\n'
    body = b"".join([*stream[:2], error])
    client = _sdk_client("openai", body)
    with pytest.raises(openai.APIError, match="The server had an error"):
        list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    m = meter("openai-chat", True, body, 1)
    assert m.finish() == Usage(model=MODEL) and not m.complete and m.error == "The server had an error"


def test_a_responses_error_event_then_failed_with_usage(replies: dict[tuple[str, bool], Recording]) -> None:
    stream = events(replies["openai-responses", True].body)

    def failed(data: dict[str, Any]) -> None:
        data["type"] = "response.failed"
        data["response"].update(status="failed", error={"code": "server_error", "message": "boom"})
        _with_cache_writes(data["response"])

    failure = edit_data(stream[-1], failed).replace(b"event: response.completed", b"event: response.failed")
    ResponseFailedEvent.model_validate(data_of(failure))
    error = (
        b'event: error\ndata: {"type":"error","code":"server_error","message":"boom","param":null,'
        b'"sequence_number":8}\n\n'
    )
    body = b"".join([*stream[:-1], error, failure])
    client = _sdk_client("openai", body)
    kinds = [event.type for event in client.responses.create(model=MODEL, input=MESSAGES, stream=True)]
    assert kinds[-2:] == ["error", "response.failed"]
    m = meter("openai-responses", True, body, 1)
    assert m.finish() == Usage(20, 12, 0, MODEL) and m.complete and m.error == "boom"


def test_an_error_event_whose_data_is_not_json() -> None:
    m = meter("anthropic", True, b"event: error\ndata: upstream went away\n\n")
    assert m.finish() == Usage() and m.error == "upstream went away"


# Framing


def _raw_utf8(body: bytes) -> bytes:
    """The recorded stream with its data lines re-encoded unescaped, as most providers send them."""
    return b"".join(
        b"\n".join(
            b"data: " + json.dumps(json.loads(line[6:]), ensure_ascii=False).encode()
            if line.startswith(b"data: {")
            else line
            for line in event.split(b"\n")
        )
        for event in events(body)
    )


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_two_byte_character_split_between_chunks(
    replies: dict[tuple[str, bool], Recording], dialect: Dialect
) -> None:
    recording = replies[dialect, True]
    body = _raw_utf8(recording.body)
    e_grave = "è".encode()
    assert len(e_grave) == 2 and e_grave in body
    for at in [i + 1 for i in range(len(body)) if body.startswith(e_grave, i)]:  # split inside each "è"
        m = Meter(dialect, True)
        m.feed(body[:at])
        m.feed(body[at:])
        assert m.finish() == Usage(20, 12, 0, MODEL) and m.complete
    assert meter(dialect, True, body, 1).finish().model == MODEL
    json_body = replies[dialect, False].body
    at = json_body.index(e_grave) + 1
    m = Meter(dialect, False)
    m.feed(json_body[:at])
    m.feed(json_body[at:])
    assert m.finish() == Usage(20, 12, 0, MODEL)


@pytest.mark.parametrize("line_end", [b"\r\n", b"\r"], ids=["crlf", "cr"])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_other_sse_line_ends(replies: dict[tuple[str, bool], Recording], dialect: Dialect, line_end: bytes) -> None:
    body = b": keep-alive comment\n\n" + replies[dialect, True].body
    for size in CHUNK_SIZES:
        m = meter(dialect, True, body.replace(b"\n", line_end), size)
        assert m.finish() == Usage(20, 12, 0, MODEL) and m.complete


GARBAGE = [
    b"",
    b"\x00\xff\xfe\x80",
    b"<html><body>502 Bad Gateway</body></html>",
    b"{not json",
    b"[1, 2, 3]",
    b"null",
    b'"usage"',
    b'{"usage": "lots"}',
    b'{"usage": {"prompt_tokens": -5, "completion_tokens": true, "input_tokens": "9"}}',
    b'{"type": "message", "usage": {"input_tokens": null, "output_tokens": 1.5}}',
    b'{"response": [], "message": 3, "type": 7, "error": null}',
    b"data: {broken\n\n",
    b"data: [DONE]\n\n",
    b"event: message_delta\ndata: 42\n\n",
    b'event: message_delta\ndata: {"type":"message_delta","usage":[]}\n\n',
    b"data: " + b"9" * 100_000,
    b"\n\n\n\r\r\r",
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_garbage_never_raises_and_meters_nothing(dialect: Dialect, stream: bool) -> None:
    for garbage in GARBAGE:
        for size in CHUNK_SIZES:
            m = meter(dialect, stream, garbage, size)
            assert m.finish() == Usage() and not m.complete, garbage
    noise = random.Random(0).randbytes(20_000)
    assert meter(dialect, stream, noise, 13).finish().input_tokens == 0


@pytest.mark.parametrize("dialect", DIALECTS)
def test_mangled_recordings_never_raise(replies: dict[tuple[str, bool], Recording], dialect: Dialect) -> None:
    rng = random.Random(dialect)
    for stream in (False, True):
        body = replies[dialect, stream].body
        for _ in range(200):
            mangled = bytearray(body)
            for _ in range(rng.randint(1, 8)):
                mangled[rng.randrange(len(mangled))] = rng.randrange(256)
            m = meter(dialect, stream, bytes(mangled), rng.choice(CHUNK_SIZES))
            usage = m.finish()
            assert usage.input_tokens >= 0 and usage.output_tokens >= 0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_body_beyond_the_bound_gives_up(replies: dict[tuple[str, bool], Recording], stream: bool) -> None:
    body = replies["anthropic", stream].body
    m = meter("anthropic", stream, body, 7, max_body_bytes=150)
    assert m.gave_up is not None and "150 bytes" in m.gave_up
    usage = m.finish()
    assert not m.complete and usage.output_tokens == 0


def test_finish_is_final(replies: dict[tuple[str, bool], Recording]) -> None:
    body = replies["openai-responses", True].body
    cut = body.index(b"event: response.in_progress")
    m = meter("openai-responses", True, body[:cut])
    first = m.finish()
    m.feed(body[cut:])
    assert m.finish() is first and first == Usage(model=MODEL) and not m.complete
    with pytest.raises(ValueError, match="unknown dialect"):
        Meter("cohere", True)  # type: ignore[arg-type]


# inject_stream_usage


def test_inject_stream_usage() -> None:
    body: dict[str, Any] = {"model": "m", "messages": [], "stream": True}
    injected = inject_stream_usage(body)
    assert injected == {**body, "stream_options": {"include_usage": True}} and "stream_options" not in body

    kept = {"model": "m", "stream": True, "stream_options": {"include_obfuscation": False, "include_usage": False}}
    injected = inject_stream_usage(kept)
    assert injected["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert kept["stream_options"] == {"include_obfuscation": False, "include_usage": False}

    for body in ({"model": "m", "stream": False}, {"model": "m"}, {"model": "m", "stream": "yes"}):
        assert inject_stream_usage(body) is body and "stream_options" not in body
    assert inject_stream_usage({"stream": True, "stream_options": None})["stream_options"] == {"include_usage": True}


# Compressed bodies (httpx's aiter_raw hands the gateway what the upstream sent)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_compressed_body_is_metered(
    replies: dict[tuple[str, bool], Recording], dialect: Dialect, stream: bool, encoding: str
) -> None:
    body = replies[dialect, stream].body
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    for size in CHUNK_SIZES:
        m = meter(dialect, stream, packed, size, content_encoding=encoding.upper())
        assert m.finish() == Usage(20, 12, 0, MODEL) and m.complete and m.gave_up is None
    cut = meter(dialect, stream, packed[: len(packed) * 2 // 3], 7, content_encoding=encoding)
    assert not cut.complete and cut.finish().output_tokens == 0


def test_compression_it_cannot_read_or_that_is_corrupt(replies: dict[tuple[str, bool], Recording]) -> None:
    body = replies["anthropic", True].body
    m = meter("anthropic", True, body, content_encoding="br")
    assert m.finish() == Usage() and m.gave_up is not None and "'br'" in m.gave_up
    m = meter("anthropic", True, body, content_encoding="gzip")  # not compressed at all
    assert m.finish() == Usage() and m.gave_up is not None and "corrupt" in m.gave_up
    bomb = gzip.compress(b" " * 50_000_000)  # 50 MB of whitespace in 48 KiB: bounded, and nothing to meter
    m = meter("openai-chat", False, bomb, 4096, content_encoding="gzip")
    assert m.finish() == Usage() and not m.complete
    m = meter("openai-chat", False, gzip.compress(b"{" + b" " * 50_000_000 + b"}"), 4096, content_encoding="gzip")
    assert m.finish() == Usage() and m.gave_up is not None
