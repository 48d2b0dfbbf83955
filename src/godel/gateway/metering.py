"""Token metering of upstream LLM responses, fed incrementally as the gateway streams them through.

The gateway never buffers a response for its client, so a ``Meter`` sees the upstream body as byte chunks with
arbitrary boundaries (an SSE line or a UTF-8 character may be split between two chunks) and extracts the usage
the provider reported, its model and any error message::

    meter = Meter("anthropic", stream=True, content_encoding=upstream.headers.get("content-encoding"))
    async for chunk in upstream.aiter_raw():
        meter.feed(chunk)
        yield chunk
    usage = meter.finish()          # also after a cut: what was seen so far; ``meter.complete`` tells which

Three dialects, and the convention of each (``Usage.input_tokens`` never includes cache reads; ``cached_tokens``
counts cache reads only):

``openai-chat`` (``POST /v1/chat/completions``)
    Non-stream: ``usage.prompt_tokens``, ``usage.completion_tokens`` and
    ``usage.prompt_tokens_details.cached_tokens``. ``prompt_tokens`` *includes* the cached tokens, so
    ``input_tokens = prompt_tokens - cached_tokens``. Stream: ``data: {...}`` chunks, then ``data: [DONE]``; the
    usage comes only when the request set ``stream_options.include_usage`` (see ``inject_stream_usage``), in a
    last chunk with ``choices: []``. That chunk makes the meter ``complete``; so does ``[DONE]`` after any chunk
    with usage (some compatible servers put it in every chunk, cumulatively: the last one wins).

``openai-responses`` (``POST /v1/responses``)
    Non-stream: the response object's ``usage.input_tokens``, ``usage.output_tokens`` and
    ``usage.input_tokens_details.cached_tokens``; ``input_tokens`` *includes* the cached tokens, subtracted as for
    chat. Stream: ``event: X`` / ``data: {"type": X, ...}``; the usage is in ``response.usage`` of the terminal
    event, ``response.completed``, ``response.incomplete`` or ``response.failed`` (any of them with a usage
    makes the meter ``complete``).

``anthropic`` (``POST /v1/messages``)
    Non-stream: ``usage.input_tokens``, ``usage.output_tokens``, ``usage.cache_read_input_tokens`` and
    ``usage.cache_creation_input_tokens``. Anthropic's ``input_tokens`` *excludes* both cache counts, so
    ``input_tokens = input_tokens + cache_creation_input_tokens`` (cache writes are input, billed at a premium)
    and ``cached_tokens = cache_read_input_tokens``. Stream: ``message_start`` carries ``message.usage`` (the
    input counts, and an output count so far); each ``message_delta`` carries *cumulative* counts: its
    ``output_tokens`` (and any input/cache count it gives) replaces the earlier value, never adds to it. A
    ``message_delta`` with a usage makes the meter ``complete``. ``Usage.cache_write_tokens`` says how many of
    the input tokens were cache writes, so they can be priced at their own rate.

``gemini`` (``POST /v1beta/models/MODEL:generateContent`` and ``:streamGenerateContent``)
    ``usageMetadata.promptTokenCount`` (*includes* ``cachedContentTokenCount``), ``candidatesTokenCount`` and
    ``thoughtsTokenCount`` (thinking, billed as output). Stream (``?alt=sse``): ``data: {...}`` chunks, each with
    the usage so far (cumulative: the last one wins); a chunk whose candidate has a ``finishReason`` and a usage
    makes the meter ``complete``. Without ``alt=sse`` the stream is one JSON array of such chunks.

Errors (``Meter.error``): OpenAI's ``{"error": {"message": ...}}`` (a whole body, or an SSE chunk mid-stream),
Anthropic's ``{"type": "error", "error": {"message": ...}}``, the Responses ``error`` event
(``{"type": "error", "message": ...}``) and ``response.failed``'s ``response.error``, and any SSE ``event: error``.
The first one seen is kept.

The body's own first byte decides how it is read, whatever ``stream`` says: ``{`` (or ``[``) means one JSON
document, buffered (up to ``MAX_BODY_BYTES``) and parsed at ``finish``; anything else is read as SSE, line by
line. Upstreams answer a failed streamed request with a plain JSON error body, and a few stream a request that did
not ask for it. Malformed input never raises: it meters as zero usage, not ``complete``.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from dataclasses import dataclass
from typing import Any, Literal, get_args

logger = logging.getLogger(__name__)

Dialect = Literal["openai-chat", "openai-responses", "anthropic", "gemini"]
DIALECTS: tuple[Dialect, ...] = get_args(Dialect)

# Bound on what a meter holds: a whole non-stream body, or one SSE line/event. Beyond it, metering gives up.
MAX_BODY_BYTES = 32 * 1024 * 1024

_EOL = re.compile(rb"\r\n|\r|\n")
_WHITESPACE = b" \t\r\n"
_RESPONSES_TERMINAL = ("response.completed", "response.incomplete", "response.failed")


@dataclass
class Usage:
    """Tokens of one upstream response; ``input_tokens`` excludes cache reads, which are ``cached_tokens``."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    model: str | None = None
    cache_write_tokens: int = 0  # of ``input_tokens``: written to the provider's prompt cache (Anthropic)

    @property
    def total(self) -> int:
        return self.input_tokens + self.cached_tokens + self.output_tokens


