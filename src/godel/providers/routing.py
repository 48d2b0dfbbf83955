"""``NAME/MODEL`` → the endpoints an agent may use: the model itself, then its fallbacks, in order.

A route is decided when the agent is spawned (so a bad name is a 400 before anything is created) and stored
with the agent as names; each attempt resolves its endpoint again from the configuration of the moment, and
reads the key from the environment only then, so keys are never stored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from godel.core.ports import ModelEndpoint, WireApi
from godel.errors import AgentSpawnError, FieldError, ValidationError
from godel.providers.config import ProviderConfig


@dataclass(frozen=True)
class Route:
    names: list[str]  # "provider/model", primary first
    skipped: list[str]  # fallbacks the agent cannot use (a wire API it does not speak), with the reason


def _split(name: str, providers: Mapping[str, ProviderConfig]) -> tuple[str, str, ProviderConfig]:
    provider, sep, model = name.partition("/")
    if not sep or not provider or not model:
        raise ValidationError(
            f"model {name!r} must be written PROVIDER/MODEL",
            [FieldError("model", "PROVIDER/MODEL, e.g. openai/gpt-5 (providers are [providers.NAME] in godel.toml)")],
        )
    config = providers.get(provider)
    if config is None:
        known = ", ".join(sorted(providers)) or "none configured"
        raise ValidationError(
            f"unknown provider {provider!r} in model {name!r} (configured: {known})",
            [FieldError("model", f"provider must be one of: {known}")],
        )
    if config.models and model not in config.models:
        raise ValidationError(
            f"provider {provider!r} does not list model {model!r} (it lists: {', '.join(config.models)})",
            [FieldError("model", f"one of: {', '.join(f'{provider}/{m}' for m in config.models)}")],
        )
    return provider, model, config


def resolve_route(
    name: str,
    *,
    agent: str,
    speaks: Sequence[WireApi],
    providers: Mapping[str, ProviderConfig],
    fallbacks: Mapping[str, Sequence[str]],
) -> Route:
    """Validate ``name`` for an agent that speaks ``speaks`` and list the endpoints it may use."""
    _, _, config = _split(name, providers)
    if config.kind not in speaks:
        raise ValidationError(
            f"the {agent} CLI cannot talk to {name!r}: that provider speaks {config.kind}, {agent} speaks "
            f"{' / '.join(speaks)}; configure a provider of one of those kinds (or route it through Godel's "
            "gateway once it translates)",
            [FieldError("model", f"a provider of kind {' or '.join(speaks)}")],
        )
    names, skipped = [name], []
    for fallback in fallbacks.get(name, ()):
        _, _, fb = _split(fallback, providers)
        if fb.kind in speaks:
            names.append(fallback)
        else:
            skipped.append(f"{fallback} (speaks {fb.kind})")
    return Route(names, skipped)


def resolve_endpoint(name: str, providers: Mapping[str, ProviderConfig]) -> ModelEndpoint:
    """The endpoint for one attempt, with the key read from the server's environment now."""
    try:
        provider, model, config = _split(name, providers)
    except ValidationError as exc:
        raise AgentSpawnError(f"{exc.message} (the configuration changed since the agent was spawned)") from exc
    key = None
    if config.api_key_env:
        key = os.environ.get(config.api_key_env)
        if not key:
            raise AgentSpawnError(
                f"provider {provider!r} reads its key from ${config.api_key_env}, which is not set in the server's "
                "environment"
            )
    return ModelEndpoint(provider=provider, kind=config.kind, base_url=config.base_url, model=model, api_key=key)
