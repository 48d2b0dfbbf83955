"""What every group of endpoints shares: ``_call``, the path and query helpers, and how one definition serves two
clients.

Each request is written once, in a ``Calls`` subclass per resource (``agents``, ``events``, ``teams``, …), and
only says which request it is; ``_call`` sends it. ``GodelClient`` is ``Endpoints[JSON]`` (its ``_call`` blocks
and returns the data) and ``AsyncGodelClient`` is ``Endpoints[Awaitable[JSON]]`` (its ``_call`` is a coroutine).
A method that answers one of the main resources passes ``into=`` (``Agent.parse``, ``Page.of(Task)``…) and is
declared twice with ``@overload`` on the type of ``self``, so that the blocking client's method returns ``Agent``
and the async one's ``Awaitable[Agent]``: Python's types cannot say "the same wrapper around another type" in one
signature. Other methods return the envelope's ``data`` untouched.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

R = TypeVar("R")
JSON = dict[str, Any]
Deferred = Awaitable[JSON]  # the async client's ``R``

API = "/api/v1"


def camelize(fields: Mapping[str, Any]) -> JSON:
    """Top-level ``snake_case`` keys to the API's ``camelCase``; ``None`` means "not given" and is dropped."""
    out: JSON = {}
    for key, value in fields.items():
        if value is None:
            continue
        head, *rest = key.split("_")
        out[head + "".join(part[:1].upper() + part[1:] for part in rest)] = value
    return out


def agent_path(agent_id: str, *rest: str) -> str:
    # Quoted so that a stray "/" in an id cannot reach another route.
    return "/".join((f"{API}/agents/{quote(agent_id, safe='')}", *rest))


def iso_param(value: str | datetime | None) -> str | None:
    """A time for a query string: a ``datetime`` (a naive one is taken as UTC) as ISO 8601, a string as given."""
    if value is None or isinstance(value, str):
        return value
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def patterns_param(patterns: str | Sequence[str] | None) -> list[str] | None:
    if patterns is None:
        return None
    return [patterns] if isinstance(patterns, str) else list(patterns)


class Calls(ABC, Generic[R]):
    """The one abstract method every group of endpoints relies on."""

    @abstractmethod
    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        into: Callable[[Any], Any] | None = None,
    ) -> R:
        """Send one request; ``into`` turns the envelope's ``data`` into the typed result."""
