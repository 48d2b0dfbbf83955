"""The gateway's decisions, apart from HTTP: who is calling (virtual key), where the request goes (provider and
its key), and what it cost (a usage record per request).

A request names a model the way the agent CLI was configured to (the model id at the provider). The key's
``models`` (``provider/model`` names; an agent's key gets its route) say which providers may serve it; the
provider must speak the request's wire API. The provider's real key is read from the server's environment for
each request and never leaves the server.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from godel.core.clock import SystemClock
from godel.core.ids import new_id
from godel.core.models import UsageRecord, VirtualKey
from godel.core.ports import Clock
from godel.gateway import layers
from godel.gateway.budgets import BudgetGuard, Reservation
from godel.gateway.exchange import CallNext, Exchange, Policy, Reply, compose
from godel.gateway.flights import SingleFlight
from godel.gateway.forward import Forward, UpstreamClient
from godel.gateway.keys import hash_key, new_key
from godel.gateway.names import readings, upstream_path
from godel.gateway.policies import AuditLog, CircuitBreaker, ResponseCache
from godel.gateway.ratelimits import RateLimiter
from godel.gateway.shared import MemoryState, SharedState
from godel.gateway.types import GatewayError, ProviderUnavailable, Upstream, Wire
from godel.providers.config import ProviderConfig, RateLimit

log = structlog.get_logger("godel.gateway")
SCOPES = ("agent", "team", "user")
KEY_CACHE_SECONDS = 2.0

# Request headers passed upstream (the caller's own credentials never are).
FORWARDED = ("content-type", "accept", "anthropic-version", "anthropic-beta", "openai-beta")


class KeyStore(Protocol):
    """The store methods the gateway uses (``SqlStore`` has them)."""

    async def create_key(self, key: VirtualKey) -> VirtualKey: ...
    async def key_by_hash(self, key_hash: str) -> VirtualKey | None: ...
    async def revoke_keys(
        self, at: datetime, *, key_id: str | None = None, scope_type: str | None = None, scope_id: str | None = None
    ) -> int: ...
    async def add_usage(self, record: UsageRecord) -> UsageRecord: ...
    async def add_usages(self, records: list[UsageRecord], releases: Sequence[str] = ()) -> None: ...


class Gateway:
    def __init__(
        self,
        store: KeyStore,
        providers: dict[str, ProviderConfig],
        *,
        clock: Clock | None = None,
        pricer: Any = None,
        rate_limits: dict[str, RateLimit] | None = None,
        breaker: CircuitBreaker | None = None,
        audit: AuditLog | None = None,
        redact: bool = False,
        cache: ResponseCache | None = None,
        http: UpstreamClient | None = None,
        extra_policies: Sequence[Callable[[Gateway], Policy]] = (),
        shared: SharedState | None = None,
    ) -> None:
        self.store = store
        self.providers = providers
        self.clock: Clock = clock or SystemClock()
        self.pricer = pricer
        # What the limits remember between requests: this process's memory, or Redis shared by several servers.
        self.shared: SharedState = shared or MemoryState()
        self.budgets = BudgetGuard(store, pricer, now=self.clock.now, state=self.shared)
        # Keys by hash, for KEY_CACHE_SECONDS: a store read per request costs more than the rest of the routing.
        # A revocation through this server drops the entry at once; one through another server shares the
        # database and takes effect here within the cache time.
        self._keys: dict[str, tuple[float, VirtualKey | None]] = {}
        # Concurrent misses for one key (a burst after an idle pause) share one store read.
        self._key_flights: SingleFlight[str, VirtualKey | None] = SingleFlight()
        self.writer = UsageWriter(store)
        self.limits = RateLimiter(dict(rate_limits or {}), state=self.shared)
        self.breaker = breaker or CircuitBreaker()
        self.audit = audit
        self.redact = redact
        self.cache = cache
        self.http = http or UpstreamClient()
        self.extra_policies = list(extra_policies)
        self._chain: CallNext | None = None
        # agent id -> (when its requests may pass again, why): shown on the agent while it lasts
        self.rate_limited: dict[str, tuple[float, str, float]] = {}
        # Proxied requests whose end (usage record, budget settlement) still runs after their answer was sent.
        self.endings: set[asyncio.Future[None]] = set()

    async def settle(self) -> None:
        """Wait for the ends of proxied requests still running (shutdown: before the store closes; tests)."""
        while self.endings:
            await asyncio.gather(*list(self.endings), return_exceptions=True)

    # -------------------------------------------------------------------------------------------- keys

    async def issue(
        self,
        scope_type: str,
        scope_id: str,
        *,
        models: list[str] | None = None,
        ttl: timedelta | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[str, VirtualKey]:
        """A new key; its text is returned here and never again."""
        if scope_type not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        text, digest, prefix = new_key()
        now = self.clock.now()
        key = VirtualKey(
            id=new_id(), key_hash=digest, prefix=prefix, scope_type=scope_type, scope_id=scope_id,
            models=list(models or []), expires_at=now + ttl if ttl else None, created_at=now, updated_at=now,
            metadata=dict(metadata or {}),
        )  # fmt: skip
        return text, await self.store.create_key(key)

    async def revoke_scope(self, scope_type: str, scope_id: str) -> int:
        self._keys.clear()
        return int(await self.store.revoke_keys(self.clock.now(), scope_type=scope_type, scope_id=scope_id))

    async def revoke(self, key_id: str) -> int:
        self._keys.clear()
        return int(await self.store.revoke_keys(self.clock.now(), key_id=key_id))

    async def _lookup(self, digest: str) -> VirtualKey | None:
        now = time.monotonic()
        cached = self._keys.get(digest)
        if cached is not None and now - cached[0] < KEY_CACHE_SECONDS:
            return cached[1]

        async def load() -> VirtualKey | None:
            key = await self.store.key_by_hash(digest)
            if len(self._keys) > 10_000:
                self._keys.clear()  # bounded: unknown keys sent in a flood must not grow it without end
            self._keys[digest] = (time.monotonic(), key)
            return key

        return await self._key_flights.run(digest, load)

    async def authenticate(self, headers: dict[str, str]) -> VirtualKey:
        text = _credential(headers)
        if not text:
            raise GatewayError(401, "authentication", "no API key: send a Godel virtual key (godel_vk_…)")
        key = await self._lookup(hash_key(text))
        if key is None:
            raise GatewayError(401, "authentication", "unknown API key")
        if key.revoked_at is not None:
            raise GatewayError(401, "authentication", "this key was revoked")
        if not key.usable_at(self.clock.now()):
            raise GatewayError(401, "authentication", "this key has expired")
        return key

    # ----------------------------------------------------------------------------------------- routing

    def allowed_models(self, key: VirtualKey) -> list[tuple[str, str, ProviderConfig]]:
        """``(provider, model, config)`` the key may use, in the key's order (a route: primary first)."""
        out = []
        names = key.models or [f"{p}/{m}" for p, c in self.providers.items() for m in c.models]
        for name in names:
            provider, _, model = name.partition("/")
            config = self.providers.get(provider)
            if config is not None and (not config.models or model in config.models):
                out.append((provider, model, config))
        return out

    def candidates(self, key: VirtualKey, wire: Wire, model: str) -> list[tuple[str, str, ProviderConfig]]:
        """The providers that may serve ``model`` to ``key`` over ``wire``, in the key's order; refuses (404/400)
        when there is none."""
        if not model:
            raise GatewayError(400, "invalid_request", "the request names no model")
        allowed = self.allowed_models(key)
        found: list[tuple[str, str, ProviderConfig]] = []
        for reading in readings(model, self.providers):  # "MODEL" first, then "PROVIDER/MODEL"
            found = [(p, m, c) for p, m, c in allowed if reading.matches(p, m)]
            if found:
                break
        if not found:
            raise GatewayError(404, "not_found", f"model {model!r} is not available to this key")
        speaking = [(p, m, c) for p, m, c in found if c.kind == wire]
        if not speaking:
            kinds = ", ".join(sorted({c.kind for _, _, c in found}))
            raise GatewayError(
                400, "invalid_request", f"model {model!r} is served here over {kinds}, not over the {wire} API"
            )
        return speaking

    def _candidates_of(self, exchange: Exchange) -> list[tuple[str, str, ProviderConfig]]:
        """``candidates`` for the request, worked out once (the estimate and Fallback both ask)."""
        found: list[tuple[str, str, ProviderConfig]] | None = exchange.state.get("candidates")
        if found is None:
            found = exchange.state["candidates"] = self.candidates(exchange.key, exchange.wire, exchange.model)
        return found

    def first_upstream(self, exchange: Exchange) -> Upstream:
        """Where the request would go if every provider were well: what budgets and rate limits reckon with
        before ``Fallback`` picks the provider that really serves it (so no key is needed yet)."""
        provider, model, config = self._candidates_of(exchange)[0]
        return self._upstream(provider, model, config, exchange, need_key=False)

    def next_upstream(self, exchange: Exchange, tried: set[str]) -> Upstream:
        """The first candidate not tried yet that has its key and whose circuit lets a request through (claiming
        a half-open circuit's trial); else ``ProviderUnavailable`` with the shortest wait, or 502 when the only
        ones left have no key in the server's environment."""
        waits: list[float] = []
        keyless: list[str] = []
        candidates = self._candidates_of(exchange)
        for provider, model, config in candidates:
            if provider in tried:
                continue
            if config.api_key_env and not os.environ.get(config.api_key_env):
                keyless.append(provider)  # checked before the breaker: a trial must not be claimed for nothing
                continue
            wait = self.breaker.retry_after(provider)
            if wait is None:
                return self._upstream(provider, model, config, exchange)
            waits.append(wait)
        if waits:
            names = ", ".join(p for p, _, _ in candidates if p not in keyless)
            raise ProviderUnavailable(f"provider {names} keeps failing; the gateway pauses sending to it", min(waits))
        if keyless:
            raise GatewayError(502, "upstream", f"provider {', '.join(keyless)} has no key in the server's environment")
        raise ProviderUnavailable(f"every provider serving {exchange.model!r} failed this request", 1.0)

    def _upstream(
        self, provider: str, model_id: str, config: ProviderConfig, exchange: Exchange, *, need_key: bool = True
    ) -> Upstream:
        secret = os.environ.get(config.api_key_env) if config.api_key_env else None
        if need_key and config.api_key_env and not secret:
            raise GatewayError(502, "upstream", f"provider {provider!r} has no key in the server's environment")
        wire = exchange.wire
        out = {h: v for h, v in exchange.headers.items() if h in FORWARDED}
        out["content-type"] = "application/json"
        if wire == "anthropic":
            out.setdefault("anthropic-version", "2023-06-01")
            if secret:
                out["x-api-key"] = secret
        elif wire == "gemini":
            if secret:
                out["x-goog-api-key"] = secret
        elif secret:
            out["authorization"] = f"Bearer {secret}"
        root = config.base_url.rstrip("/")
        # An OpenAI base URL ends in its version (/v1); Anthropic's and Gemini's are the host's root.
        prefix = {"anthropic": "/v1", "gemini": "/v1beta"}.get(wire, "")
        path = upstream_path(exchange.path, exchange.model, model_id)
        return Upstream(provider=provider, config=config, model=model_id, url=f"{root}{prefix}/{path}",
                        headers=out)  # fmt: skip

    # ----------------------------------------------------------------------------------------- policies

    def policies(self) -> list[Policy]:
        """The chain, outermost first (``godel.gateway.layers`` explains the order)."""
        chain: list[Policy] = [layers.redact] if self.redact else []
        chain += [make(self) for make in self.extra_policies]
        chain += [layers.Budget(self), layers.Record(self)]
        if self.audit is not None:
            chain.append(layers.Audit(self, self.audit))
        chain.append(layers.RateLimit(self))
        if self.cache is not None:
            chain.append(layers.Cache(self.cache))
        chain.append(layers.Fallback(self))
        return chain

    async def handle(self, exchange: Exchange) -> Reply:
        """Pass one request through the policies to its provider. Raises ``GatewayError`` for a refusal."""
        if self._chain is None:
            self._chain = compose(self.policies(), Forward(self.http))
        exchange.upstream = self.first_upstream(exchange)
        return await self._chain(exchange)

    # -------------------------------------------------------------------------------------------- usage

    async def record(
        self,
        key: VirtualKey,
        upstream: Upstream,
        *,
        wire: Wire,
        stream: bool,
        status: int,
        usage: Any,
        complete: bool,
        latency_ms: float,
        error: str | None,
        reservation: Reservation | None = None,
    ) -> UsageRecord:
        """Write the request's usage record (and release its durable budget reservation in the same transaction).

        Under a budget, a cost that cannot be computed -- an answer (or a stream cut short) without any usage, a
        fallback to a model without a price -- is the reservation's estimate, never $0 (``cost_estimated``). An
        error answer without usage costs nothing: providers do not bill refusals."""
        cost = None
        metered = bool(usage.input_tokens or usage.output_tokens or usage.cached_tokens)
        if self.pricer is not None and metered:
            cost = self.pricer.cost(
                provider_kind=upstream.config.kind, provider_name=upstream.provider, model=upstream.model,
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, cached_tokens=usage.cached_tokens,
                cache_write_tokens=usage.cache_write_tokens,
            )  # fmt: skip
        budgeted = reservation is not None and bool(reservation.budgets)
        estimated = False
        if budgeted and cost is None and reservation is not None and reservation.amount > 0:
            if metered or 200 <= status < 400:
                cost, estimated = reservation.amount, True
        record = UsageRecord(
            at=self.clock.now(), provider=upstream.provider, model=upstream.model, wire=wire, stream=stream,
            status_code=status, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
            cached_tokens=usage.cached_tokens, cost_usd=cost, latency_ms=round(latency_ms, 2), complete=complete,
            error=error, key_id=key.id,
            agent_id=key.scope_id if key.scope_type == "agent" else None,
            team_id=key.scope_id if key.scope_type == "team" else key.metadata.get("teamId"),
            user_name=key.scope_id if key.scope_type == "user" else None, cost_estimated=estimated,
        )  # fmt: skip
        return await self.writer.write(record, release=reservation.id if reservation is not None else None)


