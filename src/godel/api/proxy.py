"""``/proxy/v1`` (and Gemini's ``/proxy/v1beta``): the LLM gateway's wire endpoints, as plain ASGI.

The agents' model traffic is the hottest path of the server, so it skips FastAPI's routing, dependency injection
and ``StreamingResponse``: ``ProxyMiddleware`` sits in front of the app and answers ``/proxy/…`` itself. A request
is authenticated by its virtual key, read, handed to the gateway's policy chain (``Gateway.handle``) and the answer
is relayed chunk by chunk as the provider sends it. When the caller goes away mid-answer the provider's answer is
still read to its end (bounded by ``DRAIN_SECONDS``) and metered, because the provider bills all of it. Refusals
and upstream failures answer in the caller's own dialect.

    POST /proxy/v1/chat/completions                              OpenAI chat completions
    POST /proxy/v1/responses                                     OpenAI Responses
    POST /proxy/v1/messages, /proxy/v1/messages/count_tokens     Anthropic Messages
    POST /proxy/v1beta/models/MODEL:generateContent              Gemini (also :streamGenerateContent, :countTokens)
    GET  /proxy/v1/models                                        the models the key may use
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from godel.gateway.dialects import JSON_TYPE, error_reply
from godel.gateway.exchange import Exchange, Reply
from godel.gateway.service import Gateway
from godel.gateway.types import GatewayError, Wire

log = structlog.get_logger("godel.gateway")

MAX_BODY_BYTES = 32 * 1024 * 1024
DRAIN_SECONDS = 120.0  # how long the rest of an answer whose caller left is read, to meter it
_ROUTES: dict[str, tuple[Wire, str]] = {
    "/proxy/v1/chat/completions": ("openai-chat", "chat/completions"),
    "/proxy/v1/responses": ("openai-responses", "responses"),
    "/proxy/v1/messages": ("anthropic", "messages"),
    "/proxy/v1/messages/count_tokens": ("anthropic", "messages/count_tokens"),
}
_GEMINI = "/proxy/v1beta/models/"
_GEMINI_METHODS = ("generateContent", "streamGenerateContent", "countTokens")


class ProxyMiddleware:
    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/proxy/"):
            await self.app(scope, receive, send)
            return
        await _serve(self.gateway, scope, receive, send)


async def _serve(gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    path: str = scope["path"]
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    query = scope.get("query_string", b"").decode("latin-1")
    if path == "/proxy/v1/models":
        await _send_whole(send, await _models(gateway, headers))
        return
    wire: Wire = (
        "gemini" if path.startswith("/proxy/v1beta") else "anthropic" if "x-api-key" in headers else "openai-chat"
    )
    exchange: Exchange | None = None
    try:
        wire, upstream_path, model = _route(path, wire)
        if scope["method"] != "POST":
            raise GatewayError(405, "invalid_request", f"{path} takes POST")
        query = _clean_query(query, headers, gemini=wire == "gemini")
        raw = await _read_body(receive)
        if raw is None:
            return  # the caller left before sending its request
        key = await gateway.authenticate(headers)
        for name, value in headers.items():
            if not value.isascii():
                raise GatewayError(400, "invalid_request", f"header {name!r} is not ASCII")
        try:
            body = orjson.loads(raw)  # strict: no NaN, no lone surrogates, UTF-8 only
        except orjson.JSONDecodeError:
            raise GatewayError(400, "invalid_request", "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise GatewayError(400, "invalid_request", "the request body must be a JSON object")
        if wire != "gemini":
            named = body.get("model")
            model = named if isinstance(named, str) else ""
        exchange = Exchange(
            wire=wire, path=upstream_path, key=key, model=model, body=body, raw=raw, headers=headers, query=query,
            stream=upstream_path.endswith(":streamGenerateContent") if wire == "gemini" else bool(body.get("stream")),
            metered=not upstream_path.endswith(("count_tokens", ":countTokens")),
        )  # fmt: skip
        reply = await gateway.handle(exchange)
    except GatewayError as exc:
        if exchange is not None:
            await exchange.abandon()  # a policy refused after the provider answered: release what it holds
        await _send_whole(send, error_reply(wire, exc))
        return
    except Exception as exc:  # a bug in a policy: the caller gets an error in its dialect, nothing stays held
        log.exception("the gateway failed on a request", path=path)
        if exchange is not None:
            await exchange.abandon()
        await _send_whole(send, error_reply(wire, GatewayError(500, "upstream", f"the gateway failed: {exc!r}")))
        return
    await _relay(gateway, exchange, reply, receive, send)


def _route(path: str, wire: Wire) -> tuple[Wire, str, str]:
    """``(wire, path under the provider's root, model named in the path)`` of a proxy path, or a 404."""
    if (known := _ROUTES.get(path)) is not None:
        return known[0], known[1], ""
    if path.startswith(_GEMINI):
        model, _, method = path[len(_GEMINI) :].rpartition(":")
        if model and method in _GEMINI_METHODS:
            return "gemini", f"models/{model}:{method}", model
    raise GatewayError(404, "not_found", f"the gateway has no endpoint {path}")


_CREDENTIALS = {"key", "api_key", "api-key", "apikey", "access_token", "token"}


def _clean_query(query: str, headers: dict[str, str], *, gemini: bool) -> str:
    """What of the caller's query string goes on to the provider: never a credential. Gemini clients may send
    their key as ``?key=``: it is taken as the credential (and still not passed on)."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    for name, value in pairs:
        if gemini and name == "key" and value:
            headers.setdefault("x-goog-api-key", value)
    return urlencode([(n, v) for n, v in pairs if n.lower() not in _CREDENTIALS])


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise GatewayError(413, "invalid_request", f"the request body exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send_whole(send: Send, reply: Reply) -> None:
    await send({"type": "http.response.start", "status": reply.status, "headers": reply.headers})
    await send({"type": "http.response.body", "body": reply.body})


async def _relay(gateway: Gateway, exchange: Exchange, reply: Reply, receive: Receive, send: Send) -> None:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    gateway.endings.add(done)
    try:
        if reply.chunks is None:  # a whole answer (a refusal of the provider's, from the cache, …)
            if exchange.settle_before_reply_ends:  # under a budget the caller's next request must see this one
                await exchange.end()
            await _send_whole(send, reply)
            await exchange.end()
            return
        left = asyncio.ensure_future(_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": reply.status, "headers": reply.headers})
            await _stream(exchange, reply, left, send)
        finally:
            left.cancel()
            await reply.aclose()
            exchange.read_meter()  # the usage now, not when the chunk generators happen to be collected
        if exchange.settle_before_reply_ends and not exchange.caller_gone:
            # Under a budget, the caller's next request must find this one settled: end first, then say so.
            await exchange.end()
            await send({"type": "http.response.body", "body": b""})
        else:
            if not exchange.caller_gone:
                await send({"type": "http.response.body", "body": b""})
            await exchange.end()
    finally:
        await exchange.abandon()  # after a clean end: nothing left to do; after a failure: release, record
        gateway.endings.discard(done)
        done.set_result(None)


async def _stream(exchange: Exchange, reply: Reply, left: asyncio.Future[Any], send: Send) -> None:
    assert reply.chunks is not None
    gone_at: float | None = None
    chunks = reply.chunks
    try:
        async for chunk in chunks:
            if gone_at is None:
                if not left.done():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    continue
                gone_at = time.monotonic()
                exchange.caller_gone = True
            meter = exchange.meter
            if (meter is not None and meter.complete) or time.monotonic() - gone_at > DRAIN_SECONDS:
                break
        if gone_at is None and left.done():
            exchange.caller_gone = True
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()  # the generators' own clean-up: the meter's last word, the connection released


async def _disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


def _guess(headers: dict[str, str]) -> Wire:
    return "anthropic" if "x-api-key" in headers else "openai-chat"


async def _models(gateway: Gateway, headers: dict[str, str]) -> Reply:
    """The models the caller's key may use, in a shape both the OpenAI and the Anthropic SDKs read."""
    wire = _guess(headers)
    try:
        key = await gateway.authenticate(headers)
    except GatewayError as exc:
        return error_reply(wire, exc)
    seen: list[str] = []
    for _, model, _ in gateway.allowed_models(key):
        if model not in seen:
            seen.append(model)
    data = [
        {"id": m, "object": "model", "type": "model", "display_name": m, "owned_by": "godel", "created": 0}
        for m in seen
    ]
    body = {"object": "list", "data": data, "has_more": False, "first_id": None, "last_id": None}
    return Reply(200, [JSON_TYPE], orjson.dumps(body))
