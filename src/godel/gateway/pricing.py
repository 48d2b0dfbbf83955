"""What one gateway request cost, in USD: a per-model override from the configuration, else genai-prices' table.

Prices come from the maintained table of the ``genai-prices`` package (by pydantic), as bundled with the installed
version (nothing is fetched at run time). A model that neither an override nor the table knows has no cost
(``None``): a cost is never guessed.

Token counts are Godel's: ``input_tokens`` EXCLUDES the cached tokens, ``cached_tokens`` are cache reads (priced
at the model's cached-input rate when there is one, else at its input rate). ``cache_write_tokens`` are the part of
``input_tokens`` that was written to the provider's prompt cache (Anthropic bills them at a premium), priced at the
model's cache-write rate when there is one.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from numbers import Real
from typing import Annotated, Final

import structlog
from pydantic import BeforeValidator

log = structlog.get_logger("godel.gateway.pricing")

KIND_PROVIDER_IDS: Final[Mapping[str, str]] = {
    "openai-chat": "openai",
    "openai-responses": "openai",
    "anthropic": "anthropic",
    "gemini": "google",
}
"""Godel's provider kinds (wire APIs) → genai-prices' provider ids."""

PRICE_FIELDS: Final = ("input_per_mtok", "output_per_mtok", "cached_input_per_mtok", "cache_write_per_mtok")
_REQUIRED_FIELDS: Final = frozenset({"input_per_mtok", "output_per_mtok"})
_OPTIONAL_FIELDS: Final = frozenset(PRICE_FIELDS) - _REQUIRED_FIELDS
_CACHE_SIZE: Final = 1024  # (kind, provider, model) lookups remembered; model names come from requests


@dataclass(frozen=True)
class Price:
    """A model's price in USD per million tokens (a per-model override from the configuration)."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None
    """Cache reads; ``None``: priced at ``input_per_mtok``."""
    cache_write_per_mtok: float | None = None
    """Cache writes; ``None``: priced at ``input_per_mtok``."""

    def __post_init__(self) -> None:
        for name in PRICE_FIELDS:
            value = getattr(self, name)
            if not (name in _OPTIONAL_FIELDS and value is None):
                _check_usd(value, name)

    def cost(self, *, input_tokens: int, output_tokens: int, cached_tokens: int, cache_write_tokens: int = 0) -> float:
        cached_rate = self.input_per_mtok if self.cached_input_per_mtok is None else self.cached_input_per_mtok
        write_rate = self.input_per_mtok if self.cache_write_per_mtok is None else self.cache_write_per_mtok
        writes = min(cache_write_tokens, input_tokens)
        return (
            (input_tokens - writes) * self.input_per_mtok
            + writes * write_rate
            + cached_tokens * cached_rate
            + output_tokens * self.output_per_mtok
        ) / 1_000_000


def _check_usd(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real | Decimal):
        raise ValueError(f"{where}: expected a number of USD per million tokens, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{where}: expected a finite, non-negative number of USD per million tokens, got {value!r}")
    return number


def price_overrides(raw: Mapping[str, Mapping[str, float]]) -> dict[str, Price]:
    """``{"PROVIDER/MODEL": {"input_per_mtok": …, "output_per_mtok": …, "cached_input_per_mtok": …}}`` → prices.

    ``cached_input_per_mtok`` and ``cache_write_per_mtok`` are optional.
    Raises ``ValueError`` naming the entry and the field at fault (inside a
    pydantic validator, as with :data:`PriceOverrides`, it becomes a ``ValidationError``).
    """
    if not isinstance(raw, Mapping):
        raise ValueError(
            f'price overrides: expected a table of "PROVIDER/MODEL" = {{input_per_mtok = …, output_per_mtok = …}}, '
            f"got {type(raw).__name__}"
        )
    prices: dict[str, Price] = {}
    for key, fields in raw.items():
        provider, sep, model = key.partition("/") if isinstance(key, str) else ("", "", "")
        if not sep or not provider.strip() or not model.strip():
            raise ValueError(f"price override {key!r}: the key must be PROVIDER/MODEL, e.g. openai/gpt-4o")
        if isinstance(fields, Price):
            prices[key] = fields
            continue
        if not isinstance(fields, Mapping):
            raise ValueError(
                f"price override {key!r}: expected a table with input_per_mtok, output_per_mtok and optionally "
                f"cached_input_per_mtok and cache_write_per_mtok, got {fields!r}"
            )
        unknown = sorted(str(name) for name in fields if name not in PRICE_FIELDS)
        if unknown:
            raise ValueError(
                f"price override {key!r}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(PRICE_FIELDS)})"
            )
        missing = sorted(_REQUIRED_FIELDS - fields.keys())
        if missing:
            raise ValueError(f"price override {key!r}: missing {' and '.join(missing)}")
        rates = {
            name: None if fields.get(name) is None else _check_usd(fields[name], f"price override {key!r}: {name}")
            for name in PRICE_FIELDS
        }
        prices[key] = Price(**rates)  # type: ignore[arg-type]  # the required two were checked above
    return prices


