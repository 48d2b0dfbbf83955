"""Google Gemini API, ``POST /v1beta/models/MODEL:generateContent`` and ``:streamGenerateContent?alt=sse``, as
gemini-cli calls it (``GOOGLE_GEMINI_BASE_URL`` pointed at the server, ``gemini-api-key`` auth).

Unlike the other dialects, the model and whether to stream are in the URL, not the body, so the server makes
one ``GenerateContent`` per request with both. Function calls have no ids on this wire: results are matched to
calls by name and order, and counted as ``functionResponse`` parts.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from godel.testing.wire import (
    BadRequest,
    Inbound,
    Reply,
    dumps,
    is_commit_prompt,
    json_reply,
    require_object,
    sse_reply,
    text_of,
)

# google.rpc.Code names, which the Gemini API puts in ``error.status``.
STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def gemini_error(status: int, message: str) -> Response:
    return json_reply(
        {"error": {"code": status, "message": message, "status": STATUSES.get(status, "UNKNOWN")}}, status
    )


def _parts(content: Any) -> list[dict[str, Any]]:
    parts = content.get("parts") if isinstance(content, dict) else None
    return [part for part in parts if isinstance(part, dict)] if isinstance(parts, list) else []


class GenerateContent:
    name = "gemini"

    def __init__(self, model: str = "", *, stream: bool = False) -> None:
        self.model = model
        self.stream = stream

    def inspect(self, body: Any) -> Inbound:
        body = require_object(body)
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents or not all(isinstance(c, dict) for c in contents):
            raise BadRequest("contents: must be a non-empty list of objects")
        if not self.model:
            raise BadRequest("the URL names no model")
        system = body.get("systemInstruction") or body.get("system_instruction")
        system_text = text_of(_parts(system)) if isinstance(system, dict) else text_of(system)
        return Inbound(
            model=self.model,
            stream=self.stream,
            tool_results=sum(1 for c in contents for part in _parts(c) if "functionResponse" in part),
            messages=len(contents) + (1 if system else 0),
            commit_message_call=is_commit_prompt([system_text]),
        )

    def error(self, status: int, message: str) -> Response:
        return gemini_error(status, message)

    def reply(self, reply: Reply) -> Response:
        chunk = self._response(reply)
        return sse_reply(iter([(None, dumps(chunk))])) if reply.inbound.stream else json_reply(chunk)

    def _response(self, reply: Reply) -> dict[str, Any]:
        turn = reply.turn
        parts: list[dict[str, Any]] = []
        if turn.text is not None:
            parts.append({"text": turn.text})
        parts += [{"functionCall": {"name": c.name, "args": c.parsed_arguments()}} for c in turn.tool_calls]
        if not parts:
            parts.append({"text": ""})
        usage = reply.usage
        return {
            "candidates": [
                # Gemini ends a function-calling turn with STOP too; the calls themselves say what comes next.
                {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": {
                "promptTokenCount": usage.input_tokens,
                "candidatesTokenCount": usage.output_tokens,
                "totalTokenCount": usage.total_tokens,
            },
            "modelVersion": reply.inbound.model,
            "responseId": f"resp_{reply.serial}",
        }


def split_target(target: str) -> tuple[str, str]:
    """``"gemini-x:streamGenerateContent"`` → ``("gemini-x", "streamGenerateContent")``."""
    model, _, method = target.rpartition(":")
    return model, method
