"""Rate limits at the gateway, per virtual key and per model: requests and tokens per minute, and requests in
flight at once, with the ``limits`` library (sliding-window counters, in this server's memory).

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
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from godel.core.models import VirtualKey
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
    def __init__(self, config: dict[str, RateLimit], *, now: Callable[[], float] = time.time) -> None:
        self.config = config
        self.now = now
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._parallel: dict[tuple[str, str], int] = {}

    def _scopes(self, key: VirtualKey, model: str) -> list[tuple[str, str, RateLimit]]:
        scopes = []
        own = key.metadata.get("limits")
        spec = RateLimit.model_validate(own) if isinstance(own, dict) else self.config.get("key")
        if spec is not None:
            scopes.append(("key", key.id, spec))
        if (per_model := self.config.get(model)) is not None:
            scopes.append(("model", model, per_model))
        return scopes

    def acquire(self, key: VirtualKey, model: str) -> Ticket:
        """Admit one request of ``key`` to ``model`` (a ``provider/model`` name) or raise ``RateLimited``."""
        scopes = self._scopes(key, model)
        for kind, ident, spec in scopes:
            what = "this key" if kind == "key" else f"model {ident}"
            if spec.max_parallel and self._parallel.get((kind, ident), 0) >= spec.max_parallel:
                raise RateLimited(f"{what} already has {spec.max_parallel} requests in flight", 1)
            for limit, unit in ((spec.requests_per_minute, "requests"), (spec.tokens_per_minute, "tokens")):
                if limit and not self._limiter.test(RateLimitItemPerMinute(limit), kind, ident, unit):
                    reset = self._limiter.get_window_stats(RateLimitItemPerMinute(limit), kind, ident, unit).reset_time
                    raise RateLimited(f"{what} is over its {limit} {unit} per minute", reset - self.now())
        for kind, ident, spec in scopes:
            if spec.requests_per_minute:
                self._limiter.hit(RateLimitItemPerMinute(spec.requests_per_minute), kind, ident, "requests")
            if spec.max_parallel:
                self._parallel[(kind, ident)] = self._parallel.get((kind, ident), 0) + 1
        return Ticket(scopes)

    def release(self, ticket: Ticket, tokens: int) -> None:
        """The request ended: it leaves the in-flight count, and its tokens count against the minute."""
        for kind, ident, spec in ticket.scopes:
            if spec.max_parallel:
                left = self._parallel.get((kind, ident), 1) - 1
                if left > 0:
                    self._parallel[(kind, ident)] = left
                else:
                    self._parallel.pop((kind, ident), None)
            if spec.tokens_per_minute and tokens > 0:
                item = RateLimitItemPerMinute(spec.tokens_per_minute)
                remaining = self._limiter.get_window_stats(item, kind, ident, "tokens").remaining
                # What did not fit still fills the window: the next request waits for the minute to move on.
                self._limiter.hit(item, kind, ident, "tokens", cost=max(1, min(tokens, remaining)))
