"""Managing who may call: users, their roles and API keys, custom roles, and the first administrator.

Names a newcomer cannot confuse: a user's *API key* (``godel_sk_…``) lets a person or script call Godel's API; the
gateway's *virtual key* (``godel_vk_…``, ``godel key``) lets an agent or script call a model through the gateway.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from godel.auth import credentials as creds
from godel.auth.permissions import ASSIGNABLE_BUILTINS, BUILTIN_ROLES, parse_all
from godel.auth.service import AuthService
from godel.errors import ConflictError, FieldError, NotFoundError, ValidationError
from godel.files import write_private

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
MAX_KEY_TTL = 10 * 365 * 86400.0  # ten years: anything longer is "no expiry", which is said explicitly


def check_name(what: str, name: str) -> str:
    if not _NAME.match(name):
        raise ValidationError(
            f"invalid {what} name {name!r}",
            [FieldError("name", "1-100 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")],
        )
    return name


@dataclass
class Accounts:
    auth: AuthService

    @property
    def store(self) -> Any:
        return self.auth.store

    async def known_roles(self) -> set[str]:
        return set(ASSIGNABLE_BUILTINS) | {r["name"] for r in await self.store.list_roles()}

    async def _check_roles(self, roles: list[str]) -> list[str]:
        known = await self.known_roles()
        unknown = [r for r in roles if r not in known]
        if unknown:
            raise ValidationError(
                f"unknown roles: {', '.join(unknown)}",
                [FieldError("roles", f"known roles: {', '.join(sorted(known))}")],
            )
        return list(dict.fromkeys(roles))

    async def create_user(
        self, name: str, *, roles: list[str], team: str | None = None, password: str | None = None,
        oidc_subject: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        check_name("user", name)
        now = self.auth.clock.now()
        return await self.store.create_user(
            {
                "name": name, "roles": await self._check_roles(roles), "team": team,
                "password_hash": creds.hash_password(password) if password else None,
                "oidc_subject": oidc_subject, "disabled": False, "created_at": now, "updated_at": now,
            }
        )  # fmt: skip

    async def update_user(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {"updated_at": self.auth.clock.now()}
        if "roles" in changes and changes["roles"] is not None:
            values["roles"] = await self._check_roles(changes["roles"])
        if "team" in changes:
            values["team"] = changes["team"]
        if changes.get("password"):
            values["password_hash"] = creds.hash_password(changes["password"])
        if "disabled" in changes and changes["disabled"] is not None:
            values["disabled"] = bool(changes["disabled"])
        user = await self.store.update_user(name, values)
        self.auth.forget(user=name)
        if values.get("disabled") or "password_hash" in values:
            # A new password or a disable ends every session the user had open, here and (within seconds) on the
            # other servers; their API keys stop with a disable (checked on each use), not a password change.
            await self.store.revoke_user_sessions(name, self.auth.clock.now())
            self.auth.forget(everything=True)
        return user

    async def delete_user(self, name: str) -> None:
        await self.store.delete_user(name, self.auth.clock.now())
        self.auth.forget(everything=True)

    async def create_api_key(self, user: str, *, name: str | None, expires_in: float | None) -> tuple[str, dict]:
        if await self.store.get_user(user) is None:
            raise NotFoundError(f"user {user!r} not found", details={"user": user})
        now = self.auth.clock.now()
        key = creds.new_key(creds.USER_KEY)
        row = {
            "id": key.id, "kind": "user", "user_name": user, "agent_id": None, "name": name, "prefix": key.shown,
            "key_hash": creds.hash_secret(key), "grants": None, "created_at": now,
            "expires_at": now + timedelta(seconds=expires_in) if expires_in else None, "revoked_at": None,
            "last_used_at": None,
        }  # fmt: skip
        await self.store.create_api_key(row)
        return key.text, row

    async def revoke_api_key(self, key_id: str) -> dict[str, Any]:
        row = await self.store.get_api_key(key_id)
        if row is None or row["kind"] != "user":
            raise NotFoundError(f"API key {key_id!r} not found", details={"keyId": key_id})
        await self.store.revoke_api_keys(self.auth.clock.now(), key_id=key_id)
        self.auth.forget(everything=True)
        return {**row, "revoked_at": self.auth.clock.now()}

    async def set_role(self, name: str, permissions: list[str], description: str | None) -> dict[str, Any]:
        check_name("role", name)
        if name in BUILTIN_ROLES:
            raise ConflictError(f"{name!r} is a built-in role and cannot be changed", details={"role": name})
        try:
            parse_all(permissions)
        except ValueError as exc:
            raise ValidationError(str(exc), [FieldError("permissions", str(exc))]) from exc
        role = await self.store.upsert_role(
            {"name": name, "permissions": permissions, "description": description,
             "created_at": self.auth.clock.now()}
        )  # fmt: skip
        self.auth.forget(roles=True)
        return role

    async def delete_role(self, name: str) -> None:
        if name in BUILTIN_ROLES:
            raise ConflictError(f"{name!r} is a built-in role and cannot be removed", details={"role": name})
        users = [u["name"] for u in await self.store.list_users() if name in u["roles"]]
        if users:
            raise ConflictError(f"role {name!r} is still held by: {', '.join(users)}", details={"users": users})
        await self.store.delete_role(name)
        self.auth.forget(roles=True)

    async def bootstrap(self, home: Path, url: str) -> Path | None:
        """On the first start of a server with no users: an ``admin`` user with a random password and an API key,
        written to ``$GODEL_HOME/credentials`` (mode 0600) for the CLI and the Python client on this machine."""
        path = home / "credentials"
        if await self.store.count_users() > 0:
            _point_at(path, url)
            return None
        password = secrets.token_urlsafe(18)
        try:
            await self.create_user("admin", roles=["admin"], password=password)
        except ConflictError:  # another server of the same database made it first
            return None
        text, _ = await self.create_api_key("admin", name="local admin (credentials file)", expires_in=None)
        write_private(path, json.dumps({"url": url, "user": "admin", "password": password, "apiKey": text}, indent=2))
        return path


def _point_at(path: Path, url: str) -> None:
    """Keep the credentials file naming where this server now listens (the CLI sends the key only there)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(data, dict) and data.get("url") != url:
        write_private(path, json.dumps({**data, "url": url}, indent=2))