def inject_stream_usage(body: dict[str, Any]) -> dict[str, Any]:
    """A chat completions request that will report usage: with ``stream`` true, a copy with
    ``stream_options.include_usage = True`` (other stream options kept). Otherwise -- or when it already asks for
    the usage -- ``body`` itself, unchanged: a non-stream reply always has its usage, and OpenAI rejects
    ``stream_options`` without ``stream``."""
    options = body.get("stream_options")
    if body.get("stream") is not True or (isinstance(options, dict) and options.get("include_usage") is True):
        return body
    merged = dict(options) if isinstance(options, dict) else {}
    merged["include_usage"] = True
    return {**body, "stream_options": merged}


def _count(value: Any) -> int | None:
    """A token count, or None when the value is not one (missing, null, a bool, negative, text...)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


def _error_of(data: dict[str, Any]) -> str | None:
    """The error message an object carries, if it is (or holds) an error."""
    error = data.get("error")
    if isinstance(error, dict):
        for key in ("message", "type", "code"):
            value = error.get(key)
            if isinstance(value, str) and value:
                return value
        return "upstream error"
    if isinstance(error, str) and error:
        return error
    if data.get("type") == "error":  # the Responses stream's error event: its fields are at the top level
        message = data.get("message")
        return message if isinstance(message, str) and message else "upstream error"
    return None


class Meter:
    """Meters one upstream response body of ``dialect``; see the module docstring for what each dialect reports.

    Feed it the body as received: with the upstream's ``Content-Encoding`` as ``content_encoding``, a gzip or
    deflate body is decompressed here (any other encoding gives up, saying so in ``gave_up``).

    ``feed`` and ``finish`` never raise. ``finish`` may be called at any point (a cut stream meters what was
    seen) and more than once; chunks fed after it are ignored.
    """

    def __init__(
        self,
        dialect: Dialect,
        stream: bool,
        *,
        content_encoding: str | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}; expected one of {', '.join(DIALECTS)}")
        self.dialect: Dialect = dialect
        self.stream = stream
        self.max_body_bytes = max_body_bytes
        self.error: str | None = None
        # Why metering stopped short of the end of the body (too large, an encoding it cannot read, corrupt
        # compression), or None. What was metered before it still counts.
        self.gave_up: str | None = None
        self._complete = False
        self._model: str | None = None
        # The counts as the dialect names them: input, cached (reads), cache_creation, output.
        self._counts: dict[str, int] = {}
        self._chat_usage_seen = False
        self._mode: Literal["sniff", "json", "sse"] = "sniff"
        self._body = bytearray()
        self._line = bytearray()
        self._skip_lf = False
        self._first_line = True
        self._event: str | None = None
        self._data: list[str] = []
        self._event_bytes = 0
        self._finished: Usage | None = None
        # Raw upstream bytes (httpx's aiter_raw) are still compressed when the upstream chose to compress.
        self._decoder: Any = None
        encoding = (content_encoding or "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # a gzip or a zlib header, detected
        elif encoding not in ("", "identity"):
            self._give_up(f"cannot read a body with content-encoding {encoding!r}")

    @property
    def complete(self) -> bool:
        """Whether the dialect's terminal usage was seen (so the counts are the provider's final ones)."""
        return self._complete

    @property
    def usage(self) -> Usage:
        """The usage seen so far, without finishing (a partial SSE event still buffered is not counted)."""
        if self._finished is not None:
            return self._finished
        counts = self._counts
        cached = counts.get("cached", 0)
        if self.dialect == "anthropic":
            input_tokens = counts.get("input", 0) + counts.get("cache_creation", 0)
        else:
            input_tokens = max(0, counts.get("input", 0) - cached)
        return Usage(input_tokens, counts.get("output", 0), cached, self._model, counts.get("cache_creation", 0))

    def feed(self, chunk: bytes) -> None:
        if self._finished is not None or self.gave_up is not None or not chunk:
            return
        try:
            if self._decoder is None:
                self._feed(bytes(chunk))
            else:
                self._inflate(bytes(chunk))
        except zlib.error as exc:
            self._give_up(f"the compressed body is corrupt: {exc}")
        except Exception:  # a bug here must never break the response it meters
            logger.exception("metering failed on a %s response", self.dialect)
            self._give_up("internal error while metering")

    def finish(self) -> Usage:
        if self._finished is not None:
            return self._finished
        try:
            if self._decoder is not None and self.gave_up is None:
                try:
                    self._feed(self._decoder.flush())
                except zlib.error as exc:
                    self._give_up(f"the compressed body is corrupt: {exc}")
            if self.gave_up is None:
                if self._mode == "json":
                    self._parse_body()
                elif self._mode == "sse":
                    # A cut stream: an unterminated last line, or an event without its blank line, may still be
                    # whole (the JSON parse decides); the provider reported those counts, so they are metered.
                    if self._line:
                        self._line_done()
                    self._dispatch()
        except Exception:
            logger.exception("metering failed on a %s response", self.dialect)
        self._finished = self.usage
        self._body = bytearray()
        self._line = bytearray()
        self._data = []
        return self._finished

    # Framing

    def _give_up(self, reason: str) -> None:
        self.gave_up = reason
        self._body = bytearray()
        self._line = bytearray()
        self._data = []
        logger.warning("gave up metering a %s response: %s", self.dialect, reason)

    def _inflate(self, chunk: bytes) -> None:
        """Decompress in bounded steps, so a small bomb never expands beyond what the meter would hold anyway."""
        data = self._decoder.decompress(chunk, 1 << 20)
        while True:
            if data:
                self._feed(data)
            if self.gave_up is not None or not self._decoder.unconsumed_tail:
                return
            data = self._decoder.decompress(self._decoder.unconsumed_tail, 1 << 20)

    def _feed(self, chunk: bytes) -> None:
        if self._mode == "sniff":
            stripped = chunk.lstrip(_WHITESPACE)
            if not stripped:
                return  # whitespace before the first byte that decides means nothing in either framing
            self._mode = "json" if stripped[:1] in (b"{", b"[") else "sse"
            chunk = stripped
        if self._mode == "json":
            if len(self._body) + len(chunk) > self.max_body_bytes:
                self._give_up(f"the body exceeds {self.max_body_bytes} bytes")
                return
            self._body += chunk
            return
        if self._skip_lf:  # the last chunk ended in CR: an LF starting this one belongs to the same line end
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        start = 0
        for end in _EOL.finditer(chunk):
            self._line += chunk[start : end.start()]
            start = end.end()
            if end.group() == b"\r" and start == len(chunk):
                self._skip_lf = True
            self._line_done()
            if self.gave_up is not None:
                return
        rest = chunk[start:]
        if len(self._line) + len(rest) + self._event_bytes > self.max_body_bytes:
            self._give_up(f"an SSE event exceeds {self.max_body_bytes} bytes")
            return
        self._line += rest

    def _line_done(self) -> None:
        """One SSE line is complete. Line ends are ASCII, so a split UTF-8 character is whole again here."""
        line = self._line.decode("utf-8", "replace")
        self._line = bytearray()
        if self._first_line:
            self._first_line = False
            line = line.removeprefix("\ufeff")
        if not line:
            self._dispatch()
            return
        if line.startswith(":"):
            return  # a comment (keep-alive)
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
            self._event_bytes += len(value) + 1
            if self._event_bytes > self.max_body_bytes:
                self._give_up(f"an SSE event exceeds {self.max_body_bytes} bytes")

    def _dispatch(self) -> None:
        event, data = self._event, "\n".join(self._data)
        self._event, self._data, self._event_bytes = None, [], 0
        if not data and event is None:
            return
        if data.strip() == "[DONE]":
            if self._chat_usage_seen:
                self._complete = True
            return
        try:
            parsed = json.loads(data)
        except ValueError:
            if event == "error":
                self._set_error(data.strip() or "upstream error")
            return
        if not isinstance(parsed, dict):
            if event == "error":
                self._set_error(data.strip() or "upstream error")
            return
        kind = parsed.get("type")
        self._on_object(parsed, kind if isinstance(kind, str) else event, stream=True)
        if event == "error" and self.error is None:
            self._set_error(_error_of(parsed) or data.strip())

    def _parse_body(self) -> None:
        text = self._body.decode("utf-8-sig", "replace")
        self._body = bytearray()
        try:
            parsed = json.loads(text)
        except ValueError:
            return
        if isinstance(parsed, dict):
            kind = parsed.get("type")
            self._on_object(parsed, kind if isinstance(kind, str) else None, stream=False)
        elif isinstance(parsed, list) and self.dialect == "gemini":  # a stream without alt=sse: an array of chunks
            for chunk in parsed:
                if isinstance(chunk, dict):
                    self._on_object(chunk, None, stream=True)

    # Dialects

    def _set_error(self, message: str | None) -> None:
        if message and self.error is None:
            self.error = message

    def _set_model(self, model: Any) -> None:
        if isinstance(model, str) and model:
            self._model = model

    def _set_counts(self, **counts: Any) -> bool:
        """Replace the counts given (cumulative in every dialect); ones missing or null keep their value.
        Returns whether any was a count at all: a usage object without one is malformed, and completes nothing."""
        valid = False
        for name, value in counts.items():
            count = _count(value)
            if count is not None:
                self._counts[name] = count
                valid = True
        return valid

    def _on_object(self, data: dict[str, Any], kind: str | None, *, stream: bool) -> None:
        self._set_error(_error_of(data))
        if self.dialect == "openai-chat":
            self._on_chat(data, stream=stream)
        elif self.dialect == "openai-responses":
            self._on_responses(data, kind)
        elif self.dialect == "gemini":
            self._on_gemini(data, stream=stream)
        else:
            self._on_anthropic(data, kind)

    def _on_chat(self, data: dict[str, Any], *, stream: bool) -> None:
        self._set_model(data.get("model"))
        usage = data.get("usage")
        if not isinstance(usage, dict):
            return
        details = usage.get("prompt_tokens_details")
        if not self._set_counts(
            input=usage.get("prompt_tokens"),
            output=usage.get("completion_tokens"),
            cached=details.get("cached_tokens") if isinstance(details, dict) else None,
        ):
            return
        self._chat_usage_seen = True
        # In a stream, the usage chunk proper has no choices; one riding on a content chunk awaits [DONE].
        if not stream or not data.get("choices"):
            self._complete = True

    def _on_responses(self, data: dict[str, Any], kind: str | None) -> None:
        if kind is not None and kind.startswith("response."):
            response = data.get("response")
            if not isinstance(response, dict):
                return
            terminal = kind in _RESPONSES_TERMINAL
        elif kind is None:
            response, terminal = data, True  # a non-stream body: the response object itself (it has no `type`)
        else:
            return
        self._set_model(response.get("model"))
        if response is not data:
            self._set_error(_error_of(response))
        usage = response.get("usage")
        if not isinstance(usage, dict):
            return
        details = usage.get("input_tokens_details")
        valid = self._set_counts(
            input=usage.get("input_tokens"),
            output=usage.get("output_tokens"),
            cached=details.get("cached_tokens") if isinstance(details, dict) else None,
        )
        if valid and terminal:
            self._complete = True

    def _on_anthropic(self, data: dict[str, Any], kind: str | None) -> None:
        if kind == "message_start":
            message = data.get("message")
            if not isinstance(message, dict):
                return
        elif kind in ("message", "message_delta"):
            message = data
        else:
            return
        self._set_model(message.get("model"))
        usage = message.get("usage")
        if not isinstance(usage, dict):
            return
        valid = self._set_counts(
            input=usage.get("input_tokens"),
            output=usage.get("output_tokens"),
            cached=usage.get("cache_read_input_tokens"),
            cache_creation=usage.get("cache_creation_input_tokens"),
        )
        if valid and kind != "message_start":
            self._complete = True

    def _on_gemini(self, data: dict[str, Any], *, stream: bool) -> None:
        self._set_model(data.get("modelVersion"))
        usage = data.get("usageMetadata")
        if not isinstance(usage, dict):
            return
        output, thoughts = _count(usage.get("candidatesTokenCount")), _count(usage.get("thoughtsTokenCount"))
        valid = self._set_counts(
            input=usage.get("promptTokenCount"),
            cached=usage.get("cachedContentTokenCount"),
            output=(output or 0) + (thoughts or 0) if output is not None or thoughts is not None else None,
        )
        candidates = data.get("candidates")
        finished = isinstance(candidates, list) and any(
            isinstance(c, dict) and c.get("finishReason") for c in candidates
        )
        if valid and (finished or not stream):
            self._complete = True
