"""Who may call: sessions, users, their API keys, roles, the audit log; and the open health routes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from godel.client.calls import API, Calls, R, camelize


def user_path(name: str, *rest: str) -> str:
    return "/".join((f"{API}/users/{quote(name, safe='')}", *(quote(r, safe="") for r in rest)))


class AccessCalls(Calls[R]):
    def login(self, username: str, password: str) -> R:
        """``POST /auth/login``: an access token (15 minutes) and a refresh token."""
        return self._call("POST", "/auth/login", json={"username": username, "password": password})

    def me(self) -> R:
        """``GET /auth/me``: who this client is, with its roles and permissions."""
        return self._call("GET", "/auth/me")

    def create_user(
        self, name: str, *, roles: Sequence[str] | None = None, team: str | None = None, password: str | None = None
    ) -> R:
        body = camelize({"name": name, "roles": list(roles) if roles is not None else None, "team": team,
                         "password": password})  # fmt: skip
        return self._call("POST", f"{API}/users", json=body)

    def list_users(self) -> R:
        return self._call("GET", f"{API}/users")

    def get_user(self, name: str) -> R:
        return self._call("GET", user_path(name))

    def update_user(self, name: str, **changes: Any) -> R:
        """``PATCH /users/NAME``: ``roles``, ``team``, ``password``, ``disabled``."""
        return self._call("PATCH", user_path(name), json=camelize(changes))

    def delete_user(self, name: str) -> R:
        return self._call("DELETE", user_path(name))

    def create_api_key(self, user: str, *, name: str | None = None, expires_in: float | None = None) -> R:
        """``POST /users/NAME/api-keys``: an API key (``godel_sk_…``) for calling Godel's API as that user; the
        answer's ``key`` is its text, shown only this once."""
        body = camelize({"name": name, "expires_in": expires_in})
        return self._call("POST", user_path(user, "api-keys"), json=body)

    def list_api_keys(self, user: str, *, revoked: bool | None = None) -> R:
        return self._call("GET", user_path(user, "api-keys"), params=camelize({"revoked": revoked}))

    def revoke_api_key(self, user: str, key_id: str) -> R:
        return self._call("DELETE", user_path(user, "api-keys", key_id))

    def list_roles(self) -> R:
        return self._call("GET", f"{API}/roles")

    def set_role(self, name: str, permissions: Sequence[str], description: str | None = None) -> R:
        body = camelize({"permissions": list(permissions), "description": description})
        return self._call("PUT", f"{API}/roles/{quote(name, safe='')}", json=body)

    def delete_role(self, name: str) -> R:
        return self._call("DELETE", f"{API}/roles/{quote(name, safe='')}")

    def audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        before: int | None = None,
        limit: int | None = None,
    ) -> R:
        """``GET /audit``: newest first; page with ``before`` (the last row's ``seq``)."""
        query = camelize({"actor": actor, "action": action, "before": before, "limit": limit})
        return self._call("GET", f"{API}/audit", params=query)

    def verify_audit(self) -> R:
        """``GET /audit/verify``: walks the hash chain; ``firstBadSeq`` names the first row that was altered."""
        return self._call("GET", f"{API}/audit/verify")

    # Health: open to anyone
    def health(self) -> R:
        return self._call("GET", "/health")

    def health_ready(self) -> R:
        return self._call("GET", "/health/ready")

    def health_detailed(self) -> R:
        return self._call("GET", "/health/detailed")

    def capabilities(self) -> R:
        return self._call("GET", "/capabilities")
