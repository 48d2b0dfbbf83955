"""Gateway policies beside metering, budgets and rate limits: PII redaction of what is sent to a provider
(opt-in), an audit log with request and response bodies (opt-in; the metadata of every request is always in the
usage records), and a circuit breaker per provider that fails fast -- or routes to another provider serving the
same model over the same wire API -- while a provider keeps failing.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

# ------------------------------------------------------------------------------------------------ redaction

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_SECRET = re.compile(
    r"\b(?:sk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}|godel_vk_[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|xox[abpr]-[A-Za-z0-9-]{10,})\b"
)
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")


def _luhn(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def redact_text(text: str) -> str:
    text = _SECRET.sub("[redacted-secret]", text)
    text = _EMAIL.sub("[redacted-email]", text)

    def card(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        return "[redacted-card]" if 13 <= len(digits) <= 19 and _luhn(digits) else match.group()

    return _CARD.sub(card, text)


def redact_body(value: Any) -> Any:
    """Every string in a request body, redacted (model names and other short identifiers are left alone by the
    patterns: an email, a key-shaped token, a Luhn-valid card number)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [redact_body(v) for v in value]
    if isinstance(value, dict):
        return {k: redact_body(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------------------------- audit

AUDIT_BODY_LIMIT = 1 << 20  # bytes of a response body kept in the audit log


class AuditLog:
    """One JSON line per proxied request, in ``<dir>/gateway-YYYY-MM-DD.jsonl`` (UTC days)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, at: datetime, entry: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.directory / f"gateway-{at.date().isoformat()}.jsonl"
        line = json.dumps({"at": at.isoformat(), **entry}, ensure_ascii=False, default=str)
        with path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")


# ------------------------------------------------------------------------------------------ circuit breaker


@dataclass
class _Circuit:
    failures: int = 0
    opened_at: float | None = None
    trial: bool = False  # half-open: one request is let through to see whether the provider is back


class CircuitBreaker:
    """Per provider: after ``threshold`` failures in a row (unreachable, timed out, or a 5xx/429 answer) the
    circuit opens for ``reset_seconds``: requests are not sent there. Then one trial request goes through; its
    success closes the circuit, its failure opens it again."""

    def __init__(self, threshold: int = 5, reset_seconds: float = 30.0, *, now: Callable[[], float] = time.monotonic):
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self.now = now
        self._circuits: dict[str, _Circuit] = {}

    def retry_after(self, provider: str) -> float | None:
        """None when a request may go to ``provider`` now (which claims the trial of a half-open circuit)."""
        c = self._circuits.get(provider)
        if c is None or c.opened_at is None:
            return None
        waited = self.now() - c.opened_at
        if waited >= self.reset_seconds and not c.trial:
            c.trial = True
            return None
        return max(0.0, self.reset_seconds - waited) or 1.0

    def abandoned(self, provider: str) -> None:
        """The request sent there was given up before it told anything (the caller left): a half-open circuit's
        trial is free to be claimed again."""
        c = self._circuits.get(provider)
        if c is not None:
            c.trial = False

    def succeeded(self, provider: str) -> None:
        self._circuits.pop(provider, None)

    def failed(self, provider: str) -> None:
        c = self._circuits.setdefault(provider, _Circuit())
        c.failures += 1
        if c.trial or c.failures >= self.threshold:
            c.opened_at, c.trial = self.now(), False

    def state(self) -> dict[str, dict[str, Any]]:
        return {
            p: {"failures": c.failures, "open": c.opened_at is not None, "trial": c.trial}
            for p, c in self._circuits.items()
        }


# ---------------------------------------------------------------------------------------------------- cache


@dataclass(frozen=True)
class CachedResponse:
    status: int
    content_type: str
    body: bytes


class ResponseCache:
    """Answers to identical non-streaming requests (same provider, path and body), kept ``ttl`` seconds, at most
    ``max_entries`` (the oldest go first). Only successful answers are kept."""

    def __init__(self, ttl: float, max_entries: int = 1000, *, now: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.now = now
        self._entries: dict[str, tuple[float, CachedResponse]] = {}

    @staticmethod
    def key(provider: str, path: str, body: dict[str, Any]) -> str:
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(f"{provider}\n{path}\n{canonical}".encode()).hexdigest()

    def get(self, key: str) -> CachedResponse | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self.now() - entry[0] > self.ttl:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: str, response: CachedResponse) -> None:
        if len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]  # dicts keep insertion order: the oldest
        self._entries[key] = (self.now(), response)
