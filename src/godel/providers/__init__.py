"""Model providers: the ``[providers.NAME]`` tables of the configuration, and how ``NAME/MODEL`` resolves to
the endpoint an agent CLI is pointed at (with its fallback chain)."""

from godel.providers.config import ProviderConfig
from godel.providers.routing import Route, resolve_endpoint, resolve_route

__all__ = ["ProviderConfig", "Route", "resolve_endpoint", "resolve_route"]
