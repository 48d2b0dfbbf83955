"""OpenAI Responses, ``POST /v1/responses``, as codex (its only wire API) and pi call it.

codex fails a turn whose stream lacks ``response.completed`` (measured), so every stream ends with it, carrying
the usage. The full item lifecycle (added, deltas, done) is sent because SDK stream accumulators rely on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from starlette.responses import Response

from godel.testing.openai_chat import openai_error
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

TOOL_OUTPUTS = ("function_call_output", "custom_tool_call_output")


class Responses:
    name = "openai-responses"

    def inspect(self, body: Any) -> Inbound:
        body = require_object(body)
        items = body.get("input")
        if isinstance(items, str):
            items = [{"type": "message", "role": "user", "content": items}]
        if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
            raise BadRequest("`input` must be a string or a non-empty list of items")
        instructions = body.get("instructions")
        system = [text_of(i.get("content")) for i in items if i.get("role") in ("system", "developer")]
        if isinstance(instructions, str):
            system.append(instructions)
        return Inbound(
            model=model_of(body),
            stream=body.get("stream") is True,
            tool_results=sum(1 for item in items if item.get("type") in TOOL_OUTPUTS),
            messages=len(items) + (1 if instructions else 0),
            commit_message_call=is_commit_prompt(system),
        )

    def error(self, status: int, message: str) -> Response:
        return openai_error(status, message)

    def reply(self, reply: Reply) -> Response:
        if reply.inbound.stream:
            return sse_reply(self._events(reply))
        return json_reply(self._response(reply, "completed", self._items(reply)))

    def _items(self, reply: Reply) -> list[dict[str, Any]]:
        turn = reply.turn
        if turn.text is not None:
            part = {"type": "output_text", "text": turn.text, "annotations": []}
            return [
                {
                    "type": "message",
                    "id": f"msg_{reply.serial}",
                    "role": "assistant",
                    "status": "completed",
                    "content": [part],
                }
            ]
        return [
            {
                "type": "function_call",
                "id": reply.call_id("fc", index),
                "call_id": reply.call_id("call", index),
                "name": call.name,
                "arguments": call.arguments,
                "status": "completed",
            }
            for index, call in enumerate(turn.tool_calls)
        ]

    def _response(self, reply: Reply, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        usage = reply.usage
        done = status == "completed"
        return {
            "id": f"resp_{reply.serial}",
            "object": "response",
            "created_at": 0,
            "status": status,
            "model": reply.inbound.model,
            "output": output,
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "metadata": {},
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": usage.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": usage.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage.total_tokens,
            }
            if done
            else None,
        }

    def _events(self, reply: Reply) -> Iterator[tuple[str | None, str]]:
        sequence = 0

        def event(kind: str, **fields: Any) -> tuple[str, str]:
            nonlocal sequence
            data = {"type": kind, "sequence_number": sequence, **fields}
            sequence += 1
            return kind, dumps(data)

        yield event("response.created", response=self._response(reply, "in_progress", []))
        yield event("response.in_progress", response=self._response(reply, "in_progress", []))
        items = self._items(reply)
        for index, item in enumerate(items):
            yield from self._item_events(event, index, item)
        yield event("response.completed", response=self._response(reply, "completed", items))

    def _item_events(
        self, event: Callable[..., tuple[str, str]], index: int, item: dict[str, Any]
    ) -> Iterator[tuple[str, str]]:
        item_id = item["id"]
        if item["type"] == "message":
            text = item["content"][0]["text"]
            empty_part = {"type": "output_text", "text": "", "annotations": []}
            where = {"item_id": item_id, "output_index": index, "content_index": 0}
            yield event(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            )
            yield event("response.content_part.added", **where, part=empty_part)
            yield event("response.output_text.delta", **where, delta=text, logprobs=[])
            yield event("response.output_text.done", **where, text=text, logprobs=[])
            yield event("response.content_part.done", **where, part=item["content"][0])
        else:
            yield event(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            where = {"item_id": item_id, "output_index": index}
            yield event("response.function_call_arguments.delta", **where, delta=item["arguments"])
            yield event(
                "response.function_call_arguments.done", **where, name=item["name"], arguments=item["arguments"]
            )
        yield event("response.output_item.done", output_index=index, item=item)
