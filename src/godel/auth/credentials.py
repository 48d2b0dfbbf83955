"""The texts of credentials and how they are kept.

- A user's API key: ``godel_sk_<id>_<secret>``. ``id`` (12 characters) is public: the row is looked up by it, and
  ``secret`` (256 random bits) is checked against an argon2id hash, the way the issue and spec §6.1 ask. Argon2
  costs tens of milliseconds, so a verified key is remembered for a short while (``godel.auth.service``).
- An agent's run credential: ``godel_ak_<id>_<secret>``, hashed with SHA-256. Its 256 random bits cannot be
  guessed, so key stretching would protect nothing and would cost every spawn the hash.
- A refresh token: ``godel_rt_<id>_<secret>``, SHA-256 as well (same reasoning), single use.
- Passwords: argon2id (argon2-cffi's defaults, RFC 9106's second recommended profile).
- Access tokens: JWTs (PyJWT, HS256) with issuer, audience, expiry and the refresh family they came from.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

USER_KEY = "godel_sk_"
AGENT_KEY = "godel_ak_"
REFRESH = "godel_rt_"
_ID_LEN = 12

_hasher = PasswordHasher()


@dataclass(frozen=True)
class KeyText:
    prefix: str  # USER_KEY | AGENT_KEY | REFRESH
    id: str
    secret: str

    @property
    def text(self) -> str:
        return f"{self.prefix}{self.id}_{self.secret}"

    @property
    def shown(self) -> str:
        """What lists show to recognise a key by, never enough to use it."""
        return f"{self.prefix}{self.id}"


def new_key(prefix: str) -> KeyText:
    ident = secrets.token_hex(_ID_LEN // 2)
    return KeyText(prefix, ident, secrets.token_urlsafe(32))


def parse_key(text: str) -> KeyText | None:
    """The parts of a key's text, or None when it is not one of Godel's credentials."""
    for prefix in (USER_KEY, AGENT_KEY, REFRESH):
        if text.startswith(prefix):
            ident, sep, secret = text[len(prefix) :].partition("_")
            if sep and len(ident) == _ID_LEN and ident.isalnum() and 20 <= len(secret) <= 100:
                return KeyText(prefix, ident, secret)
    return None


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hash_secret(key: KeyText) -> str:
    """What is stored for a key: argon2id for a user's key, SHA-256 for the others."""
    return _hasher.hash(key.secret) if key.prefix == USER_KEY else sha256(key.secret)


def verify_secret(key: KeyText, stored: str) -> bool:
    """Constant-time for SHA-256; argon2's own verification otherwise (slow: call it off the event loop)."""
    if key.prefix != USER_KEY:
        return hmac.compare_digest(sha256(key.secret), stored)
    try:
        return _hasher.verify(stored, key.secret)
    except (VerificationError, InvalidHashError):
        return False


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    if not stored:
        # Still spend the time of a verification, so a missing user is not told apart by the answer's speed.
        _burn(password)
        return False
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when there is no user (made on first need, not at import: argon2 costs ~50 ms)."""
    return _hasher.hash("godel-dummy-password")


def _burn(password: str) -> None:
    with contextlib.suppress(VerificationError, InvalidHashError):  # the point is the time spent, not the answer
        _hasher.verify(_dummy_hash(), password)
