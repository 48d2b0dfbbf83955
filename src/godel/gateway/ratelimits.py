"""Rate limits at the gateway, per virtual key and per model: requests and tokens per minute, and requests in
flight at once, with the ``limits`` library (sliding-window counters) on the gateway's ``SharedState``: this
server's memory, or Redis (``GODEL_REDIS_URL``) so that several servers count together.

Limits come from the configuration (``[rate_limits.key]`` for every key, ``[rate_limits."provider/model"]`` per
model) and from a key's own (``limits`` when it is created). A request over a limit is refused with 429 and
``Retry-After`` (seconds until the window lets it through), in the caller's dialect. Tokens are counted when a
response ends, so a minute's token limit can be crossed by the requests already in flight, never by a new one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from limits import RateLimitItemPerMinute
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from godel.core.models import VirtualKey
from godel.gateway.shared import MemoryState, SharedState
from godel.gateway.types import GatewayError
from godel.providers.config import RateLimit


class RateLimited(GatewayError):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(429, "rate_limit", message)
        self.retry_after = max(1, math.ceil(retry_after))


@dataclass
class Ticket:
    scopes: list[tuple[str, str, RateLimit]] = field(default_factory=list)


class RateLimiter:
    def __init__(
        self, config: dict[str, RateLimit], *, now: Callable[[], float] = time.time, state: SharedState | None = None
    ) -> None:
        self.config = config
        self.now = now
        self.state: SharedState = state or MemoryState()
        self._limiter = SlidingWindowCounterRateLimiter(self.state.windows())

    def _scopes(self, key: VirtualKey, model: str) -> list[tuple[str, str, RateLimit]]:
        scopes = []
        own = key.metadata.get("limits")
        spec = RateLimit.model_validate(own) if isinstance(own, dict) else self.config.get("key")
        if spec is not None:
            scopes.append(("key", key.id, spec))
        if (per_model := self.config.get(model)) is not None:
            scopes.append(("model", model, per_model))
        return scopes

    async def acquire(self, key: VirtualKey, model: str) -> Ticket:
        """Admit one request of ``key`` to ``model`` (a ``provider/model`` name) or raise ``RateLimited``."""
        scopes = self._scopes(key, model)
        if not scopes:
            return Ticket()
        for kind, ident, spec in scopes:
            what = "this key" if kind == "key" else f"model {ident}"
            for limit, unit in ((spec.requests_per_minute, "requests"), (spec.tokens_per_minute, "tokens")):
                if limit and not await self._limiter.test(RateLimitItemPerMinute(limit), kind, ident, unit):
                    stats = await self._limiter.get_window_stats(RateLimitItemPerMinute(limit), kind, ident, unit)
                    raise RateLimited(f"{what} is over its {limit} {unit} per minute", stats.reset_time - self.now())
        taken: list[tuple[str, str, RateLimit]] = []
        for kind, ident, spec in scopes:
            if spec.max_parallel and not await self.state.take(f"{kind}:{ident}", spec.max_parallel):
                for k, i, _ in taken:
                    await self.state.give(f"{k}:{i}")
                what = "this key" if kind == "key" else f"model {ident}"
                raise RateLimited(f"{what} already has {spec.max_parallel} requests in flight", 1)
            taken.append((kind, ident, spec))
        for kind, ident, spec in scopes:
            if spec.requests_per_minute:
                await self._limiter.hit(RateLimitItemPerMinute(spec.requests_per_minute), kind, ident, "requests")
        return Ticket(scopes)

    async def release(self, ticket: Ticket, tokens: int) -> None:
        """The request ended: it leaves the in-flight count, and its tokens count against the minute."""
        for kind, ident, spec in ticket.scopes:
            if spec.max_parallel:
                await self.state.give(f"{kind}:{ident}")
            if spec.tokens_per_minute and tokens > 0:
                item = RateLimitItemPerMinute(spec.tokens_per_minute)
                remaining = (await self._limiter.get_window_stats(item, kind, ident, "tokens")).remaining
                # What did not fit still fills the window: the next request waits for the minute to move on.
                await self._limiter.hit(item, kind, ident, "tokens", cost=max(1, min(tokens, remaining)))
