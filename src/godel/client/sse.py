"""A server-sent-events decoder (the WHATWG "event stream interpretation"), fed one line at a time.

It holds no I/O so the sync and async clients share it: they feed it ``iter_lines()`` / ``aiter_lines()``.
Unlike a browser it also dispatches an event that has a name but no ``data:`` line, because the logs stream
ends with a bare ``event: end``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServerSentEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class SSEDecoder:
    def __init__(self, last_event_id: str | None = None) -> None:
        self._event = ""
        self._data: list[str] = []
        # Both persist across events (the spec's "last event ID buffer" and reconnection time); a decoder
        # for a resumed stream starts from the id the previous one reached.
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        """Take one line without its terminator; return an event when a blank line completes one."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: keep-alive pings
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data and not self._event:
            return None
        event = ServerSentEvent(self._event or "message", "\n".join(self._data), self.last_event_id)
        self._event, self._data = "", []
        return event


def decode(decoder: SSEDecoder, lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event


async def adecode(decoder: SSEDecoder, lines: AsyncIterable[str]) -> AsyncGenerator[ServerSentEvent, None]:
    async for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event
