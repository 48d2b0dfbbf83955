"""The webhook signature: HMAC-SHA256 over ``"{timestamp}.{body}"`` with the subscription's secret.

Sent in one header, ``Godel-Signature: t=<unix seconds>,v1=<hex digest>``. The timestamp is inside what is signed,
so a receiver that refuses old timestamps (``tolerance``) also refuses a captured request replayed later; the
``v1`` label lets a future scheme be sent beside this one. Every attempt is signed afresh (a retry carries a new
``t``); the body and ``Godel-Delivery-Id`` stay the same, and receivers dedupe by the latter.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SIGNATURE_HEADER = "Godel-Signature"
EVENT_ID_HEADER = "Godel-Event-Id"
DELIVERY_ID_HEADER = "Godel-Delivery-Id"
SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300  # seconds a receiver accepts between the signature's timestamp and its own clock


def new_secret() -> str:
    """A fresh subscription secret: ``whsec_`` and 32 random bytes, URL-safe base64."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _digest(secret: str, timestamp: int, body: str) -> str:
    message = f"{timestamp}.{body}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: str, timestamp: int) -> str:
    """The ``Godel-Signature`` header value for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify(secret: str, header: str, body: str, *, now: int, tolerance: int = DEFAULT_TOLERANCE) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` at a time within ``tolerance`` seconds of ``now``."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = _digest(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))
