"""Egress: which hosts an agent may reach beyond the gateway, and the credential it shows the egress proxy.

An agent's allowlist is ``config.sandbox.egress`` (its own, else its team's): host rules such as
``registry.npmjs.org``, ``*.pythonhosted.org`` (any subdomain, not the domain itself) or ``github.com:22``; a rule
without a port allows 80 and 443. Empty or absent: nothing but the gateway. The proxy that enforces it is
``godel.api.egress``; a confined runtime points the agent at it (``HTTP_PROXY``/``HTTPS_PROXY``) with the agent's
id and an HMAC of it as proxy credentials (``EgressTokens``), so the proxy knows whose allowlist applies without
any state of its own, and a credential read from one sandbox does not speak for another agent.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from godel.auth.tokens import load_or_create_key
from godel.errors import FieldError, ValidationError

MAX_RULES = 100
DEFAULT_PORTS = (80, 443)
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_RULE = re.compile(rf"^(?P<wild>\*\.)?(?P<host>{_LABEL}(?:\.{_LABEL})*)(?::(?P<port>[0-9]{{1,5}}))?$")


@dataclass(frozen=True)
class Rule:
    host: str
    subdomains: bool  # "*.example.org": any name under example.org, not example.org itself
    port: int | None  # None: 80 and 443

    def allows(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".")
        if port not in ((self.port,) if self.port is not None else DEFAULT_PORTS):
            return False
        return host.endswith("." + self.host) if self.subdomains else host == self.host

    def __str__(self) -> str:
        return f"{'*.' if self.subdomains else ''}{self.host}{f':{self.port}' if self.port is not None else ''}"


def parse_rules(value: Any, field: str) -> list[Rule]:
    """The rules of an allowlist; 400 naming the first bad one."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError(f"{field} must be a list of host rules", [FieldError(field, "a list of strings")])
    if len(value) > MAX_RULES:
        raise ValidationError(f"{field} has more than {MAX_RULES} rules", [FieldError(field, f"at most {MAX_RULES}")])
    rules = []
    for i, text in enumerate(value):
        found = _RULE.match(text.strip().lower())
        port = int(found.group("port")) if found and found.group("port") else None
        if found is None or (port is not None and not 0 < port < 65536):
            why = "a host name, or *.domain for its subdomains, with an optional :port (e.g. *.github.com:443)"
            raise ValidationError(f"invalid egress rule {text!r}", [FieldError(f"{field}[{i}]", why)])
        rules.append(Rule(found.group("host"), bool(found.group("wild")), port))
    return rules


def allowed(rules: list[Rule], host: str, port: int) -> Rule | None:
    """The rule that lets ``host:port`` through, or None."""
    return next((rule for rule in rules if rule.allows(host, port)), None)


def rules_of(config: dict[str, Any]) -> list[Rule]:
    """The allowlist recorded in an agent's config (validated at spawn; anything unreadable allows nothing)."""
    section = config.get("sandbox")
    try:
        return parse_rules(section.get("egress") if isinstance(section, dict) else None, "egress")
    except ValidationError:
        return []


class EgressTokens:
    """The proxy credential of each agent: an HMAC of its id under a key of this server (``egress.key``)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def in_home(cls, home: Path) -> EgressTokens:
        return cls(load_or_create_key(home / "egress.key"))

    def token(self, agent_id: str) -> str:
        return hmac.new(self._key, agent_id.encode(), hashlib.sha256).hexdigest()[:40]

    def check(self, agent_id: str, token: str) -> bool:
        return hmac.compare_digest(self.token(agent_id), token)
