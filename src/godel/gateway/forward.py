"""The centre of the policy chain: the request goes to its provider, and the answer comes back as it arrives.

The body is sent as the policies left it, with the provider's real key (``Upstream.headers``). The answer is not
buffered: its raw bytes (still compressed, if the provider compressed them) are handed on chunk by chunk, and a
``Meter`` reads each one on the way, so the usage is known the moment the answer ends.

The HTTP client is aiohttp's: on this path -- every model request of every agent -- it costs the server half the
CPU per streamed request that httpx did (1.2 against 2.4 ms, measured; BENCHMARKS.md), mostly httpcore's
per-request scan of its connection pool. One session is made on first use, inside the running loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp

from godel.gateway.dialects import error_reply
from godel.gateway.exchange import Exchange, Reply
from godel.gateway.metering import Meter, inject_stream_usage
from godel.gateway.names import upstream_body
from godel.gateway.types import GatewayError

# Not passed back: the relay frames the body itself. content-encoding is kept: the raw bytes are relayed as they
# came, and the meter decompresses its own copy.
_HOP_BY_HOP = {b"content-length", b"transfer-encoding", b"connection", b"keep-alive"}
_FAILURES = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class UpstreamClient:
    """The gateway's one pooled HTTP client to the providers (made lazily: aiohttp wants a running loop)."""

    def __init__(self, *, read_timeout: float = 600.0, connect_timeout: float = 10.0, max_connections: int = 512):
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=self.max_connections),
                # No total limit: a model may stream for many minutes; the limit is on silence between bytes.
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout
                ),
                auto_decompress=False,  # relayed as it came; the meter inflates its own copy
                # Only what the meter can read (aiohttp would offer br when brotli is importable).
                headers={"Accept-Encoding": "gzip, deflate"},
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


class Forward:
    def __init__(self, client: UpstreamClient) -> None:
        self.client = client

    async def __call__(self, exchange: Exchange) -> Reply:
        upstream = exchange.upstream
        assert upstream is not None, "the Fallback policy picks the provider"
        if exchange.wire != "gemini":  # a "provider/model" name becomes the provider's own id (Gemini: in the URL)
            exchange.body = upstream_body(exchange.body, upstream.model)
        if exchange.wire == "openai-chat" and exchange.stream:
            exchange.body = inject_stream_usage(exchange.body)  # so a streamed chat answer can always be metered
        url = f"{upstream.url}?{exchange.query}" if exchange.query else upstream.url
        exchange.error = None  # an earlier attempt's failure (see Fallback) is not this one's
        try:
            response = await self.client.session.post(
                url, data=exchange.content(), headers=upstream.headers, allow_redirects=False
            )
        except _FAILURES as exc:
            error = f"provider {upstream.provider!r} unreachable: {type(exc).__name__}: {exc}"
            exchange.status, exchange.error, exchange.complete = 502, error, False
            return error_reply(exchange.wire, GatewayError(502, "upstream", error))
        exchange.status = response.status
        meter = exchange.meter = Meter(
            exchange.wire, exchange.stream, content_encoding=response.headers.get("content-encoding")
        )
        headers = [(k.lower(), v) for k, v in response.raw_headers if k.lower() not in _HOP_BY_HOP]

        async def close() -> None:
            response.close()  # not read to its end: the connection is not reused

        reply = Reply(response.status, headers, chunks=_metered(exchange, response, meter), close=close)
        exchange.opened.append(reply)
        return reply


async def _metered(exchange: Exchange, response: aiohttp.ClientResponse, meter: Meter) -> AsyncIterator[bytes]:
    error = None
    ended = False
    try:
        async for chunk in response.content.iter_any():
            meter.feed(chunk)
            yield chunk
        ended = True
    except _FAILURES as exc:
        error = f"the provider's answer broke off: {type(exc).__name__}: {exc}"
    finally:
        exchange.usage = meter.finish()
        exchange.complete = meter.complete
        exchange.error = exchange.error or error or meter.error
        if ended:
            response.release()  # read to its end: the connection goes back to the pool
        else:
            response.close()
