"""One proxied request on its way through the gateway, and the shape of a policy.

A policy is any ``async (exchange, call_next) -> Reply`` callable, as in Starlette's middleware: it may look at or
change the request (``exchange.body``), refuse it (raise ``GatewayError``: the caller gets the refusal in its own
dialect), answer it itself (return a ``Reply`` without calling ``call_next``), or wrap what the layers under it
answer. A streamed answer is still in flight when ``call_next`` returns, so work that needs its end -- the usage,
the whole body -- is registered with ``exchange.on_end`` after ``call_next`` returned; those callbacks run once
the answer has been read to its end (also when the caller went away in the middle), in the order registered, so
the innermost policy's first.

    async def no_secrets(exchange: Exchange, call_next: CallNext) -> Reply:
        if "password" in json.dumps(exchange.body):
            raise GatewayError(400, "invalid_request", "this request would send a password to the provider")
        return await call_next(exchange)
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from godel.core.models import VirtualKey
from godel.gateway.metering import Meter, Usage
from godel.gateway.types import Upstream, Wire

log = structlog.get_logger("godel.gateway")


@dataclass
class Reply:
    """What goes back to the caller: a whole body (a refusal, a cached answer), or the provider's stream."""

    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    chunks: AsyncIterator[bytes] | None = None
    close: Callable[[], Awaitable[None]] | None = None  # releases the provider's connection

    async def aclose(self) -> None:
        if self.close is not None:
            close, self.close = self.close, None
            await close()


End = Callable[["Exchange"], Awaitable[None] | None]


@dataclass(eq=False)
class Exchange:
    """The request as the policies see it, and -- once the answer has ended -- its outcome."""

    wire: Wire
    path: str  # under the provider's API root: "chat/completions", "models/gemini-2.5-pro:generateContent", …
    key: VirtualKey
    model: str
    body: dict[str, Any]
    headers: dict[str, str]  # lower-cased
    stream: bool
    query: str = ""  # passed on (Gemini's ?alt=sse)
    metered: bool = True  # False for token counts: free, so nothing is reserved, limited or recorded
    upstream: Upstream | None = None  # the provider serving it (a fallback may change it before it is sent)
    started: float = field(default_factory=time.perf_counter)
    # The outcome, known when the answer has ended.
    status: int = 0
    usage: Usage = field(default_factory=Usage)
    complete: bool = False  # the provider's final usage was seen
    error: str | None = None
    meter: Meter | None = None
    caller_gone: bool = False
    settle_before_reply_ends: bool = False  # end callbacks before the last byte (budgets no longer need it)
    state: dict[str, Any] = field(default_factory=dict)  # for policies' own notes
    raw: bytes | None = None  # the body as the caller sent it: forwarded as is while ``body`` is not replaced
    opened: list[Reply] = field(default_factory=list)  # the providers' answers (``Forward``), to close whatever happens
    _ends: list[End] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._received = self.body

    def content(self) -> bytes:
        """The bytes to send: the caller's own while no policy replaced ``body`` (policies replace it, never edit
        it in place), else the new body encoded."""
        if self.raw is not None and self.body is self._received:
            return self.raw
        return orjson.dumps(self.body)

    def on_end(self, callback: End) -> None:
        self._ends.append(callback)

    def latency_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def read_meter(self) -> None:
        """Take the usage from the meter now (idempotent): the answer ended, or was given up."""
        if self.meter is not None:
            self.usage = self.meter.finish()
            self.complete = self.meter.complete
            self.error = self.error or self.meter.error

    async def abandon(self) -> None:
        """The request will not be answered as the chain meant (a policy raised, the relay broke): release the
        providers' connections, keep what was metered, and run the end callbacks registered so far."""
        for reply in self.opened:
            try:
                await reply.aclose()
            except Exception as exc:
                log.warning("could not close a provider's answer", error=repr(exc))
        self.read_meter()
        await self.end()

    async def end(self) -> None:
        """Run the end callbacks in the order they were registered -- innermost policy first, as each registers
        once ``call_next`` returned; one that fails is logged and does not stop the others. A cancellation (the
        server shutting down) lets the rest run too -- they release slots and write the usage record -- and is
        raised again afterwards."""
        ends, self._ends = self._ends, []
        cancelled: BaseException | None = None
        for callback in ends:
            try:
                result = callback(self)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                log.error("a gateway policy failed at the end of a request", policy=repr(callback), error=repr(exc))
            except BaseException as exc:  # CancelledError: finish the bookkeeping first
                cancelled = cancelled or exc
        if cancelled is not None:
            raise cancelled


CallNext = Callable[[Exchange], Awaitable[Reply]]
Policy = Callable[[Exchange, CallNext], Awaitable[Reply]]


def compose(policies: Sequence[Policy], handler: CallNext) -> CallNext:
    """``policies[0]`` outermost; ``handler`` (the call to the provider) at the centre."""
    call = handler
    for policy in reversed(policies):
        call = _bind(policy, call)
    return call


def _bind(policy: Policy, call_next: CallNext) -> CallNext:
    async def call(exchange: Exchange) -> Reply:
        return await policy(exchange, call_next)

    return call