PriceOverrides = Annotated[dict[str, Price], BeforeValidator(price_overrides)]
"""A settings field type: the raw ``PROVIDER/MODEL`` tables, validated by :func:`price_overrides`."""

_UNKNOWN: Final = ""  # cached: neither genai-prices provider knows the model


class Pricer:
    """The cost of one request: ``overrides["provider_name/model"]`` first, else genai-prices.

    genai-prices is asked, in order, with: the provider's own name when it is exactly a genai-prices provider id
    (``openrouter``, ``groq``, ``azure``, …); the id of its kind (``openai-chat``/``openai-responses`` →
    ``openai``, ``anthropic`` → ``anthropic``, ``gemini`` → ``google``); and, when the name is not that id (a
    custom name, e.g. ``deepseek`` served over ``openai-chat``), genai-prices' own matching of the provider from the
    model name. Which provider knows the model is remembered per (kind, name, model), unknown models included, so
    a request pays one price computation (a fraction of a millisecond) and no search.
    """

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self._overrides: dict[str, Price] = dict(overrides or {})
        self._resolved: OrderedDict[tuple[str, str, str], str] = OrderedDict()

    def cost(
        self,
        *,
        provider_kind: str,
        provider_name: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int,
        cache_write_tokens: int = 0,
    ) -> float | None:
        """USD for one request, or ``None`` when the model's price is unknown (never raises)."""
        counts = (input_tokens, output_tokens, cached_tokens, cache_write_tokens)
        if not model or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in counts):
            return None
        override = self._overrides.get(f"{provider_name}/{model}")
        if override is not None:
            return override.cost(
                input_tokens=input_tokens, output_tokens=output_tokens, cached_tokens=cached_tokens,
                cache_write_tokens=cache_write_tokens,
            )  # fmt: skip
        try:
            return self._table_cost(
                provider_kind, provider_name, model, input_tokens, output_tokens, cached_tokens, cache_write_tokens
            )
        except Exception as exc:  # metering must never fail a request
            log.warning("pricing_failed", provider=provider_name, model=model, error=repr(exc))
            return None

    def _table_cost(
        self, kind: str, name: str, model: str, input_tokens: int, output_tokens: int, cached_tokens: int,
        cache_write_tokens: int,
    ) -> float | None:  # fmt: skip
        from genai_prices import Usage, calc_price  # imported on first use: loading the table takes ~0.5 s

        key = (kind, name, model)
        resolved = self._resolved.get(key)
        if resolved == _UNKNOWN:
            self._resolved.move_to_end(key)
            return None
        # genai-prices counts input_tokens as ALL input, cache reads and writes included (both are parts of it).
        usage = Usage(
            input_tokens=input_tokens + cached_tokens, cache_read_tokens=cached_tokens,
            cache_write_tokens=min(cache_write_tokens, input_tokens), output_tokens=output_tokens,
        )  # fmt: skip
        candidates: list[str | None] = [resolved] if resolved is not None else self._candidates(kind, name)
        for provider_id in candidates:
            try:
                calc = calc_price(usage, model, provider_id=provider_id)
            except LookupError:
                continue
            self._remember(key, calc.provider.id)
            return float(calc.total_price)
        if resolved is not None:  # the table changed under us: search again next time
            del self._resolved[key]
        else:
            self._remember(key, _UNKNOWN)
        return None

    @staticmethod
    def _candidates(kind: str, name: str) -> list[str | None]:
        from genai_prices.data_snapshot import get_snapshot

        own = name.strip().lower()
        kind_id = KIND_PROVIDER_IDS.get(kind)
        candidates: list[str | None] = []
        if own in {provider.id for provider in get_snapshot().providers}:
            candidates.append(own)
        if kind_id is not None and kind_id not in candidates:
            candidates.append(kind_id)
        if own != kind_id:
            candidates.append(None)  # genai-prices finds the provider from the model name
        return candidates

    def _remember(self, key: tuple[str, str, str], provider_id: str) -> None:
        self._resolved[key] = provider_id
        self._resolved.move_to_end(key)
        while len(self._resolved) > _CACHE_SIZE:
            self._resolved.popitem(last=False)
