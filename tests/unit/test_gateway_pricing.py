"""The gateway's pricing: overrides first, else genai-prices' table; an unknown model has no cost."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import TieredPrices
from pydantic import BaseModel, Field, ValidationError

from godel.gateway.pricing import Price, PriceOverrides, Pricer, price_overrides


def table_rates(provider_id: str, model: str) -> tuple[float, float, float | None]:
    """(input, output, cache read) USD per million tokens, as the installed genai-prices has them today."""
    _, info = get_snapshot().find_provider_model(model, None, provider_id, None)
    prices = info.get_prices(datetime.now(tz=UTC))

    def rate(value: Decimal | TieredPrices | None) -> float | None:
        # Small requests stay below any tier's threshold: the base rate applies.
        return None if value is None else float(value.base if isinstance(value, TieredPrices) else value)

    input_rate, output_rate = rate(prices.input_mtok), rate(prices.output_mtok)
    assert input_rate is not None and output_rate is not None
    return input_rate, output_rate, rate(prices.cache_read_mtok)


def cost(pricer: Pricer, kind: str, name: str, model: str, *, i: int = 0, o: int = 0, c: int = 0) -> float | None:
    return pricer.cost(
        provider_kind=kind, provider_name=name, model=model, input_tokens=i, output_tokens=o, cached_tokens=c
    )


@pytest.mark.parametrize(
    ("kind", "name", "model", "provider_id"),
    [
        ("openai-chat", "openai", "gpt-4o", "openai"),
        ("openai-responses", "openai", "gpt-4o-mini", "openai"),
        ("anthropic", "anthropic", "claude-sonnet-4-5", "anthropic"),
        ("gemini", "gemini", "gemini-2.5-flash", "google"),
    ],
)
def test_real_prices_from_the_table(kind: str, name: str, model: str, provider_id: str) -> None:
    input_rate, output_rate, _ = table_rates(provider_id, model)
    expected = (1_000 * input_rate + 500 * output_rate) / 1_000_000
    got = cost(Pricer(), kind, name, model, i=1_000, o=500)
    assert got is not None and got > 0
    assert got == pytest.approx(expected)


def test_cached_tokens_at_the_cached_rate() -> None:
    input_rate, output_rate, cached_rate = table_rates("anthropic", "claude-sonnet-4-5")
    assert cached_rate is not None and cached_rate < input_rate
    got = cost(Pricer(), "anthropic", "anthropic", "claude-sonnet-4-5", i=1_000, o=200, c=4_000)
    # input_tokens excludes the cached tokens: 1000 at the input rate, 4000 at the cache-read rate.
    assert got == pytest.approx((1_000 * input_rate + 4_000 * cached_rate + 200 * output_rate) / 1_000_000)


def test_cache_writes_at_the_cache_write_rate() -> None:
    _, info = get_snapshot().find_provider_model("claude-sonnet-4-5", None, "anthropic", None)
    write = info.get_prices(datetime.now(tz=UTC)).cache_write_mtok
    write_rate = write.base if isinstance(write, TieredPrices) else write  # small requests: the base tier
    input_rate, output_rate, _ = table_rates("anthropic", "claude-sonnet-4-5")
    assert write_rate is not None and float(write_rate) > input_rate, "precondition: writes cost a premium"
    got = Pricer().cost(
        provider_kind="anthropic", provider_name="anthropic", model="claude-sonnet-4-5",
        input_tokens=3_000, output_tokens=100, cached_tokens=0, cache_write_tokens=2_000,
    )  # fmt: skip
    # 2000 of the 3000 input tokens were cache writes: they are priced at the write rate, the other 1000 at input.
    expected = (1_000 * input_rate + 2_000 * float(write_rate) + 100 * output_rate) / 1_000_000
    assert got == pytest.approx(expected)
    override = Pricer(price_overrides({"a/m": {"input_per_mtok": 1, "output_per_mtok": 2, "cache_write_per_mtok": 5}}))
    got = override.cost(
        provider_kind="anthropic", provider_name="a", model="m", input_tokens=300, output_tokens=0, cached_tokens=0,
        cache_write_tokens=100,
    )  # fmt: skip
    assert got == pytest.approx((200 * 1 + 100 * 5) / 1_000_000)


def test_cached_tokens_at_the_input_rate_when_the_model_has_no_cached_rate() -> None:
    input_rate, output_rate, cached_rate = table_rates("openai", "gpt-4")
    assert cached_rate is None, "precondition: genai-prices has no cached rate for gpt-4"
    got = cost(Pricer(), "openai-chat", "openai", "gpt-4", i=100, o=10, c=900)
    assert got == pytest.approx((1_000 * input_rate + 10 * output_rate) / 1_000_000)


def test_overrides_win_over_the_table() -> None:
    pricer = Pricer({"openai/gpt-4o": Price(input_per_mtok=1.0, output_per_mtok=2.0, cached_input_per_mtok=0.5)})
    assert cost(pricer, "openai-chat", "openai", "gpt-4o", i=1_000_000, o=1_000_000, c=2_000_000) == 4.0
    # Keyed by provider name: the same model under another provider still comes from the table.
    input_rate, output_rate, _ = table_rates("openai", "gpt-4o")
    got = cost(pricer, "openai-chat", "azure-east", "gpt-4o", i=1_000_000, o=1_000_000)
    assert got == pytest.approx(input_rate + output_rate)


def test_override_without_cached_rate_prices_cache_reads_at_the_input_rate() -> None:
    pricer = Pricer(price_overrides({"local/qwen3-coder": {"input_per_mtok": 0.2, "output_per_mtok": 0.8}}))
    assert cost(pricer, "openai-chat", "local", "qwen3-coder", i=500_000, o=250_000, c=500_000) == pytest.approx(0.4)


def test_override_for_a_model_the_table_does_not_know() -> None:
    pricer = Pricer({"local/my-finetune": Price(input_per_mtok=0, output_per_mtok=0)})
    assert cost(pricer, "openai-chat", "local", "my-finetune", i=10, o=10) == 0.0


@pytest.mark.parametrize(
    ("kind", "name", "model"),
    [
        ("openai-chat", "openai", "gpt-no-such-model"),
        ("anthropic", "anthropic", "claude-no-such-model"),
        ("openai-chat", "local", "my-private-model"),
        ("gemini", "vertex", "no-such-model"),
        ("some-future-kind", "x", "y"),
        ("openai-chat", "openai", ""),
    ],
)
def test_unknown_model_has_no_cost(kind: str, name: str, model: str) -> None:
    pricer = Pricer()
    assert cost(pricer, kind, name, model, i=100, o=100) is None
    assert cost(pricer, kind, name, model, i=100, o=100) is None  # remembered as unknown, still None


def test_custom_provider_name_with_a_known_model_id() -> None:
    # A custom name over a known kind: the kind's provider knows the model.
    input_rate, output_rate, _ = table_rates("openai", "gpt-4o")
    got = cost(Pricer(), "openai-chat", "corp-proxy", "gpt-4o", i=1_000, o=1_000)
    assert got == pytest.approx((1_000 * input_rate + 1_000 * output_rate) / 1_000_000)
    # A custom name whose model the kind's provider does not know: genai-prices matches it from the model name.
    input_rate, output_rate, _ = table_rates("anthropic", "claude-sonnet-4-5")
    got = cost(Pricer(), "openai-chat", "corp-proxy", "claude-sonnet-4-5", i=1_000, o=1_000)
    assert got == pytest.approx((1_000 * input_rate + 1_000 * output_rate) / 1_000_000)
    # A name that is a genai-prices provider id is priced as that provider.
    input_rate, output_rate, _ = table_rates("deepseek", "deepseek-chat")
    got = cost(Pricer(), "openai-chat", "deepseek", "deepseek-chat", i=1_000, o=1_000)
    assert got == pytest.approx((1_000 * input_rate + 1_000 * output_rate) / 1_000_000)


def test_repeated_lookups_agree() -> None:
    pricer = Pricer()
    first = cost(pricer, "anthropic", "anthropic", "claude-sonnet-4-5", i=10, o=10, c=10)
    assert first is not None
    assert all(cost(pricer, "anthropic", "anthropic", "claude-sonnet-4-5", i=10, o=10, c=10) == first for _ in range(3))


@pytest.mark.parametrize("bad", [{"i": -1}, {"o": -1}, {"c": -5}])
def test_invalid_counts_have_no_cost_and_do_not_raise(bad: dict[str, int]) -> None:
    assert cost(Pricer(), "openai-chat", "openai", "gpt-4o", **bad) is None


def test_price_overrides_from_config() -> None:
    prices = price_overrides(
        {
            "openai/gpt-4o": {"input_per_mtok": 2, "output_per_mtok": 8.5, "cached_input_per_mtok": 0.5},
            "openrouter/anthropic/claude-sonnet-4": {"input_per_mtok": 3, "output_per_mtok": 15},
        }
    )
    assert prices == {
        "openai/gpt-4o": Price(2.0, 8.5, 0.5),
        "openrouter/anthropic/claude-sonnet-4": Price(3.0, 15.0, None),
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"gpt-4o": {"input_per_mtok": 1, "output_per_mtok": 1}}, "PROVIDER/MODEL"),
        ({"openai/": {"input_per_mtok": 1, "output_per_mtok": 1}}, "PROVIDER/MODEL"),
        ({"openai/gpt-4o": {"input_per_mtok": 1}}, "missing output_per_mtok"),
        ({"openai/gpt-4o": {"input_per_mtok": 1, "output_per_mtok": 1, "input": 2}}, "unknown field(s) input"),
        ({"openai/gpt-4o": {"input_per_mtok": -1, "output_per_mtok": 1}}, "non-negative"),
        ({"openai/gpt-4o": {"input_per_mtok": float("nan"), "output_per_mtok": 1}}, "finite"),
        ({"openai/gpt-4o": {"input_per_mtok": "2.5", "output_per_mtok": 1}}, "expected a number"),
        ({"openai/gpt-4o": {"input_per_mtok": True, "output_per_mtok": 1}}, "expected a number"),
        ({"openai/gpt-4o": {"input_per_mtok": 1, "output_per_mtok": 1, "cached_input_per_mtok": -2}}, "cached_input"),
        ({"openai/gpt-4o": 2.5}, "expected a table"),
        (["openai/gpt-4o"], "expected a table"),
    ],
)
def test_bad_price_overrides(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match="price override") as info:
        price_overrides(raw)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_price_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="output_per_mtok"):
        Price(input_per_mtok=1, output_per_mtok=-1)


def test_overrides_as_a_pydantic_field() -> None:
    class Config(BaseModel):
        prices: PriceOverrides = Field(default_factory=dict)

    config = Config.model_validate({"prices": {"local/llama": {"input_per_mtok": 0.1, "output_per_mtok": 0.2}}})
    assert config.prices == {"local/llama": Price(0.1, 0.2)}
    assert Config().prices == {}
    with pytest.raises(ValidationError, match="missing input_per_mtok"):
        Config.model_validate({"prices": {"local/llama": {"output_per_mtok": 0.2}}})
