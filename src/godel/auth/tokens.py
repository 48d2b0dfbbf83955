"""Access tokens: short-lived JWTs signed with HS256 (PyJWT), carrying who (``sub``), the refresh-token family they
were issued from (``fam``, so logout or a stolen refresh token ends them too) and the usual expiry, issuer and
audience. The signing key lives in a file made on first start (mode 0600)."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt

from godel.store.secrets import key_file

ISSUER = "godel"
AUDIENCE = "godel-api"


def load_or_create_key(path: Path) -> bytes:
    """The signing key in ``path``, made (64 random bytes as hex, mode 0600) when the file does not exist yet."""
    data = key_file(path, make=lambda: secrets.token_hex(64).encode())
    if len(data) < 32:
        raise ValueError(f"{path}: a signing key needs at least 32 bytes")
    return data


class TokenSigner:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def issue(self, subject: str, family: str, now: datetime, ttl: float) -> tuple[str, datetime]:
        expires = now + timedelta(seconds=ttl)
        claims = {
            "sub": subject,
            "fam": family,
            "typ": "access",
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm="HS256"), expires

    def verify(self, token: str) -> dict[str, Any] | None:
        """The token's claims, or None for a token that is malformed, forged, expired or not an access token."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                issuer=ISSUER,
                audience=AUDIENCE,
                options={"require": ["exp", "sub", "fam", "iss", "aud"]},
            )
        except jwt.PyJWTError:
            return None
        return claims if claims.get("typ") == "access" else None


def looks_like_jwt(text: str) -> bool:
    return text.count(".") == 2 and text.startswith("ey")
