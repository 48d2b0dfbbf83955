"""What the gateway's parts pass each other: the wire APIs, an upstream to call, and a refusal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from godel.providers.config import ProviderConfig

Wire = Literal["openai-chat", "openai-responses", "anthropic", "gemini"]


class GatewayError(Exception):
    """A refusal, rendered by the HTTP layer in the caller's dialect."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind  # authentication | not_found | invalid_request | upstream | permission | budget | unavailable
        self.message = message


class ProviderUnavailable(GatewayError):
    """Every provider that could serve the request has an open circuit: 503 with ``Retry-After``."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(503, "upstream", message)
        self.retry_after = max(1, int(retry_after + 0.999))


@dataclass(frozen=True)
class Upstream:
    provider: str
    config: ProviderConfig
    model: str
    url: str
    headers: dict[str, str]
