"""What the wire dialects share: the facts read from a request, the reply's usage, and SSE framing.

Each dialect module (``openai_chat``, ``openai_responses``, ``anthropic_messages``, ``gemini``) implements ``Dialect``;
the server routes a path to one and never looks inside a body itself.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from sse_starlette import ServerSentEvent
from starlette.responses import JSONResponse, Response, StreamingResponse

from godel.testing.script import Turn

# aider asks for a commit message in a side call with this system prompt (measured, aider 0.86.2).
AIDER_COMMIT_PROMPT = "generates concise, one-line git commit messages"


class BadRequest(Exception):
    """The body is not a request of this dialect; answered with 400 in the dialect's error shape."""


@dataclass(frozen=True)
class Inbound:
    """What the server needs to know about one request, whatever its dialect."""

    model: str
    stream: bool
    tool_results: int
    # Messages (or Responses input items), with the system prompt counted as one: the basis of input usage.
    messages: int
    commit_message_call: bool = False
    include_usage: bool = False


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Reply:
    """Everything a dialect needs to render one turn."""

    turn: Turn
    inbound: Inbound
    usage: Usage
    # A small per-server counter, so ids are unique within a run and stable between runs.
    serial: int

    def call_id(self, prefix: str, index: int) -> str:
        return f"{prefix}_{self.serial}_{index}"


class Dialect(Protocol):
    name: str

    def inspect(self, body: Any) -> Inbound:
        """Read a request body; raise ``BadRequest`` when it is not one this dialect accepts."""
        ...

    def reply(self, reply: Reply) -> Response: ...

    def error(self, status: int, message: str) -> Response: ...


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("`model` is required")
    return model


def text_of(content: Any) -> str:
    """The text in a message's content, whether a string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(text_of(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def is_commit_prompt(texts: Iterable[str]) -> bool:
    return any(AIDER_COMMIT_PROMPT in text.lower() for text in texts)


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def json_reply(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


def sse_reply(events: Iterator[tuple[str | None, str]]) -> StreamingResponse:
    """Stream ``(event name, data)`` pairs as SSE; a ``None`` name sends a bare ``data:`` line (OpenAI chat)."""

    async def body() -> AsyncIterator[bytes]:
        for event, data in events:
            # Plain LF line ends: the framing every agent CLI was measured to accept.
            yield ServerSentEvent(data=data, event=event, sep="\n").encode()

    # sse-starlette frames each event; its EventSourceResponse is not used because its keep-alive pings and
    # process-wide shutdown state add nothing to a reply that is complete the moment it starts.
    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
