"""``GodelClient``: the blocking SDK the CLI uses.

with GodelClient() as godel:                      # GODEL_URL, else the settings files' url
    agent = godel.spawn_agent(task="fix it", repo="/src/app", command="make fix")
    for line in godel.follow_logs(agent.id):
        print(line.line)

docs/client.md has the whole tour.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import httpx

from godel.client.credentials import find_api_key
from godel.client.endpoints import API, JSON, Endpoints, agent_path, camelize, patterns_param
from godel.client.envelope import translate, unwrap
from godel.client.errors import ServerNotRunningError
from godel.client.models import Agent, Event, LogLine
from godel.client.sse import SSEDecoder, decode
from godel.client.streams import Resumption, log_item, stream_item
from godel.settings_files import client_settings


def default_url() -> str:
    return client_settings().url


def auth_headers(url: str, headers: Mapping[str, str] | None, api_key: str | None) -> dict[str, str]:
    """The caller's headers plus the credential found for ``url`` (``godel.client.credentials``), unless the
    caller already sends one."""
    out = dict(headers or {})
    if any(k.lower() in ("authorization", "x-api-key") for k in out):
        return out
    key = api_key or find_api_key(url, client_settings().home)
    if key:
        out["X-API-Key"] = key
    return out


class GodelClient(Endpoints[JSON]):
    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
    ) -> None:
        self.base_url = (base_url or default_url()).rstrip("/")
        self.timeout = timeout
        headers = auth_headers(self.base_url, headers, api_key)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GodelClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        into: Callable[[Any], Any] | None = None,
    ) -> JSON:
        try:
            response = self._http.request(method, path, params=params, json=json)
        except httpx.TransportError as exc:
            raise translate(exc, self.base_url) from exc
        data = unwrap(response)
        return into(data) if into is not None else data

    def iter_agents(
        self,
        *,
        status: str | None = None,
        team_id: str | None = None,
        label: str | None = None,
        model: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Agent]:
        """Every matching agent, newest first, following ``pagination.cursor`` page by page."""
        cursor: str | None = None
        while True:
            page = self.list_agents(
                status=status, team_id=team_id, label=label, model=model, limit=limit, cursor=cursor
            )
            yield from page.results
            cursor = page.cursor
            if not page.has_more or not cursor:
                return

    def follow_logs(self, agent_id: str, *, tail: int | None = None, stream: str | None = None) -> Iterator[LogLine]:
        """Log lines as they are written, until the server says the agent is done (``event: end``)."""
        query = camelize({"follow": True, "tail": tail, "stream": stream})
        decoder = SSEDecoder()
        with self._open_sse(agent_path(agent_id, "logs"), query, None) as lines:
            for sse in decode(decoder, lines):
                if sse.event == "end":
                    return
                item = log_item(sse)
                if item is not None:
                    yield item

    def wait_agent(self, agent_id: str) -> Agent:
        """Block until the agent has ended for good -- as the server judges it, retries and fallback models
        included -- and return it. Event-driven: it follows the agent's log stream, which the server ends then."""
        for _ in self.follow_logs(agent_id, tail=0):
            pass
        return self.get_agent(agent_id)

    def stream_events(
        self,
        patterns: str | Sequence[str] = "*",
        *,
        agent_id: str | None = None,
        team_id: str | None = None,
        since: int | None = None,
        reconnect: bool = True,
        max_reconnects: int = 5,
    ) -> Iterator[Event]:
        """Events as they commit. A dropped stream is resumed with ``Last-Event-ID``, so none are lost; a
        server that was never reached fails at once instead of being waited for."""
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
                with self._open_sse(f"{API}/events/stream", query, resume.last_id) as lines:
                    resume.opened()
                    for sse in decode(decoder, lines):
                        item = stream_item(sse)
                        if item is not None:
                            yield item
            except ServerNotRunningError:
                if not resume.may_retry():
                    raise
            else:
                if not reconnect:
                    return
            time.sleep(resume.dropped(decoder))

    @contextmanager
    def _open_sse(self, path: str, params: Mapping[str, Any], last_event_id: str | None) -> Iterator[Iterator[str]]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        # Events may be minutes apart: only connecting is bounded, not waiting for the next line.
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            with self._http.stream("GET", path, params=params, headers=headers, timeout=timeout) as response:
                if not response.is_success:
                    response.read()
                    unwrap(response)
                yield response.iter_lines()
        except httpx.TransportError as exc:
            raise translate(exc, self.base_url) from exc
