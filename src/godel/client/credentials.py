"""Which credential the client sends, found by itself so that every command works without flags.

In order: an ``api_key`` given to the client; ``GODEL_API_KEY`` (what each agent's run gets, and what scripts may
set); the key ``godel login URL`` saved for exactly that server in ``~/.config/godel/credentials.json`` (mode 0600);
and, for a server on this machine (a loopback URL), the administrator's key that ``godel serve`` wrote to
``$GODEL_HOME/credentials`` on its first start. Nothing found: no header, and the server answers 401 with what to do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from godel.files import write_private

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def logins_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "godel" / "credentials.json"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _normal(url: str) -> str:
    return url.rstrip("/").lower()


def saved_login(url: str) -> dict[str, Any] | None:
    entry = _read_json(logins_path()).get(_normal(url))
    return entry if isinstance(entry, dict) else None


def save_login(url: str, api_key: str, user: str | None) -> Path:
    path = logins_path()
    data = _read_json(path)
    data[_normal(url)] = {"apiKey": api_key, "user": user}
    write_private(path, json.dumps(data, indent=2))
    return path


def forget_login(url: str) -> bool:
    path = logins_path()
    data = _read_json(path)
    if data.pop(_normal(url), None) is None:
        return False
    write_private(path, json.dumps(data, indent=2))
    return True


def local_credentials(home: Path) -> dict[str, Any]:
    return _read_json(home / "credentials")


def find_api_key(url: str, home: Path | None) -> str | None:
    env = os.environ.get("GODEL_API_KEY")
    if env:
        return env
    saved = saved_login(url)
    if saved and isinstance(saved.get("apiKey"), str):
        return str(saved["apiKey"])
    if home is not None and urlsplit(url).hostname in _LOOPBACK:
        local = local_credentials(home)
        key = local.get("apiKey")
        # Only to the server that wrote it: the same scheme and port on this machine, not any loopback listener.
        if isinstance(key, str) and isinstance(local.get("url"), str) and _same_server(url, local["url"]):
            return key
    return None


def _same_server(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.port) == (pb.scheme, pb.port) and pb.hostname in _LOOPBACK
