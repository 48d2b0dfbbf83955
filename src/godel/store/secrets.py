"""Secrets at rest: values Godel must store but nobody should read from the database file.

A ``SecretBox`` seals a string with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under one key kept
in a file (``$GODEL_HOME/secret.key`` by default, mode 0600, made on first use; several servers on one database
share it through ``secret_key_file``). A sealed value reads ``godel:sealed:v1:<token>``: the prefix tells a sealed
value from a plain one, so rows written before sealing existed still read back (``open`` returns them as they
are), and sealing twice is a no-op (a fork copies its source's sealed environment as it is).

Where it is used: a spawn's ``env`` values are sealed before the agent row is written
(``ControlPlane.spawn``) and opened only where a run's process environment is built
(``godel.scheduler.launching.launch_request``); webhook secrets are sealed by their store. Everything else handles the
sealed text, and the API shows names only.

The files around them are private too: ``private_dir`` makes a directory 0700 (``$GODEL_HOME``, ``logs/``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken

from godel.errors import StoreError

if TYPE_CHECKING:
    from godel.settings import Settings

PREFIX = "godel:sealed:v1:"
KEY_FILE = "secret.key"


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter (made when missing, tightened when it is ours)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(PermissionError):  # not ours (a shared parent someone configured): leave it
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
    return path


def load_or_create_key(path: Path) -> bytes:
    """The Fernet key in ``path``, made (mode 0600) when the file does not exist yet."""
    return key_file(path, make=Fernet.generate_key)


def key_file(path: Path, *, make: Callable[[], bytes]) -> bytes:
    """The key in ``path``, made by ``make`` (mode 0600, never through a symlink) when the file does not exist
    yet; a racing second server reads the one the first wrote. A key file others may read is tightened."""
    try:
        data = path.read_bytes().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = make()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            return key_file(path, make=make)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return data
    with contextlib.suppress(PermissionError):
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    return data


class SecretBox:
    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise StoreError("the secret key is not a Fernet key (32 url-safe base64-encoded bytes)") from exc

    @classmethod
    def from_file(cls, path: Path) -> SecretBox:
        return cls(load_or_create_key(path))

    @classmethod
    def for_settings(cls, settings: Settings) -> SecretBox:
        if settings.secret_key_file is not None:
            return cls.from_file(settings.secret_key_file)
        private_dir(settings.home)
        return cls.from_file(settings.home / KEY_FILE)

    @staticmethod
    def is_sealed(text: str) -> bool:
        return text.startswith(PREFIX)

    def seal(self, text: str) -> str:
        if self.is_sealed(text):
            return text
        return PREFIX + self._fernet.encrypt(text.encode()).decode("ascii")

    def open(self, text: str) -> str:
        """The plain value; a value stored before sealing existed comes back as it is."""
        if not self.is_sealed(text):
            return text
        try:
            return self._fernet.decrypt(text[len(PREFIX) :].encode("ascii")).decode()
        except (InvalidToken, UnicodeError) as exc:
            raise StoreError(
                "a stored secret cannot be opened with this server's key: servers sharing a database must share "
                "secret_key_file"
            ) from exc

    def seal_values(self, mapping: Mapping[str, str]) -> dict[str, str]:
        return {k: self.seal(v) for k, v in mapping.items()}

    def open_values(self, mapping: Mapping[str, str]) -> dict[str, str]:
        return {k: self.open(v) for k, v in mapping.items()}
