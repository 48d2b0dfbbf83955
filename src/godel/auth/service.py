"""``AuthService``: who is calling, and what they may see.

Authentication takes what a request presented (``Presented``: an ``X-API-Key``, an ``Authorization: Bearer`` API key
or access token, the session cookie, or ``?token=`` on streams) and gives a ``Principal`` or raises
``AuthenticationError``. It costs microseconds on the hot path: a verified key is remembered (by the SHA-256 of its
text) for ``KEY_CACHE_SECONDS``, a user's roles for ``USER_CACHE_SECONDS``, and concurrent misses for one key share
one lookup. A revocation, role change or removal made through this server takes effect here at once; on the other
servers of a shared database within those few seconds.

Ownership (``owner_of``) is what scopes (``own``/``team``/``all``) are decided by. It never changes once a resource
exists, so it is cached without expiry (bounded). ``can_read_event`` applies the same rule to each event a stream,
socket or webhook would deliver.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from godel.auth import credentials as creds
from godel.auth.permissions import (
    AGENT_SPAWN_GRANT,
    BUILTIN_ROLES,
    NOBODY,
    Owner,
    Permission,
    parse_all,
)
from godel.auth.principal import Principal
from godel.auth.tokens import TokenSigner, looks_like_jwt
from godel.core.events import Event
from godel.core.ports import Clock
from godel.errors import AuthenticationError, NotFoundError

KEY_CACHE_SECONDS = 30.0
USER_CACHE_SECONDS = 5.0
_OWNER_CACHE_MAX = 100_000
LOCAL = Principal(id="user:local", name="local", kind="user", roles=("admin",),
                  grants=parse_all(BUILTIN_ROLES["admin"]), method="local")  # fmt: skip


@dataclass(frozen=True)
class Presented:
    """The credentials one request carries; the API layer fills it from headers, cookie and query."""

    api_key: str | None = None  # X-API-Key
    bearer: str | None = None  # Authorization: Bearer …
    cookie: str | None = None  # the session cookie (an access token)
    query_token: str | None = None  # ?token= (WebSocket, SSE)
    client: str | None = None


@dataclass
class _Cached:
    principal: Principal
    until: float


@dataclass
class Tokens:
    access_token: str
    access_expires: datetime
    refresh_token: str
    refresh_expires: datetime
    principal: Principal


OwnerLookup = Callable[[str], Awaitable[Owner]]


@dataclass
class AuthService:
    store: Any  # the SqlStore (AuthQueries + the entity reads owner_of needs)
    clock: Clock
    signer: TokenSigner
    enabled: bool = True
    access_ttl: float = 900.0
    refresh_ttl: float = 7 * 86400.0
    _keys: dict[str, _Cached] = field(default_factory=dict)
    _sessions: dict[str, _Cached] = field(default_factory=dict)  # verified access tokens (by their text)
    _users: dict[str, tuple[float, dict[str, Any] | None]] = field(default_factory=dict)
    _roles: tuple[float, dict[str, tuple[Permission, ...]]] | None = None
    _families: dict[str, tuple[float, bool]] = field(default_factory=dict)
    _inflight: dict[str, asyncio.Future[Principal]] = field(default_factory=dict)
    _owners: OrderedDict[tuple[str, str], Owner] = field(default_factory=OrderedDict)
    _used: dict[str, datetime] = field(default_factory=dict)
    owner_lookups: dict[str, OwnerLookup] = field(default_factory=dict)

    # --- authentication ---
    async def authenticate(self, presented: Presented) -> Principal:
        if not self.enabled:
            return LOCAL
        for text, method in (
            (presented.api_key, "api_key"),
            (presented.bearer, "bearer"),
            (presented.cookie, "cookie"),
            (presented.query_token, "query"),
        ):
            if text:
                return await self._verify(text.strip(), method)
        raise AuthenticationError(
            "authentication required: send an API key (X-API-Key or Authorization: Bearer), an access token, "
            "or log in (POST /auth/login)"
        )

    async def _verify(self, text: str, method: str) -> Principal:
        if looks_like_jwt(text):
            return await self._from_access_token(text, method)
        key = creds.parse_key(text)
        if key is None or key.prefix == creds.REFRESH:
            raise AuthenticationError("unknown credential")
        digest = creds.sha256(text)
        now = self.clock.monotonic()
        cached = self._keys.get(digest)
        if cached is not None and cached.until > now:
            self._used[key.id] = self.clock.now()
            if cached.principal.agent_id is not None:
                await self._check_runs_for(cached.principal.agent_id)
            return cached.principal
        pending = self._inflight.get(digest)
        if pending is not None:  # another request is verifying this very key: share its answer
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            principal = await self._from_key(key, method)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        else:
            future.set_result(principal)
            self._keys[digest] = _Cached(principal, now + KEY_CACHE_SECONDS)
            self._used[key.id] = self.clock.now()
            return principal
        finally:
            self._inflight.pop(digest, None)

    async def _from_key(self, key: creds.KeyText, method: str) -> Principal:
        row = await self.store.get_api_key(key.id)
        ok = row is not None and await asyncio.to_thread(creds.verify_secret, key, row["key_hash"])
        if not ok or row is None:
            raise AuthenticationError("unknown credential")
        if row["revoked_at"] is not None:
            raise AuthenticationError("this credential was revoked")
        if row["expires_at"] is not None and row["expires_at"] <= self.clock.now():
            raise AuthenticationError("this credential has expired")
        if row["kind"] == "agent":
            await self._check_runs_for(row["agent_id"])
            grants = parse_all([*BUILTIN_ROLES["agent"], *(row["grants"] or [])])
            return Principal(
                id=f"agent:{row['agent_id']}", name=row["agent_id"], kind="agent", roles=("agent",), grants=grants,
                method=method, credential_id=row["id"], agent_id=row["agent_id"],
                team=None,
            )  # fmt: skip
        return await self._user_principal(row["user_name"], method, credential_id=row["id"])

    async def _check_runs_for(self, agent_id: str) -> None:
        """An agent's credential speaks for the person who started it (directly, or through a parent agent): when
        that person is disabled or removed, the credential stops working too."""
        owner = await self.owner_of("agent", agent_id)
        person = next((p for p in (*owner.also, owner.id) if p and p.startswith("user:")), None)
        if person is not None:
            user = await self._user(person.removeprefix("user:"))
            if user is None or user["disabled"]:
                raise AuthenticationError("the user this agent runs for is disabled or removed")

    async def _from_access_token(self, token: str, method: str) -> Principal:
        now = self.clock.monotonic()
        cached = self._sessions.get(token)
        if cached is not None and cached.until > now and cached.principal.method == method:
            return cached.principal
        principal = await self._verify_access_token(token, method)
        # Remembered as long as the user's roles and the session's state are (a logout here forgets it at once).
        self._sessions[token] = _Cached(principal, now + USER_CACHE_SECONDS)
        if len(self._sessions) > _OWNER_CACHE_MAX:
            self._sessions.clear()
        return principal

    async def _verify_access_token(self, token: str, method: str) -> Principal:
        claims = self.signer.verify(token)
        if claims is None:
            raise AuthenticationError("invalid or expired access token; log in again or use /auth/refresh")
        if await self._family_revoked(str(claims["fam"])):
            raise AuthenticationError("this session was logged out")
        name = str(claims["sub"]).removeprefix("user:")
        return await self._user_principal(name, method, credential_id=str(claims["fam"]))

    async def _user_principal(self, name: str, method: str, *, credential_id: str | None) -> Principal:
        user = await self._user(name)
        if user is None or user["disabled"]:
            raise AuthenticationError("this user does not exist or is disabled")
        grants = await self.grants_of(user["roles"])
        return Principal(
            id=f"user:{name}", name=name, kind="user", roles=tuple(user["roles"]), grants=grants,
            team=user["team"], method=method, credential_id=credential_id,
        )  # fmt: skip

    async def _user(self, name: str) -> dict[str, Any] | None:
        now = self.clock.monotonic()
        hit = self._users.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        user = await self.store.get_user(name)
        self._users[name] = (now + USER_CACHE_SECONDS, user)
        return user

    async def _family_revoked(self, family: str) -> bool:
        now = self.clock.monotonic()
        hit = self._families.get(family)
        if hit is not None and hit[0] > now:
            return hit[1]
        revoked = bool(await self.store.revoked_families([family]))
        self._families[family] = (now + USER_CACHE_SECONDS, revoked)
        return revoked

    async def grants_of(self, role_names: list[str] | tuple[str, ...]) -> tuple[Permission, ...]:
        custom = await self._custom_roles()
        out: list[Permission] = []
        for name in role_names:
            if name in BUILTIN_ROLES and name != "agent":
                out.extend(parse_all(BUILTIN_ROLES[name]))
            elif name in custom:
                out.extend(custom[name])
        return tuple(out)

    async def _custom_roles(self) -> dict[str, tuple[Permission, ...]]:
        now = self.clock.monotonic()
        if self._roles is not None and self._roles[0] > now:
            return self._roles[1]
        roles = {r["name"]: parse_all(r["permissions"]) for r in await self.store.list_roles()}
        self._roles = (now + USER_CACHE_SECONDS, roles)
        return roles

    def forget(self, *, user: str | None = None, roles: bool = False, everything: bool = False) -> None:
        """Drop what this server remembers after a change made here (the other servers expire theirs)."""
        if everything or user is not None or roles:
            self._keys.clear()  # keys are cached by their text; which belong to the user is not known cheaply
            self._sessions.clear()
        if user is not None:
            self._users.pop(user, None)
        if roles or everything:
            self._roles = None
            self._users.clear()
        if everything:
            self._families.clear()

    async def flush_last_used(self) -> None:
        """Write the keys' last-used times gathered since the last flush (one write for many requests)."""
        used, self._used = self._used, {}
        if used:
            await self.store.touch_api_keys(used)

    # --- sessions ---
    async def login(self, name: str, password: str) -> Tokens:
        user = await self.store.get_user(name)
        ok = await asyncio.to_thread(creds.verify_password, user["password_hash"] if user else None, password)
        if not ok or user is None or user["disabled"]:
            raise AuthenticationError("wrong user name or password")
        return await self.open_session(name)

    async def open_session(self, name: str) -> Tokens:
        """New tokens for ``name`` (after a login, by password or single sign-on), starting a refresh family."""
        now = self.clock.now()
        family = secrets.token_hex(8)
        refresh = creds.new_key(creds.REFRESH)
        await self.store.add_refresh_token(self._refresh_row(refresh, family, name, now))
        return await self._tokens(name, family, refresh, now)

    def _refresh_row(self, refresh: creds.KeyText, family: str, name: str, now: datetime) -> dict[str, Any]:
        return {
            "id": refresh.id, "family": family, "user_name": name, "token_hash": creds.hash_secret(refresh),
            "created_at": now, "expires_at": now + timedelta(seconds=self.refresh_ttl), "used_at": None,
            "revoked_at": None,
        }  # fmt: skip

    async def _tokens(self, name: str, family: str, refresh: creds.KeyText, now: datetime) -> Tokens:
        access, access_expires = self.signer.issue(f"user:{name}", family, now, self.access_ttl)
        principal = await self._user_principal(name, "bearer", credential_id=family)
        return Tokens(access, access_expires, refresh.text, now + timedelta(seconds=self.refresh_ttl), principal)

    async def refresh(self, token: str) -> Tokens:
        """Trade a refresh token for new tokens. A token used twice revokes its family (a stolen copy)."""
        key = creds.parse_key(token)
        if key is None or key.prefix != creds.REFRESH:
            raise AuthenticationError("not a refresh token")
        now = self.clock.now()
        row = await self.store.get_refresh_token(key.id)
        if row is None or not creds.verify_secret(key, row["token_hash"]):
            raise AuthenticationError("unknown refresh token")
        if row["expires_at"] <= now:
            raise AuthenticationError("this refresh token has expired; log in again")
        user = await self.store.get_user(row["user_name"])
        if user is None or user["disabled"]:
            raise AuthenticationError("this user does not exist or is disabled")
        nxt = creds.new_key(creds.REFRESH)
        # Spending the old token and storing its replacement is one transaction: of two racing uses, one wins and
        # the other finds the token spent, which revokes the family.
        spent = await self.store.use_refresh_token(
            key.id, now, self._refresh_row(nxt, row["family"], row["user_name"], now)
        )
        if spent is None or spent["used_at"] is not None or spent["revoked_at"] is not None:
            self._families[row["family"]] = (self.clock.monotonic() + USER_CACHE_SECONDS, True)
            self._sessions = {t: c for t, c in self._sessions.items() if c.principal.credential_id != row["family"]}
            raise AuthenticationError("this refresh token was already used or revoked; its session is now closed")
        return await self._tokens(row["user_name"], row["family"], nxt, now)

    async def logout(self, family: str) -> None:
        await self.store.revoke_token_family(family, self.clock.now())
        self._families[family] = (self.clock.monotonic() + USER_CACHE_SECONDS, True)
        self._sessions = {t: c for t, c in self._sessions.items() if c.principal.credential_id != family}

    # --- agent credentials ---
    async def issue_agent_credential(self, agent_id: str, *, allow_spawn: bool, ttl: float | None = None) -> str:
        now = self.clock.now()
        key = creds.new_key(creds.AGENT_KEY)
        await self.store.create_api_key(
            {
                "id": key.id, "kind": "agent", "user_name": None, "agent_id": agent_id, "name": None,
                "prefix": key.shown, "key_hash": creds.hash_secret(key),
                "grants": [AGENT_SPAWN_GRANT] if allow_spawn else [], "created_at": now,
                "expires_at": now + timedelta(seconds=ttl) if ttl else None, "revoked_at": None,
                "last_used_at": None,
            }
        )  # fmt: skip
        return key.text

    async def revoke_agent_credentials(self, agent_id: str) -> None:
        if await self.store.revoke_api_keys(self.clock.now(), agent_id=agent_id):
            self._keys = {d: c for d, c in self._keys.items() if c.principal.agent_id != agent_id}

    async def revoke_agent_credential(self, text: str) -> None:
        """Revoke one run's credential (by the text ``issue_agent_credential`` returned), leaving any other of the
        agent live: a launch that failed takes back its own, never a newer launch's."""
        key = creds.parse_key(text)
        if key is not None and await self.store.revoke_api_keys(self.clock.now(), key_id=key.id):
            self._keys.pop(creds.sha256(text), None)  # cached by the digest of its text

    # --- ownership and visibility ---
    async def owner_of(self, kind: str, resource_id: str) -> Owner:
        """Whose resource this is (``NOBODY`` when it does not exist: only ``all`` reaches it, so a caller without
        it gets 403 rather than learning whether the id exists)."""
        owner = self._owners.get((kind, resource_id))
        if owner is None:
            lookup = self.owner_lookups.get(kind)
            if lookup is None:
                return NOBODY
            try:
                owner = await lookup(resource_id)
            except NotFoundError:
                return NOBODY
            # Who owns it never changes, so that is remembered; their team can, so it is looked up each time.
            self._owners[(kind, resource_id)] = owner
            if len(self._owners) > _OWNER_CACHE_MAX:
                self._owners.popitem(last=False)
        person = next((p for p in (owner.id, *owner.also) if p and p.startswith("user:")), None)
        return Owner(owner.id, await self.team_of(person), owner.also)

    async def team_of(self, principal_id: str | None) -> str | None:
        if principal_id is None or not principal_id.startswith("user:"):
            return None
        user = await self._user(principal_id.removeprefix("user:"))
        return user["team"] if user else None

    async def event_owner(self, event: Event) -> Owner:
        md = event.metadata
        if md.agent_id:
            return await self.owner_of("agent", md.agent_id)
        if md.team_id:
            return await self.owner_of("team", md.team_id)
        if md.workflow_id:
            return await self.owner_of("workflow", md.workflow_id)
        source = event.source  # published by a principal: "user:alice" (as one component, or split in two)
        principal_id = source.component if ":" in source.component else f"{source.component}:{source.instance}"
        if principal_id.startswith(("user:", "agent:")) and not principal_id.endswith(":None"):
            return Owner(principal_id, await self.team_of(principal_id))
        return NOBODY

    async def can_read_event(self, principal: Principal, event: Event) -> bool:
        if principal.scope_of("event", "read") == "all":
            return True
        if principal.scope_of("event", "read") is None:
            return False
        return principal.may("event", "read", await self.event_owner(event))

    async def principal_of(self, principal_id: str) -> Principal | None:
        """The principal behind an id, with its current roles (webhooks deliver as their owner)."""
        kind, _, name = principal_id.partition(":")
        try:
            if kind == "user":
                return await self._user_principal(name, "stored", credential_id=None)
            if kind == "agent":
                rows = await self.store.list_api_keys(kind="agent")
                row = next((r for r in rows if r["agent_id"] == name), None)
                if row is None:
                    return None
                grants = parse_all([*BUILTIN_ROLES["agent"], *(row["grants"] or [])])
                return Principal(id=principal_id, name=name, kind="agent", roles=("agent",), grants=grants,
                                 agent_id=name, method="stored")  # fmt: skip
        except AuthenticationError:
            return None
        return None
