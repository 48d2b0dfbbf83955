"""What makes a subscription valid, and a new one with a fresh secret.

A subscription names an ``http``/``https`` URL with a host and at least one event pattern in the bus's pattern
language (``godel.core.events``: ``agent:*``, ``budget:exceeded``, ``workflow:*:start``). Everything wrong with a
request is reported at once, before anything is written.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from godel.core.addresses import private_address
from godel.core.events import validate_pattern
from godel.core.ids import new_id
from godel.errors import FieldError, ValidationError
from godel.store.webhooks import WebhookSubscription
from godel.webhooks.signing import new_secret

MAX_PATTERNS = 50
MAX_URL = 2048


class PrivateAddressError(Exception):
    """A webhook URL that leads into this machine or its private network (refused unless allowed)."""


async def refuse_private(url: str) -> None:
    """Raise ``PrivateAddressError`` when ``url``'s host is, or resolves to, a loopback, private, link-local,
    reserved or metadata address: a webhook must not be a way to probe or call what sits behind the server."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if private_address(host):
        raise PrivateAddressError(f"refused: {host} is a private address (webhook_allow_private is off)")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise PrivateAddressError(f"refused: {host} does not resolve ({exc})") from exc
    for info in infos:
        if private_address(str(info[4][0])):
            raise PrivateAddressError(f"refused: {host} resolves to {info[4][0]}, a private address")


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot receive webhooks, or None."""
    if len(url) > MAX_URL:
        return f"at most {MAX_URL} characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "must name a host"
    if parts.username or parts.password:
        return "must not carry credentials (the signature authenticates Godel)"
    if any(c.isspace() for c in url):
        return "must not contain whitespace"
    return None


def check(*, url: str | None = None, patterns: Sequence[str] | None = None, allow_private: bool = True) -> None:
    """Raise ``ValidationError`` listing every problem of the given fields (None: not given, not checked)."""
    problems: list[FieldError] = []
    if url is not None and (why := url_problem(url)):
        problems.append(FieldError("url", why))
    elif url is not None and not allow_private and private_address(urlsplit(url).hostname or ""):
        problems.append(FieldError("url", "a loopback, private or link-local address (webhook_allow_private)"))
    if patterns is not None:
        if not patterns:
            problems.append(FieldError("patterns", "at least one event pattern, e.g. agent:*"))
        elif len(patterns) > MAX_PATTERNS:
            problems.append(FieldError("patterns", f"at most {MAX_PATTERNS} patterns"))
        for i, pattern in enumerate(patterns):
            if why := validate_pattern(pattern):
                problems.append(FieldError(f"patterns.{i}", f"{pattern!r}: {why}"))
    if problems:
        raise ValidationError("invalid webhook: " + "; ".join(f"{p.field}: {p.message}" for p in problems), problems)


def new_subscription(
    owner: str, url: str, patterns: Sequence[str], description: str | None = None, *, allow_private: bool = True
) -> WebhookSubscription:
    """A valid, enabled subscription with a fresh secret (raises ``ValidationError`` otherwise)."""
    check(url=url, patterns=patterns, allow_private=allow_private)
    return WebhookSubscription(
        id=new_id(),
        owner=owner,
        url=url,
        patterns=list(dict.fromkeys(patterns)),
        secret=new_secret(),
        description=description,
    )
