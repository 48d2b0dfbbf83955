"""The centre of the policy chain: the request goes to its provider, and the answer comes back as it arrives.

The body is sent as the policies left it, with the provider's real key (``Upstream.headers``). The answer is not
buffered: its raw bytes (still compressed, if the provider compressed them) are handed on chunk by chunk, and a
``Meter`` reads each one on the way, so the usage is known the moment the answer ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from godel.gateway.dialects import error_reply
from godel.gateway.exchange import Exchange, Reply
from godel.gateway.metering import Meter, inject_stream_usage
from godel.gateway.types import GatewayError

# Not passed back: the relay frames the body itself. content-encoding is kept: the raw bytes are relayed as they
# came, and the meter decompresses its own copy.
_HOP_BY_HOP = {b"content-length", b"transfer-encoding", b"connection", b"keep-alive"}


class Forward:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def __call__(self, exchange: Exchange) -> Reply:
        upstream = exchange.upstream
        assert upstream is not None, "the Fallback policy picks the provider"
        if exchange.wire == "openai-chat" and exchange.stream:
            exchange.body = inject_stream_usage(exchange.body)  # so a streamed chat answer can always be metered
        url = f"{upstream.url}?{exchange.query}" if exchange.query else upstream.url
        exchange.error = None  # an earlier attempt's failure (see Fallback) is not this one's
        try:
            request = self.client.build_request("POST", url, content=exchange.content(), headers=upstream.headers)
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            error = f"provider {upstream.provider!r} unreachable: {type(exc).__name__}: {exc}"
            exchange.status, exchange.error, exchange.complete = 502, error, False
            return error_reply(exchange.wire, GatewayError(502, "upstream", error))
        exchange.status = response.status_code
        meter = exchange.meter = Meter(
            exchange.wire, exchange.stream, content_encoding=response.headers.get("content-encoding")
        )
        headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP]
        reply = Reply(response.status_code, headers, chunks=_metered(exchange, response, meter), close=response.aclose)
        exchange.opened.append(reply)
        return reply


async def _metered(exchange: Exchange, response: httpx.Response, meter: Meter) -> AsyncIterator[bytes]:
    error = None
    try:
        async for chunk in response.aiter_raw():
            meter.feed(chunk)
            yield chunk
    except httpx.HTTPError as exc:
        error = f"the provider's answer broke off: {type(exc).__name__}: {exc}"
    finally:
        exchange.usage = meter.finish()
        exchange.complete = meter.complete
        exchange.error = exchange.error or error or meter.error
        await response.aclose()
