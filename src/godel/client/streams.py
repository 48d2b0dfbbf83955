"""What the sync and async clients share about the two SSE streams: item decoding and reconnect pacing."""

from __future__ import annotations

import json
from typing import Any

from godel.client.models import Event, LogLine
from godel.client.sse import ServerSentEvent, SSEDecoder


def _object(data: str) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def log_item(sse: ServerSentEvent) -> LogLine | None:
    """A ``log`` event's ``{sequence, timestamp, stream, line}``; a bare text line is kept as ``line``."""
    if sse.event not in ("log", "message") or not sse.data:
        return None
    return LogLine(_object(sse.data) or {"line": sse.data})


def stream_item(sse: ServerSentEvent) -> Event | None:
    """An event object; SSE frames that carry none (pings, control frames) are skipped."""
    found = _object(sse.data) if sse.data else None
    return Event(found) if found is not None else None


class Resumption:
    """Where a resumable stream has got to, and whether to reconnect after it drops.

    Only a stream that was opened at least once is retried: a server that never answered is reported at
    once rather than waited for.
    """

    def __init__(self, since: int | None, max_reconnects: int) -> None:
        self.last_id: str | None = None
        self._since = since
        self._max = max_reconnects
        self._failures = 0
        self._ever_opened = False
        self._retry_ms: int | None = None  # the server's ``retry:`` outlives the connection that sent it

    @property
    def since(self) -> int | str | None:
        return self.last_id if self.last_id is not None else self._since

    def opened(self) -> None:
        self._ever_opened = True
        self._failures = 0

    def may_retry(self) -> bool:
        return self._ever_opened and self._failures < self._max

    def dropped(self, decoder: SSEDecoder) -> float:
        """Record how far the dropped stream got; return how long to wait before reconnecting."""
        self.last_id = decoder.last_event_id
        self._failures += 1
        if decoder.retry_ms is not None:
            self._retry_ms = decoder.retry_ms
        if self._retry_ms is not None:
            return self._retry_ms / 1000
        return float(min(0.25 * 2 ** (self._failures - 1), 5.0))
