"""``AsyncGodelClient``: the same API for asyncio code. Every endpoint method returns an awaitable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any

import httpx

from godel.client.endpoints import API, JSON, Endpoints, agent_path, camelize, patterns_param
from godel.client.envelope import translate, unwrap
from godel.client.errors import ServerNotRunningError
from godel.client.models import Agent, Event, LogLine
from godel.client.sse import SSEDecoder, adecode
from godel.client.streams import Resumption, log_item, stream_item
from godel.client.sync import auth_headers, default_url


class AsyncGodelClient(Endpoints[Awaitable[JSON]]):
    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
    ) -> None:
        self.base_url = (base_url or default_url()).rstrip("/")
        self.timeout = timeout
        headers = auth_headers(self.base_url, headers, api_key)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport, headers=headers)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncGodelClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        into: Callable[[Any], Any] | None = None,
    ) -> Awaitable[JSON]:
        return self._send(method, path, params, json, into)

    async def _send(
        self, method: str, path: str, params: Mapping[str, Any] | None, json: Any, into: Callable[[Any], Any] | None
    ) -> Any:
        try:
            response = await self._http.request(method, path, params=params, json=json)
        except httpx.TransportError as exc:
            raise translate(exc, self.base_url) from exc
        data = unwrap(response)
        return into(data) if into is not None else data

    async def iter_agents(
        self,
        *,
        status: str | None = None,
        team_id: str | None = None,
        label: str | None = None,
        model: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Agent]:
        """Every matching agent, newest first, following the cursor page by page."""
        cursor: str | None = None
        while True:
            page = await self.list_agents(
                status=status, team_id=team_id, label=label, model=model, limit=limit, cursor=cursor
            )
            for item in page.results:
                yield item
            cursor = page.cursor
            if not page.has_more or not cursor:
                return

    async def follow_logs(
        self, agent_id: str, *, tail: int | None = None, stream: str | None = None
    ) -> AsyncIterator[LogLine]:
        """Log lines as they are written, until the server says the agent is done."""
        query = camelize({"follow": True, "tail": tail, "stream": stream})
        # aclosing: leaving the loop early closes the decoder now, not whenever the collector finds it.
        async with (
            self._open_sse(agent_path(agent_id, "logs"), query, None) as lines,
            aclosing(adecode(SSEDecoder(), lines)) as events,
        ):
            async for sse in events:
                if sse.event == "end":
                    return
                item = log_item(sse)
                if item is not None:
                    yield item

    async def wait_agent(self, agent_id: str) -> Agent:
        """Wait until the agent has ended for good (as the server judges it) and return it."""
        async for _ in self.follow_logs(agent_id, tail=0):
            pass
        return await self.get_agent(agent_id)

    async def stream_events(
        self,
        patterns: str | Sequence[str] = "*",
        *,
        agent_id: str | None = None,
        team_id: str | None = None,
        since: int | None = None,
        reconnect: bool = True,
        max_reconnects: int = 5,
    ) -> AsyncIterator[Event]:
        """Events as they commit; a dropped stream is resumed from the last one seen."""
        resume = Resumption(since, max_reconnects if reconnect else 0)
        while True:
            decoder = SSEDecoder(resume.last_id)
            query = camelize(
                {
                    "type": patterns_param(patterns),
                    "agent_id": agent_id,
                    "team_id": team_id,
                    "since": resume.since,
                }
            )
            try:
                async with (
                    self._open_sse(f"{API}/events/stream", query, resume.last_id) as lines,
                    aclosing(adecode(decoder, lines)) as events,
                ):
                    resume.opened()
                    async for sse in events:
                        item = stream_item(sse)
                        if item is not None:
                            yield item
            except ServerNotRunningError:
                if not resume.may_retry():
                    raise
            else:
                if not reconnect:
                    return
            await asyncio.sleep(resume.dropped(decoder))

    @asynccontextmanager
    async def _open_sse(
        self, path: str, params: Mapping[str, Any], last_event_id: str | None
    ) -> AsyncIterator[AsyncIterator[str]]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            async with self._http.stream("GET", path, params=params, headers=headers, timeout=timeout) as response:
                if not response.is_success:
                    await response.aread()
                    unwrap(response)
                lines = response.aiter_lines()
                try:
                    yield lines
                finally:  # closed now, even when the reader stopped early, not whenever the collector finds it
                    close = getattr(lines, "aclose", None)
                    if close is not None:
                        await close()
        except httpx.TransportError as exc:
            raise translate(exc, self.base_url) from exc
