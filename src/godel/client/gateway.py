"""The LLM gateway's administration: virtual keys, usage, budgets (the ``/proxy`` traffic itself is not here)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from urllib.parse import quote

from godel.client.calls import API, Calls, R, camelize, iso_param


class GatewayCalls(Calls[R]):
    def create_key(
        self,
        scope: str,
        scope_id: str,
        *,
        models: Sequence[str] | None = None,
        expires_in: float | None = None,
    ) -> R:
        """``POST /keys``: a key for one agent, team or user (``scope``); the answer's ``key`` is its text, shown
        only this once. No ``models``: every configured model; no ``expires_in`` (seconds): it never expires."""
        body = camelize(
            {
                "scope": scope,
                "id": scope_id,
                "models": list(models) if models is not None else None,
                "expires_in": expires_in,
            }
        )
        return self._call("POST", f"{API}/keys", json=body)

    def list_keys(self, *, scope: str | None = None, scope_id: str | None = None, revoked: bool | None = None) -> R:
        """``GET /keys``: live keys, or with ``revoked=True`` revoked ones too (never their text)."""
        return self._call("GET", f"{API}/keys", params=camelize({"scope": scope, "id": scope_id, "revoked": revoked}))

    def revoke_key(self, key_id: str) -> R:
        return self._call("DELETE", f"{API}/keys/{quote(key_id, safe='')}")

    def usage(
        self,
        *,
        by: str | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
    ) -> R:
        """``GET /usage``: requests, tokens and USD summed by ``agent``, ``team``, ``user``, ``model`` or ``day``."""
        query = camelize({"by": by, "since": iso_param(since), "until": iso_param(until)})
        return self._call("GET", f"{API}/usage", params=query)

    def set_budget(self, scope: str, scope_id: str, *, usd: float, period: str | None = None) -> R:
        """``PUT /budgets``: the USD limit of one agent, team or user per ``daily``, ``monthly`` or ``total``."""
        body = camelize({"scope": scope, "id": scope_id, "usd": usd, "period": period})
        return self._call("PUT", f"{API}/budgets", json=body)

    def budgets(self, *, scope: str | None = None, scope_id: str | None = None) -> R:
        return self._call("GET", f"{API}/budgets", params=camelize({"scope": scope, "id": scope_id}))

    def delete_budget(self, budget_id: str) -> R:
        return self._call("DELETE", f"{API}/budgets/{quote(budget_id, safe='')}")
