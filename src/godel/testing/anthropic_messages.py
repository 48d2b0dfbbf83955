"""Anthropic Messages, ``POST /v1/messages`` and ``/v1/messages/count_tokens``, as Claude Code and pi call it.

Claude Code's bodies carry fields a replay has no use for (``thinking``, ``context_management``, a
``role: system`` message in the middle of ``messages``); they are tolerated, never validated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from starlette.responses import Response

from godel.testing.wire import (
    BadRequest,
    Inbound,
    Reply,
    dumps,
    is_commit_prompt,
    json_reply,
    model_of,
    require_object,
    sse_reply,
    text_of,
)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _tool_results(message: dict[str, Any]) -> int:
    content = message.get("content")
    if message.get("role") != "user" or not isinstance(content, list):
        return 0
    return sum(1 for block in content if isinstance(block, dict) and block.get("type") == "tool_result")


class Messages:
    name = "anthropic"

    def inspect(self, body: Any) -> Inbound:
        body = require_object(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise BadRequest("messages: must be a non-empty list of objects")
        system = body.get("system")
        system_texts = [text_of(system)] + [text_of(m.get("content")) for m in messages if m.get("role") == "system"]
        return Inbound(
            model=model_of(body),
            stream=body.get("stream") is True,
            tool_results=sum(_tool_results(message) for message in messages),
            messages=len(messages) + (1 if system else 0),
            commit_message_call=is_commit_prompt(system_texts),
        )

    def error(self, status: int, message: str) -> Response:
        kind = ERROR_TYPES.get(status, "api_error")
        return json_reply({"type": "error", "error": {"type": kind, "message": message}}, status)

    def reply(self, reply: Reply) -> Response:
        return sse_reply(self._events(reply)) if reply.inbound.stream else json_reply(self._message(reply))

    def _blocks(self, reply: Reply) -> list[dict[str, Any]]:
        turn = reply.turn
        if turn.text is not None:
            return [{"type": "text", "text": turn.text}]
        return [
            {
                "type": "tool_use",
                "id": reply.call_id("toolu", index),
                "name": call.name,
                "input": call.parsed_arguments(),
            }
            for index, call in enumerate(turn.tool_calls)
        ]

    def _stop_reason(self, reply: Reply) -> str:
        return "tool_use" if reply.turn.tool_calls else "end_turn"

    def _message(self, reply: Reply, *, content: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        streaming = content is not None
        return {
            "id": f"msg_{reply.serial}",
            "type": "message",
            "role": "assistant",
            "model": reply.inbound.model,
            "content": self._blocks(reply) if content is None else content,
            # In a stream the stop reason and the output count arrive later, in ``message_delta``.
            "stop_reason": None if streaming else self._stop_reason(reply),
            "stop_sequence": None,
            "usage": {
                "input_tokens": reply.usage.input_tokens,
                "output_tokens": 0 if streaming else reply.usage.output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }

    def _events(self, reply: Reply) -> Iterator[tuple[str | None, str]]:
        def event(kind: str, **fields: Any) -> tuple[str, str]:
            return kind, dumps({"type": kind, **fields})

        yield event("message_start", message=self._message(reply, content=[]))
        yield event("ping")
        for index, block in enumerate(self._blocks(reply)):
            if block["type"] == "text":
                yield event("content_block_start", index=index, content_block={"type": "text", "text": ""})
                delta = {"type": "text_delta", "text": block["text"]}
            else:
                yield event("content_block_start", index=index, content_block={**block, "input": {}})
                delta = {"type": "input_json_delta", "partial_json": reply.turn.tool_calls[index].arguments}
            yield event("content_block_delta", index=index, delta=delta)
            yield event("content_block_stop", index=index)
        yield event(
            "message_delta",
            delta={"stop_reason": self._stop_reason(reply), "stop_sequence": None},
            usage={"output_tokens": reply.usage.output_tokens},
        )
        yield event("message_stop")
