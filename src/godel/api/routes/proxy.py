"""``/proxy/v1``: the LLM gateway's wire endpoints (OpenAI chat completions and Responses, Anthropic Messages).

A request is authenticated by its virtual key, routed to the provider that serves its model over its wire API,
and forwarded with the provider's real key. The response is streamed back as it arrives (never buffered whole)
while a ``Meter`` reads its usage; when the response ends -- or the caller goes away mid-stream -- one usage
record is written, exactly once. Refusals and upstream failures answer in the caller's own dialect, so the
agent CLIs show them as they would a provider's.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from godel.gateway.budgets import BudgetExceeded, Reservation
from godel.gateway.metering import Meter, Usage, inject_stream_usage
from godel.gateway.policies import AUDIT_BODY_LIMIT, CachedResponse, redact_body
from godel.gateway.ratelimits import RateLimited, Ticket
from godel.gateway.service import Gateway
from godel.gateway.types import GatewayError, Wire

log = structlog.get_logger("godel.gateway")
router = APIRouter(prefix="/proxy/v1", tags=["gateway"])

# Not passed back: the relay re-frames the body. content-encoding is kept: the raw (possibly compressed) bytes
# are relayed as they came, and the meter decompresses its own copy.
_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive"}
_ANTHROPIC_ERROR = {
    "authentication": "authentication_error",
    "not_found": "not_found_error",
    "invalid_request": "invalid_request_error",
    "permission": "permission_error",
    "upstream": "api_error",
    "budget": "billing_error",
    "rate_limit": "rate_limit_error",
}
_OPENAI_ERROR = {
    "authentication": ("invalid_request_error", "invalid_api_key"),
    "not_found": ("invalid_request_error", "model_not_found"),
    "invalid_request": ("invalid_request_error", None),
    "permission": ("invalid_request_error", "permission_denied"),
    "upstream": ("api_error", "upstream_error"),
    "budget": ("insufficient_quota", "budget_exceeded"),
    "rate_limit": ("requests", "rate_limit_exceeded"),
}
_pending: set[asyncio.Task[Any]] = set()  # usage records being written (some after their caller went away)
GONE = "the caller went away mid-response (the rest of the answer was read to meter it)"
DRAIN_SECONDS = 120.0  # how long the rest of an answer whose caller left is read, to meter it


def error_response(wire: Wire, exc: GatewayError) -> JSONResponse:
    response = _error_body(wire, exc)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:  # a rate limit, or a provider whose circuit is open
        response.headers["retry-after"] = str(retry_after)
    return response


def _error_body(wire: Wire, exc: GatewayError) -> JSONResponse:
    if wire == "anthropic":
        body: dict[str, Any] = {
            "type": "error",
            "error": {"type": _ANTHROPIC_ERROR.get(exc.kind, "api_error"), "message": exc.message},
        }
    else:
        kind, code = _OPENAI_ERROR.get(exc.kind, ("api_error", None))
        body = {"error": {"message": exc.message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=exc.status)


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def _client(request: Request) -> httpx.AsyncClient:
    client: httpx.AsyncClient = request.app.state.gateway_http
    return client


async def _proxy(request: Request, wire: Wire, path: str) -> Response:
    gateway = _gateway(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        key = await gateway.authenticate(headers)
        raw = await request.body()
        try:
            body = json.loads(raw, parse_constant=_no_constant)
            content = _encode(body)  # also refuses lone surrogates (UTF-8 only)
        except (ValueError, UnicodeEncodeError):
            raise GatewayError(400, "invalid_request", "the request body is not valid JSON") from None
        for name, value in headers.items():
            if not value.isascii():
                raise GatewayError(400, "invalid_request", f"header {name!r} is not ASCII")
        if not isinstance(body, dict):
            raise GatewayError(400, "invalid_request", "the request body must be a JSON object")
        if gateway.redact:  # before anything else reads it: estimates, the provider, the audit log
            body = redact_body(body)
            content = _encode(body)
        model = body.get("model")
        upstream = gateway.route(key, wire, model if isinstance(model, str) else "", path, headers)
        count_tokens = path.endswith("count_tokens")  # a token count is free: nothing to reserve, meter or record
        ticket = Ticket() if count_tokens else _rate_limit(gateway, key, upstream)
        try:
            reservation = Reservation() if count_tokens else await _admit(gateway, key, upstream, body)
        except BaseException:
            gateway.limits.release(ticket, 0)
            raise
    except GatewayError as exc:
        return error_response(wire, exc)
    stream = bool(body.get("stream"))
    cache_key = None
    if gateway.cache is not None and not stream and not count_tokens:
        cache_key = gateway.cache.key(upstream.provider, path, body)
        if (hit := gateway.cache.get(cache_key)) is not None:  # answered here: the provider is not called
            gateway.limits.release(ticket, 0)
            try:
                await gateway.record(
                    key, upstream, wire=wire, stream=False, status=hit.status, usage=Usage(), complete=True,
                    latency_ms=0.0, error="answered from the gateway's cache",
                )  # fmt: skip
            finally:
                await gateway.budgets.settle(reservation)
            return Response(hit.body, status_code=hit.status, media_type=hit.content_type,
                            headers={"x-godel-cache": "hit"})  # fmt: skip
    if wire == "openai-chat" and stream:
        body = inject_stream_usage(body)  # so a streamed chat response can always be metered
        content = _encode(body)
    started = time.perf_counter()
    try:
        outbound = _client(request).build_request(
            "POST", upstream.url, content=content, headers={**upstream.headers, "content-type": "application/json"}
        )
        response = await _client(request).send(outbound, stream=True)
    except BaseException as exc:  # nothing is streaming yet: whatever happened, give back what was taken
        error = f"provider {upstream.provider!r} unreachable: {type(exc).__name__}: {exc}"
        if isinstance(exc, httpx.HTTPError):
            gateway.breaker.failed(upstream.provider)
        try:
            if isinstance(exc, httpx.HTTPError):
                await gateway.record(key, upstream, wire=wire, stream=stream, status=502, usage=Usage(),
                                     complete=False, latency_ms=_ms(started), error=error)  # fmt: skip
        finally:
            gateway.limits.release(ticket, 0)
            await gateway.budgets.settle(reservation)
        if not isinstance(exc, httpx.HTTPError):
            raise
        return error_response(wire, GatewayError(502, "upstream", error))
    if response.status_code >= 500 or response.status_code == 429:
        gateway.breaker.failed(upstream.provider)
    else:
        gateway.breaker.succeeded(upstream.provider)
    meter = Meter(wire, stream, content_encoding=response.headers.get("content-encoding"))
    keep = cache_key is not None and response.status_code == 200 and not response.headers.get("content-encoding")
    # the response, for the audit log or the cache
    captured = bytearray() if gateway.audit is not None or keep else None
    out_headers = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP}
    # The upstream is read by its own task (the pump), which meters every chunk and hands it to the relay that
    # writes it to the caller. If the caller goes away, the relay is cancelled but the pump reads on (bounded),
    # because the provider answers -- and bills -- in full: the record then has the whole usage.
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=64)
    gone: list[float] = []  # when the caller went away (empty while it is there)

    async def pump() -> str | None:
        try:
            async for chunk in response.aiter_raw():
                meter.feed(chunk)
                if captured is not None and len(captured) < AUDIT_BODY_LIMIT:
                    captured.extend(chunk[: AUDIT_BODY_LIMIT - len(captured)])
                if not gone:
                    await chunks.put(chunk)
                elif meter.complete or time.monotonic() - gone[0] > DRAIN_SECONDS:
                    break
            return None
        except Exception as exc:
            return f"upstream stream broke: {type(exc).__name__}: {exc}"
        finally:
            if not gone:
                await chunks.put(None)

    async def run() -> None:
        error = await pump()
        usage = meter.finish()
        if keep and not error and captured is not None and meter.complete and len(captured) < AUDIT_BODY_LIMIT:
            assert gateway.cache is not None and cache_key is not None  # before any await: the next ask may hit it
            content_type = response.headers.get("content-type", "application/json")
            gateway.cache.put(cache_key, CachedResponse(200, content_type, bytes(captured)))
        # At once (no await since the stream ended): the caller's next request finds its slot free.
        gateway.limits.release(ticket, usage.input_tokens + usage.cached_tokens + usage.output_tokens)
        try:
            await response.aclose()
        finally:
            if not count_tokens:
                await _record(error or (GONE if gone else None), usage)
            if gateway.audit is not None and captured is not None:
                entry = {
                    "keyId": key.id, "scope": f"{key.scope_type}:{key.scope_id}", "provider": upstream.provider,
                    "model": upstream.model, "wire": wire, "path": path, "status": response.status_code,
                    "request": body, "response": captured.decode("utf-8", errors="replace"),
                    "responseEncoding": response.headers.get("content-encoding"),
                }  # fmt: skip
                await asyncio.to_thread(gateway.audit.write, gateway.clock.now(), entry)

    async def _record(error: str | None, usage: Usage) -> None:
        try:
            await gateway.record(
                key, upstream, wire=wire, stream=stream, status=response.status_code, usage=usage,
                complete=meter.complete, latency_ms=_ms(started), error=error or meter.error,
            )  # fmt: skip
        finally:
            await gateway.budgets.settle(reservation)  # the real cost replaces the estimate

    task = asyncio.get_running_loop().create_task(run())
    _pending.add(task)
    task.add_done_callback(_record_done)

    async def relay() -> AsyncIterator[bytes]:
        try:
            while (chunk := await chunks.get()) is not None:
                yield chunk
        except (asyncio.CancelledError, GeneratorExit):
            gone.append(time.monotonic())
            while not chunks.empty():  # a pump waiting for room must not wait forever
                chunks.get_nowait()
            raise
        if reservation.budgets:
            # Under a budget the caller's next request must find this one settled (shielded: the caller may go
            # away now, and the record must be written all the same).
            await asyncio.shield(task)

    return StreamingResponse(relay(), status_code=response.status_code, headers=out_headers)


def _record_done(task: asyncio.Task[Any]) -> None:
    _pending.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("a usage record could not be written", error=repr(task.exception()))


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _rate_limit(gateway: Gateway, key: Any, upstream: Any) -> Ticket:
    try:
        return gateway.limits.acquire(key, f"{upstream.provider}/{upstream.model}")
    except RateLimited as refusal:
        if key.scope_type == "agent":  # shown on the agent until the window lets it through
            gateway.rate_limited[key.scope_id] = (time.time() + refusal.retry_after, refusal.message)
        raise


async def _admit(gateway: Gateway, key: Any, upstream: Any, body: dict[str, Any]) -> Reservation:
    while True:
        try:
            return await gateway.budgets.admit(key, upstream, body)
        except BudgetExceeded as refusal:
            if not await gateway.budgets.hold(key, refusal):  # paused until resumed, then once more
                raise


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


@router.post("/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await _proxy(request, "openai-chat", "chat/completions")


@router.post("/responses")
async def responses(request: Request) -> Response:
    return await _proxy(request, "openai-responses", "responses")


@router.post("/messages")
async def messages(request: Request) -> Response:
    return await _proxy(request, "anthropic", "messages")


@router.post("/messages/count_tokens")
async def count_tokens(request: Request) -> Response:
    return await _proxy(request, "anthropic", "messages/count_tokens")


@router.get("/models")
async def models(request: Request) -> Response:
    """The models the caller's key may use, in a shape both the OpenAI and the Anthropic SDKs read."""
    gateway = _gateway(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    wire: Wire = "anthropic" if "x-api-key" in headers else "openai-chat"
    try:
        key = await gateway.authenticate(headers)
    except GatewayError as exc:
        return error_response(wire, exc)
    seen: list[str] = []
    for _, model, _ in gateway.allowed_models(key):
        if model not in seen:
            seen.append(model)
    data = [
        {"id": m, "object": "model", "type": "model", "display_name": m, "owned_by": "godel", "created": 0}
        for m in seen
    ]
    return JSONResponse({"object": "list", "data": data, "has_more": False, "first_id": None, "last_id": None})


async def settle() -> None:
    """Wait for usage records still being written (tests; shutdown)."""
    while _pending:
        await asyncio.gather(*list(_pending), return_exceptions=True)
