"""OpenAI chat completions, ``POST /v1/chat/completions``, as pi, aider and mini-swe-agent (litellm) call it."""

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

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found"}


def openai_error(status: int, message: str) -> Response:
    """The error body both OpenAI dialects share; the SDKs pick their exception class from the status."""
    kind = ERROR_TYPES.get(status, "rate_limit_error" if status == 429 else "server_error")
    return json_reply({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)


class ChatCompletions:
    name = "openai-chat"

    def inspect(self, body: Any) -> Inbound:
        body = require_object(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("`messages` must be a non-empty list")
        if not all(isinstance(message, dict) for message in messages):
            raise BadRequest("each message must be an object")
        options = body.get("stream_options")
        system = (text_of(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
        return Inbound(
            model=model_of(body),
            stream=body.get("stream") is True,
            tool_results=sum(1 for message in messages if message.get("role") == "tool"),
            messages=len(messages),
            commit_message_call=is_commit_prompt(system),
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        )

    def error(self, status: int, message: str) -> Response:
        return openai_error(status, message)

    def reply(self, reply: Reply) -> Response:
        return sse_reply(self._chunks(reply)) if reply.inbound.stream else json_reply(self._completion(reply))

    def _tool_calls(self, reply: Reply) -> list[dict[str, Any]]:
        return [
            {
                "id": reply.call_id("call", index),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for index, call in enumerate(reply.turn.tool_calls)
        ]

    def _usage(self, reply: Reply) -> dict[str, int]:
        usage = reply.usage
        return {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
        }

    def _finish_reason(self, reply: Reply) -> str:
        return "tool_calls" if reply.turn.tool_calls else "stop"

    def _completion(self, reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.turn.text}
        if reply.turn.tool_calls:
            message["tool_calls"] = self._tool_calls(reply)
        return {
            "id": f"chatcmpl-{reply.serial}",
            "object": "chat.completion",
            "created": 0,
            "model": reply.inbound.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self._finish_reason(reply)}],
            "usage": self._usage(reply),
        }

    def _chunks(self, reply: Reply) -> Iterator[tuple[str | None, str]]:
        head = {
            "id": f"chatcmpl-{reply.serial}",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": reply.inbound.model,
        }

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> tuple[None, str]:
            return None, dumps({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})

        yield chunk({"role": "assistant", "content": ""})
        if reply.turn.text:
            yield chunk({"content": reply.turn.text})
        # The name and id come first with empty arguments, then the arguments: the split real servers make,
        # which is what clients' accumulators are written for.
        for index, call in enumerate(self._tool_calls(reply)):
            opening = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
            yield chunk({"tool_calls": [{"index": index, **opening}]})
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": call["function"]["arguments"]}}]})
        yield chunk({}, self._finish_reason(reply))
        if reply.inbound.include_usage:
            yield None, dumps({**head, "choices": [], "usage": self._usage(reply)})
        yield None, "[DONE]"
