"""Refusals in each caller's own dialect: an agent CLI shows a Godel refusal (no key, over budget, rate limited,
provider down) the way it shows its provider's errors, and retries the ones its provider would have it retry."""

from __future__ import annotations

from typing import Any

import orjson

from godel.gateway.exchange import Reply
from godel.gateway.types import GatewayError, Wire

_ANTHROPIC = {
    "authentication": "authentication_error",
    "not_found": "not_found_error",
    "invalid_request": "invalid_request_error",
    "permission": "permission_error",
    "upstream": "api_error",
    "budget": "billing_error",
    "rate_limit": "rate_limit_error",
    "unavailable": "overloaded_error",
}
_OPENAI = {
    "authentication": ("invalid_request_error", "invalid_api_key"),
    "not_found": ("invalid_request_error", "model_not_found"),
    "invalid_request": ("invalid_request_error", None),
    "permission": ("invalid_request_error", "permission_denied"),
    "upstream": ("api_error", "upstream_error"),
    "budget": ("insufficient_quota", "budget_exceeded"),
    "rate_limit": ("requests", "rate_limit_exceeded"),
    "unavailable": ("api_error", "service_unavailable"),
}
# Google's canonical status names, as Gemini's error bodies carry them.
_GEMINI = {
    "authentication": "UNAUTHENTICATED",
    "not_found": "NOT_FOUND",
    "invalid_request": "INVALID_ARGUMENT",
    "permission": "PERMISSION_DENIED",
    "upstream": "UNAVAILABLE",
    "budget": "RESOURCE_EXHAUSTED",
    "rate_limit": "RESOURCE_EXHAUSTED",
    "unavailable": "UNAVAILABLE",
}
JSON_TYPE = (b"content-type", b"application/json")


def error_body(wire: Wire, exc: GatewayError) -> dict[str, Any]:
    if wire == "anthropic":
        return {"type": "error", "error": {"type": _ANTHROPIC.get(exc.kind, "api_error"), "message": exc.message}}
    if wire == "gemini":
        return {"error": {"code": exc.status, "message": exc.message, "status": _GEMINI.get(exc.kind, "INTERNAL")}}
    kind, code = _OPENAI.get(exc.kind, ("api_error", None))
    return {"error": {"message": exc.message, "type": kind, "param": None, "code": code}}


def error_reply(wire: Wire, exc: GatewayError) -> Reply:
    headers = [JSON_TYPE]
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:  # a rate limit, a provider whose circuit is open, Redis unreachable
        headers.append((b"retry-after", str(retry_after).encode()))
    return Reply(exc.status, headers, orjson.dumps(error_body(wire, exc)))
