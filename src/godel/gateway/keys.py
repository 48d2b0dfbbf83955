"""Virtual keys: ``godel_vk_`` + 43 URL-safe characters (256 random bits). Stored as their SHA-256 only."""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "godel_vk_"


def new_key() -> tuple[str, str, str]:
    """A fresh key: its text (shown once), its hash (stored) and a prefix to recognise it by in lists."""
    text = PREFIX + secrets.token_urlsafe(32)
    return text, hash_key(text), text[: len(PREFIX) + 6]


def hash_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
