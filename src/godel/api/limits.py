"""Request limits, before any route reads a request: the size of its body and NUL bytes in its URL.

- Body: a ``Content-Length`` over ``max_body_bytes`` gets 413 at once, unread; a body without one (chunked) is
  counted as it is received, and the read that goes over raises a 413 ``HTTPException``, which the error mapping
  turns into the envelope (or this middleware does, when nothing answered yet). A route never sees more than the
  limit, so a 100 MB task is refused, not stored and then served back in every list.
- URL: a NUL byte in the path or the query (``%00``) gets 400: no identifier, filter or cursor holds one, and
  PostgreSQL text cannot.

The gateway's ``/proxy`` is left out (``exempt``): model requests carry images and long contexts, and it has its own
budgets and rate limits.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from godel.api.errors import error_body


class RequestLimits:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, exempt: Iterable[str] = ("/proxy",)) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.exempt = tuple(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        if "\0" in scope["path"] or b"%00" in scope.get("query_string", b""):
            await _answer(scope, send, 400, "VALIDATION_ERROR", "the URL contains a NUL byte")
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _answer(scope, send, 413, "PAYLOAD_TOO_LARGE", self._too_large())
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(413, self._too_large())
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except HTTPException as exc:  # raised by ``counted`` where no handler turned it into a response
            if exc.status_code != 413 or started:
                raise
            await _answer(scope, send, 413, "PAYLOAD_TOO_LARGE", self._too_large())

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_body_bytes} bytes (max_request_bytes)"


async def _answer(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
    rid = (scope.get("state") or {}).get("request_id", "")
    body = orjson.dumps(error_body(rid, code, message))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))  # the rest of the body is not read
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