class UsageWriter:
    """Writes usage records in batches: whatever arrives while one batch commits goes into the next, so under
    load one transaction carries many records, and a lone record is written at once. ``write`` returns once its
    record is committed -- with ``release``, the durable budget reservation it replaces deleted in the same
    transaction."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self._queue: list[tuple[UsageRecord, str | None, asyncio.Future[None]]] = []
        self._running: asyncio.Task[None] | None = None

    async def write(self, record: UsageRecord, *, release: str | None = None) -> UsageRecord:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((record, release, done))
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(self._drain())
        await asyncio.shield(done)
        return record

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:500], self._queue[500:]
            try:
                await self.store.add_usages([r for r, _, _ in batch], [r for _, r, _ in batch if r])
            except Exception:
                await self._one_by_one(batch)  # one bad record must not take the others with it
                continue
            for _, _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def _one_by_one(self, batch: list[tuple[UsageRecord, str | None, asyncio.Future[None]]]) -> None:
        for record, release, done in batch:
            try:
                await self.store.add_usages([record], [release] if release else [])
            except Exception as exc:
                log.error("a usage record could not be written", record=repr(record), error=repr(exc))
                if not done.done():
                    done.set_exception(exc)
            else:
                if not done.done():
                    done.set_result(None)


def _credential(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return headers.get("x-api-key") or headers.get("x-goog-api-key") or None


def load_policy(path: str) -> Callable[[Gateway], Policy]:
    """``"package.module:factory"`` → the factory (``gateway_policies``); a bad path fails at start, saying why."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"gateway policy {path!r}: expected 'package.module:factory'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"gateway policy {path!r} cannot be loaded: {exc}") from exc
    if not callable(factory):
        raise ValueError(f"gateway policy {path!r} is not callable")
    return factory
