"""The configuration of one model provider (a ``[providers.NAME]`` table).

The key itself is never in the configuration: ``api_key_env`` names the server's environment variable that
holds it, read when an agent is launched.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

WIRE_APIS = ("openai-chat", "openai-responses", "anthropic", "gemini")


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    kind: Literal["openai-chat", "openai-responses", "anthropic", "gemini"]
    """The wire API: ``openai-chat`` (chat completions), ``openai-responses``, ``anthropic`` (Messages) or
    ``gemini`` (generateContent)."""

    base_url: str
    """The API root as its SDK expects it: with ``/v1`` for the OpenAI kinds (``https://api.openai.com/v1``),
    without for Anthropic and Gemini (``https://api.anthropic.com``)."""

    api_key_env: str | None = None
    """Name of the server's environment variable holding the key (never the key itself)."""

    models: list[str] = Field(default_factory=list)
    """Model ids this provider serves; a spawn's ``--model NAME/MODEL`` must name one of them."""

    allow_unpriced: bool = False
    """Under a budget, let this provider's models that have no known price (neither ``[prices]`` nor the bundled
    table) through unmetered. Off: such a request is refused (400) while any budget applies to its key."""

    @field_validator("base_url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")


class RateLimit(BaseModel):
    """A gateway rate limit (``[rate_limits.key]``, ``[rate_limits."provider/model"]``, or a key's own)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    requests_per_minute: int | None = Field(default=None, ge=1)
    """Requests in any sliding minute."""

    tokens_per_minute: int | None = Field(default=None, ge=1)
    """Tokens (input + output, as metered) in any sliding minute."""

    max_parallel: int | None = Field(default=None, ge=1)
    """Requests in flight at once."""
