"""The gateway's built-in policies, each a ``(exchange, call_next)`` layer (see ``godel.gateway.exchange``).

Their order, outermost first, is what makes them right together (``Gateway.policies`` builds it):

1. ``Redact`` (opt-in) -- before anything else reads the request: the estimate, the provider, the audit log.
2. the policies named in ``gateway_policies`` (a user's own: content filters, …) -- before anything is spent.
3. ``Budget`` -- reserves the request's estimate (refusing an unpriced model under a budget), and settles it with
   the real cost once its usage is recorded -- after the reply's last byte, the reservation counting until then.
4. ``Record`` -- one usage record per request that reached the provider or the cache (the audit of metadata).
5. ``Audit`` (opt-in) -- the request's and the response's bodies, to a JSON-lines file.
6. ``RateLimit`` -- requests and tokens per minute, requests in flight; released the moment the answer ends.
7. ``Cache`` (opt-in) -- identical non-streaming requests answered from memory.
8. ``Fallback`` -- the circuit breaker: a provider that keeps failing is skipped, and a request it fails before
   answering goes to the next provider serving the same model over the same wire API.
then the call to the provider itself (``godel.gateway.forward``).

End callbacks run innermost first, so at the end of an answer the cache and the rate limit are released before
anything awaits, the usage record is written, and only then is the budget settled against it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from godel.core.models import UsageRecord, VirtualKey
from godel.core.ports import Clock
from godel.gateway.budgets import BudgetExceeded, BudgetGuard, Reservation
from godel.gateway.exchange import CallNext, Exchange, Reply
from godel.gateway.policies import (
    AUDIT_BODY_LIMIT,
    AuditLog,
    CachedResponse,
    CircuitBreaker,
    ResponseCache,
    redact_body,
)
from godel.gateway.ratelimits import RateLimited, RateLimiter
from godel.gateway.types import GatewayError, Upstream, Wire


class Gateway(Protocol):
    """What the layers use of the gateway that builds them (``godel.gateway.service.Gateway``)."""

    budgets: BudgetGuard
    clock: Clock
    limits: RateLimiter
    rate_limited: dict[str, tuple[float, str, float]]
    breaker: CircuitBreaker

    def next_upstream(self, exchange: Exchange, tried: set[str]) -> Upstream: ...

    async def record(
        self,
        key: VirtualKey,
        upstream: Upstream,
        *,
        wire: Wire,
        stream: bool,
        status: int,
        usage: Any,
        complete: bool,
        latency_ms: float,
        error: str | None,
        reservation: Reservation | None = None,
    ) -> UsageRecord: ...


GONE = "the caller went away mid-response (the rest of the answer was read to meter it)"


async def redact(exchange: Exchange, call_next: CallNext) -> Reply:
    exchange.body = redact_body(exchange.body)
    return await call_next(exchange)


class Budget:
    def __init__(self, gateway: Gateway) -> None:
        self.guard = gateway.budgets

    async def __call__(self, exchange: Exchange, call_next: CallNext) -> Reply:
        if not exchange.metered or exchange.upstream is None:
            return await call_next(exchange)
        reservation = exchange.state["reservation"] = await self._admit(exchange)
        # The reply's last byte does not wait for the settlement: until the usage record lands, the request's
        # reservation still counts against the budget, so the caller's next request cannot overspend it.
        try:
            reply = await call_next(exchange)
        except BaseException:
            await self.guard.settle(reservation)
            raise

        async def settle(_: Exchange) -> None:
            await self.guard.settle(reservation)  # a no-op when Record settled it with the record

        exchange.on_end(settle)
        return reply

    async def _admit(self, exchange: Exchange) -> Reservation:
        assert exchange.upstream is not None
        while True:
            try:
                return await self.guard.admit(exchange.key, exchange.upstream, exchange.body)
            except BudgetExceeded as refusal:
                if not await self.guard.hold(exchange.key, refusal):  # paused until resumed, then once more
                    raise


class Record:
    """The usage record of every request that got an answer, from the provider or the cache."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, exchange: Exchange, call_next: CallNext) -> Reply:
        reply = await call_next(exchange)
        if exchange.metered:
            exchange.on_end(self._record)
        return reply

    async def _record(self, exchange: Exchange) -> None:
        assert exchange.upstream is not None
        error = GONE if exchange.caller_gone else exchange.error
        reservation: Reservation | None = exchange.state.get("reservation")
        self.gateway.budgets.ending(reservation)
        # The real cost replaces the budget's estimate: the record (and a durable reservation's release) commit
        # in one transaction, then the guard moves the request from reserved to spent.
        record = await self.gateway.record(
            exchange.key, exchange.upstream, wire=exchange.wire, stream=exchange.stream, status=exchange.status,
            usage=exchange.usage, complete=exchange.complete, latency_ms=exchange.latency_ms(), error=error,
            reservation=reservation,
        )  # fmt: skip
        if reservation is not None:
            await self.gateway.budgets.settle(reservation, record)


