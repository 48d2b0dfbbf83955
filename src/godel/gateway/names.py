"""How a model named in a request is read: ``MODEL`` or ``PROVIDER/MODEL``.

Everywhere else in Godel -- spawn's ``model``, a key's ``models``, fallbacks, per-model rate limits and prices -- a
model is ``provider/model``, so a caller who copies a name from ``godel key create --models …`` into a request
must be understood too. The provider's own API knows only the bare id, so once the provider is chosen the request
is rewritten to name that (``upstream_body``, ``upstream_path``).

A bare id may itself contain a slash (``meta-llama/Llama-3-8B`` on an OpenAI-compatible server): a name is read as
qualified only when its head is a configured provider, and a bare id that matches exactly wins over that reading.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelName:
    provider: str | None  # None: any provider that serves ``model``
    model: str  # the provider's own id

    def matches(self, provider: str, model: str) -> bool:
        return model == self.model and (self.provider is None or provider == self.provider)


def readings(name: str, providers: Container[str]) -> list[ModelName]:
    """The ways ``name`` can be meant, most literal first: the bare id, then ``provider/model`` when its head is a
    configured provider."""
    out = [ModelName(None, name)]
    provider, sep, model = name.partition("/")
    if sep and model and provider in providers:
        out.append(ModelName(provider, model))
    return out


def upstream_body(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The body to send to a provider whose id for the model is ``model``: unchanged (the same object, so the
    caller's bytes are forwarded as they came) unless the caller named the model another way."""
    if body.get("model") == model:
        return body
    return {**body, "model": model}


def upstream_path(path: str, named: str, model: str) -> str:
    """Gemini names the model in the path (``models/NAME:method``): the provider's own id there instead of the
    name the caller used."""
    prefix = f"models/{named}:"
    if named != model and path.startswith(prefix):
        return f"models/{model}:{path[len(prefix) :]}"
    return path
