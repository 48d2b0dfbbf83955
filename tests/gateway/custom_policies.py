"""Policies loaded through ``gateway_policies`` in the tests (a user's own, as ``module:factory``)."""

from __future__ import annotations

from typing import Any

import orjson

from godel.gateway.exchange import CallNext, Exchange, Policy, Reply
from godel.gateway.types import GatewayError


def no_passwords(gateway: Any) -> Policy:
    """A content filter: a request that would send a password to the provider is refused before anything is spent."""

    async def policy(exchange: Exchange, call_next: CallNext) -> Reply:
        if b"password" in orjson.dumps(exchange.body).lower():
            raise GatewayError(400, "invalid_request", "this request would send a password to the provider")
        return await call_next(exchange)

    return policy


def tag_requests(gateway: Any) -> Policy:
    """Rewrites what is sent (a new body, never edited in place) and stamps the answer's end with the usage."""

    async def policy(exchange: Exchange, call_next: CallNext) -> Reply:
        exchange.body = {**exchange.body, "user": f"godel:{exchange.key.scope_id}"}
        reply = await call_next(exchange)
        exchange.on_end(lambda done: SEEN.append((done.status, done.usage.output_tokens, done.complete)))
        return reply

    return policy


SEEN: list[tuple[int, int, bool]] = []


def refuse_after(gateway: Any) -> Policy:
    """Looks at the provider's answer and refuses it: raises after ``call_next`` returned."""

    async def policy(exchange: Exchange, call_next: CallNext) -> Reply:
        reply = await call_next(exchange)
        if exchange.body.get("user") == "blocked":
            raise GatewayError(403, "permission", "this answer is not allowed")
        if exchange.body.get("user") == "boom":
            raise RuntimeError("a bug in a policy")
        return reply

    return policy