class Audit:
    """Request and response bodies (the response up to ``AUDIT_BODY_LIMIT`` bytes) of every proxied request."""

    def __init__(self, gateway: Gateway, log: AuditLog) -> None:
        self.gateway = gateway
        self.log = log

    async def __call__(self, exchange: Exchange, call_next: CallNext) -> Reply:
        reply = await call_next(exchange)
        captured = _tee(reply)

        async def write(done: Exchange) -> None:
            key, upstream = done.key, done.upstream
            entry = {
                "keyId": key.id, "scope": f"{key.scope_type}:{key.scope_id}",
                "provider": upstream.provider if upstream else None, "model": upstream.model if upstream else None,
                "wire": done.wire, "path": done.path, "status": done.status, "request": done.body,
                "response": captured.decode("utf-8", errors="replace"),
                "responseEncoding": _header(reply, b"content-encoding"),
            }  # fmt: skip
            await asyncio.to_thread(self.log.write, self.gateway.clock.now(), entry)

        exchange.on_end(write)
        return reply


SHOWN_FOR = 5.0  # seconds an agent's rate-limit refusal stays on the agent at least


class RateLimit:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, exchange: Exchange, call_next: CallNext) -> Reply:
        if not exchange.metered or exchange.upstream is None:
            return await call_next(exchange)
        limits, key, upstream = self.gateway.limits, exchange.key, exchange.upstream
        try:
            ticket = await limits.acquire(key, f"{upstream.provider}/{upstream.model}")
        except RateLimited as refusal:
            if key.scope_type == "agent":  # shown on the agent until the window lets it through
                now = time.time()
                # (until, why, shown until): a refusal is shown for a few seconds at least, even when its limit
                # lifts sooner (a request in flight ends), so that whoever polls the agent sees it happened.
                self.gateway.rate_limited[key.scope_id] = (now + refusal.retry_after, refusal.message, now + SHOWN_FOR)
            raise
        try:
            reply = await call_next(exchange)
        except BaseException:
            await limits.release(ticket, 0)
            raise
        # First when the answer ends (the innermost end): the caller's next request finds its slot free.
        exchange.on_end(lambda done: limits.release(ticket, done.usage.total))
        return reply


class Cache:
    def __init__(self, cache: ResponseCache) -> None:
        self.cache = cache

    async def __call__(self, exchange: Exchange, call_next: CallNext) -> Reply:
        if exchange.stream or not exchange.metered or exchange.upstream is None:
            return await call_next(exchange)
        key = self.cache.key(exchange.upstream.provider, exchange.path, exchange.body)
        hit = self.cache.get(key)
        if hit is not None:  # answered here: the provider is not called
            exchange.status, exchange.complete, exchange.error = hit.status, True, "answered from the gateway's cache"
            headers = [(b"content-type", hit.content_type.encode()), (b"x-godel-cache", b"hit")]
            return Reply(hit.status, headers, hit.body)
        reply = await call_next(exchange)
        if reply.status != 200 or _header(reply, b"content-encoding"):
            return reply
        captured = _tee(reply)

        def keep(done: Exchange) -> None:
            if done.complete and not done.error and len(captured) < AUDIT_BODY_LIMIT:
                content_type = _header(reply, b"content-type") or "application/json"
                self.cache.put(key, CachedResponse(200, content_type, bytes(captured)))

        exchange.on_end(keep)
        return reply


class Fallback:
    """Sends the request to the first provider whose circuit is closed; when that one fails before answering
    (unreachable, 5xx, 429), to the next one serving the same model over the same wire API, if there is one."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, exchange: Exchange, call_next: CallNext) -> Reply:
        breaker, tried = self.gateway.breaker, set[str]()
        exchange.upstream = self.gateway.next_upstream(exchange, tried)  # ProviderUnavailable when none is open
        while True:
            provider = exchange.upstream.provider
            tried.add(provider)
            try:
                reply = await call_next(exchange)
            except asyncio.CancelledError:
                breaker.abandoned(provider)  # the caller left: it says nothing about the provider
                raise
            except Exception:
                breaker.failed(provider)
                raise
            if reply.status < 500 and reply.status != 429:
                breaker.succeeded(provider)
                return reply
            breaker.failed(provider)
            try:  # the next one first: if none is left, this failure is the answer, still unread
                after = self.gateway.next_upstream(exchange, tried)
            except GatewayError:
                return reply
            await reply.aclose()  # tried elsewhere: this failure's body is not the answer
            exchange.upstream = after


def _tee(reply: Reply) -> bytearray:
    """A copy of the body as it goes by (up to the audit limit), complete when the answer has ended."""
    captured = bytearray(reply.body[:AUDIT_BODY_LIMIT])
    if reply.chunks is not None:
        reply.chunks = _copying(reply.chunks, captured)
    return captured


async def _copying(chunks: AsyncIterator[bytes], into: bytearray) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        if len(into) < AUDIT_BODY_LIMIT:
            into.extend(chunk[: AUDIT_BODY_LIMIT - len(into)])
        yield chunk


def _header(reply: Reply, name: bytes) -> str | None:
    for key, value in reply.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None
