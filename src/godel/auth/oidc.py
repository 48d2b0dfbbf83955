"""Single sign-on with OpenID Connect (docs/sso.md): the authorization-code flow with PKCE, ``state`` and ``nonce``.

``begin`` starts one login attempt: a fresh ``state``, ``nonce`` and PKCE verifier, and the provider's authorization
URL (from ``{issuer}/.well-known/openid-configuration``). The attempt's secrets are not kept on the server: they
travel in the *flow cookie*, encrypted and authenticated (JWE ``dir`` + A256GCM) under a key derived with HKDF from
the server's token-signing key, so any server sharing that key (as the servers of one database must) can finish an
attempt another began. The route sets it HttpOnly, ``SameSite=Lax`` (the provider's redirect back is a cross-site
navigation, which Lax lets through and Strict would not), on ``/auth/oidc`` only, for ``FLOW_SECONDS``.

``finish`` takes the callback's query and that cookie, and in this order: the cookie opens and has not expired; its
``state`` is the one in the query; this attempt was not finished before (remembered on this server until the
cookie's expiry; the provider's single-use codes refuse a replay to another server); the code is exchanged at the
token endpoint with the PKCE verifier (and the client secret, when there is one); the ID token's signature is checked
against the provider's JWKS (fetched again once when it names an unknown key: rotation), then its ``iss``, ``aud``,
``azp``, ``exp``, ``iat``, ``nonce`` and ``at_hash``; claims it lacks are taken from userinfo (whose ``sub`` must be
the same). The user is the one whose ``oidc_subject`` is ``issuer|sub``, created at the first login, and its roles
(and team, with ``team_claim``) are recomputed from the claims at every login.

A new user is named after ``preferred_username``, else ``email``, else ``sub``; a name another user already holds
gets a suffix from the subject's hash instead, so a provider's "admin" never becomes Godel's ``admin``.

Errors: a missing, forged or expired cookie, a wrong ``state``, an attempt finished twice, an error from the
provider, a code it refuses, an ID token the checks refuse → ``AuthenticationError`` (401); nothing maps to a role
and there is no default role → ``PermissionDeniedError`` (403); the provider unreachable or answering nonsense →
``SsoProviderError`` (502).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from authlib.common.security import generate_token
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc import jwe, jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet, OctKey

from godel.auth.accounts import Accounts
from godel.auth.tokens import load_or_create_key
from godel.core.ports import Clock
from godel.errors import (
    AuthenticationError,
    ConflictError,
    FieldError,
    GodelError,
    PermissionDeniedError,
    SsoProviderError,
    ValidationError,
)
from godel.settings import Settings

FLOW_COOKIE = "godel_oidc"
FLOW_SECONDS = 600  # a login attempt must come back from the provider within ten minutes
METADATA_SECONDS = 3600.0  # discovery document and JWKS are read again after an hour (or on an unknown key id)
LEEWAY_SECONDS = 60  # clock skew allowed between the provider and this server
HTTP_TIMEOUT = 10.0
_FINISHED_MAX = 10_000
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._@-]+")


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    redirect_url: str
    client_secret_env: str | None = None
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    role_claim: str = "groups"
    role_map: Mapping[str, str] = field(default_factory=dict)
    default_role: str | None = None
    team_claim: str | None = None


@dataclass(frozen=True)
class Started:
    """Where to send the browser, and the flow cookie to set on that answer."""

    url: str
    cookie: str
    max_age: int = FLOW_SECONDS


@dataclass(frozen=True)
class SignedIn:
    user: str  # the Godel user name
    next: str  # the path of this server to go to
    roles: list[str]
    created: bool  # first login: the user was made now


def safe_next(value: str | None) -> str:
    """``next`` when it is a path of this server (``/agents?x=1``), ``/`` when absent; anything that could lead a
    browser elsewhere (``//evil``, ``/\\evil``, ``https://…``, control characters) is refused."""
    if not value:
        return "/"
    parts = urlsplit(value)
    if (
        len(value) > 2000
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or parts.scheme
        or parts.netloc
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    ):
        raise ValidationError("next must be a path of this server", [FieldError("next", "a path starting with /")])
    return value


def claim_at(claims: Mapping[str, Any], name: str) -> Any:
    """``claims[name]``, or for a dotted name absent as such the nested value (``realm_access.roles``)."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


class OidcLogin:
    def __init__(
        self, config: OidcConfig, accounts: Accounts, key: bytes, *, clock: Clock | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> None:  # fmt: skip
        self.config = config
        self.accounts = accounts
        self.clock: Clock = clock or accounts.auth.clock
        self._environ = environ
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"godel oidc flow cookie").derive(key)
        self._flow_key = OctKey.import_key(derived)
        self._metadata: tuple[float, dict[str, Any]] | None = None
        self._jwks: tuple[float, KeySet] | None = None
        self._lock = asyncio.Lock()
        self._finished: dict[str, float] = {}  # state → monotonic time until which it is remembered

    @classmethod
    def from_settings(cls, settings: Settings, accounts: Accounts) -> OidcLogin | None:
        """The single sign-on of these settings, or None when ``oidc_issuer`` is not set."""
        if not settings.oidc_issuer:
            return None
        if not settings.oidc_client_id:
            raise ValueError("oidc_issuer is set but oidc_client_id is not: set both, or neither (docs/sso.md)")
        config = OidcConfig(
            issuer=settings.oidc_issuer,
            client_id=settings.oidc_client_id,
            redirect_url=settings.oidc_redirect_url or settings.url.rstrip("/") + "/auth/oidc/callback",
            client_secret_env=settings.oidc_client_secret_env,
            scopes=tuple(dict.fromkeys(["openid", *settings.oidc_scopes])),
            role_claim=settings.oidc_role_claim,
            role_map=dict(settings.oidc_role_map),
            default_role=settings.oidc_default_role,
            team_claim=settings.oidc_team_claim,
        )
        return cls(config, accounts, load_or_create_key(settings.jwt_secret_file or settings.home / "jwt.key"))

    # --- the flow ---
    async def begin(self, next_path: str | None = None) -> Started:
        target = safe_next(next_path)
        self._client_secret()  # a missing secret fails here, before the user is sent to the provider
        metadata = await self.metadata()
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        url = prepare_grant_uri(
            metadata["authorization_endpoint"], self.config.client_id, "code",
            redirect_uri=self.config.redirect_url, scope=" ".join(self.config.scopes), state=state, nonce=nonce,
            code_challenge=create_s256_code_challenge(verifier), code_challenge_method="S256",
        )  # fmt: skip
        expires = int(self.clock.now().timestamp()) + FLOW_SECONDS
        flow = {"state": state, "nonce": nonce, "verifier": verifier, "next": target, "exp": expires}
        cookie = jwe.encrypt_compact({"alg": "dir", "enc": "A256GCM"}, orjson.dumps(flow), self._flow_key)
        return Started(url, cookie)

    async def finish(self, cookie: str | None, query: Mapping[str, str]) -> SignedIn:
        flow = self._open_flow(cookie)
        state = query.get("state") or ""
        if not hmac.compare_digest(state.encode(), str(flow["state"]).encode()):
            raise AuthenticationError("this sign-on answer does not belong to the login started in this browser")
        self._remember_finished(state, int(flow["exp"]))
        metadata = await self.metadata()
        if query.get("iss") is not None and query["iss"] != metadata["issuer"]:  # RFC 9207: a mixed-up provider
            raise AuthenticationError("this sign-on answer comes from another issuer")
        if query.get("error"):
            detail = f"{query['error']}: {query.get('error_description', '')}".rstrip(": ")
            raise AuthenticationError(f"the identity provider refused the login ({detail})")
        code = query.get("code")
        if not code:
            raise ValidationError("the callback has no code", [FieldError("code", "required")])
        tokens = await self._exchange(metadata, code, str(flow["verifier"]))
        access_token = tokens.get("access_token")
        claims = await self.verify_id_token(
            str(tokens["id_token"]), nonce=str(flow["nonce"]), access_token=access_token
        )
        if access_token and self._missing(claims) and metadata.get("userinfo_endpoint"):
            claims = {**await self._userinfo(metadata["userinfo_endpoint"], access_token, claims["sub"]), **claims}
        user, roles, created = await self._provision(f"{metadata['issuer']}|{claims['sub']}", claims)
        return SignedIn(user, str(flow["next"]), roles, created)

    def _open_flow(self, cookie: str | None) -> dict[str, Any]:
        if not cookie:
            raise AuthenticationError("no sign-on in progress in this browser (or it took too long): start again")
        try:
            flow: dict[str, Any] = orjson.loads(jwe.decrypt_compact(cookie, self._flow_key).plaintext or b"")
        except (JoseError, ValueError) as exc:
            raise AuthenticationError("the sign-on cookie is not one this server made: start again") from exc
        if int(flow.get("exp", 0)) <= self.clock.now().timestamp():
            raise AuthenticationError("this sign-on took too long: start again")
        return flow

    def _remember_finished(self, state: str, expires: int) -> None:
        now = self.clock.monotonic()
        if len(self._finished) >= _FINISHED_MAX:
            self._finished = {s: until for s, until in self._finished.items() if until > now}
        if self._finished.get(state, 0.0) > now:
            raise AuthenticationError("this sign-on answer was already used: start again")
        self._finished[state] = now + max(0.0, expires - self.clock.now().timestamp()) + LEEWAY_SECONDS

    # --- talking to the provider ---
    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (cached ``METADATA_SECONDS``), checked to be the configured issuer's."""
        cached = self._metadata
        if cached is not None and cached[0] > self.clock.monotonic():
            return cached[1]
        async with self._lock:
            if self._metadata is not None and self._metadata[0] > self.clock.monotonic():
                return self._metadata[1]
            url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            doc = await self._get_json(url)
            if doc.get("issuer") != self.config.issuer:
                raise SsoProviderError(
                    f"{url} names issuer {doc.get('issuer')!r}, not the configured {self.config.issuer!r}"
                )
            missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not doc.get(k)]
            if missing:
                raise SsoProviderError(f"{url} has no {', '.join(missing)}")
            self._metadata = (self.clock.monotonic() + METADATA_SECONDS, doc)
            return doc

    async def _keys(self, *, force: bool = False) -> KeySet:
        cached = self._jwks
        if cached is not None and cached[0] > self.clock.monotonic() and not force:
            return cached[1]
        doc = await self._get_json((await self.metadata())["jwks_uri"])
        try:
            keys = KeySet.import_key_set(doc)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise SsoProviderError(f"the provider's JWKS cannot be read: {exc}") from exc
        self._jwks = (self.clock.monotonic() + METADATA_SECONDS, keys)
        return keys

    async def _get_json(self, url: str, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
                response = await http.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise SsoProviderError(f"the identity provider cannot be reached ({url}): {exc!r}") from exc
        if response.status_code == 401:
            raise AuthenticationError(f"the identity provider refused the access token at {url}")
        return _json_object(response, url)

    def _client_secret(self) -> str | None:
        name = self.config.client_secret_env
        if name is None:
            return None
        secret = self._environ.get(name)
        if not secret:
            raise GodelError(f"single sign-on: the client secret's environment variable {name} is not set here")
        return secret

    async def _exchange(self, metadata: Mapping[str, Any], code: str, verifier: str) -> dict[str, Any]:
        secret = self._client_secret()
        supported = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        method = "none" if secret is None else (
            "client_secret_post" if "client_secret_basic" not in supported and "client_secret_post" in supported
            else "client_secret_basic"
        )  # fmt: skip
        body = prepare_token_request(
            "authorization_code", code=code, redirect_uri=self.config.redirect_url, code_verifier=verifier
        )
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        url, headers, body = ClientAuth(self.config.client_id, secret, method).prepare(
            "POST", metadata["token_endpoint"], headers, body
        )
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
                response = await http.post(url, headers=headers, content=body)
        except httpx.HTTPError as exc:
            raise SsoProviderError(f"the identity provider's token endpoint cannot be reached: {exc!r}") from exc
        if response.status_code in (400, 401):  # RFC 6749 §5.2: invalid_grant (a spent or foreign code), …
            try:
                error = response.json()
            except ValueError:
                error = {}
            detail = f"{error.get('error', response.status_code)}: {error.get('error_description', '')}".rstrip(": ")
            raise AuthenticationError(f"the identity provider refused the authorization code ({detail})")
        tokens = _json_object(response, "the token endpoint")
        if not isinstance(tokens.get("id_token"), str):
            raise SsoProviderError("the token endpoint answered without an ID token (is 'openid' among the scopes?)")
        return tokens

    async def verify_id_token(self, id_token: str, *, nonce: str, access_token: str | None = None) -> dict[str, Any]:
        """The claims of ``id_token`` once its signature (the provider's JWKS) and ``iss``, ``aud``, ``azp``,
        ``exp``, ``iat``, ``nonce`` and ``at_hash`` are checked; ``AuthenticationError`` otherwise."""
        metadata = await self.metadata()
        # Asymmetric algorithms only: the provider's published keys are what is checked ("none" and HS* are not).
        algorithms = [
            a for a in metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
            if a != "none" and not a.startswith("HS")
        ]  # fmt: skip
        try:
            try:
                token = jwt.decode(id_token, await self._keys(), algorithms=algorithms)
            except InvalidKeyIdError:  # signed with a key published since we last looked: the provider rotated
                token = jwt.decode(id_token, await self._keys(force=True), algorithms=algorithms)
            claims = CodeIDToken(
                token.claims, token.header,
                {"iss": {"essential": True, "value": metadata["issuer"]},
                 "aud": {"essential": True, "value": self.config.client_id}},
                {"nonce": nonce, "client_id": self.config.client_id, "access_token": access_token},
            )  # fmt: skip
            claims.validate(now=int(self.clock.now().timestamp()), leeway=LEEWAY_SECONDS)
        except (JoseError, ValueError) as exc:
            raise AuthenticationError(f"the ID token is not valid for this server ({exc})") from exc
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise AuthenticationError("the ID token has no subject")
        return dict(claims)

    def _missing(self, claims: Mapping[str, Any]) -> bool:
        wanted = [self.config.role_claim, *([self.config.team_claim] if self.config.team_claim else [])]
        return any(claim_at(claims, c) is None for c in wanted) or not (
            claims.get("preferred_username") or claims.get("email")
        )

    async def _userinfo(self, url: str, access_token: str, subject: str) -> dict[str, Any]:
        info = await self._get_json(url, {"Authorization": f"Bearer {access_token}", "Accept": "application/json"})
        if info.get("sub") != subject:  # OIDC Core §5.3.2: else the answer may be about someone else
            raise AuthenticationError("the provider's userinfo is about another subject than the ID token")
        return info

    # --- the Godel user ---
    def roles_from(self, claims: Mapping[str, Any]) -> list[str]:
        """The roles the claims map to (``default_role`` when none); ``PermissionDeniedError`` when there are none."""
        values = claim_at(claims, self.config.role_claim)
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list):
            values = []
        roles = [self.config.role_map[v] for v in values if isinstance(v, str) and v in self.config.role_map]
        if not roles and self.config.default_role:
            roles = [self.config.default_role]
        if not roles:
            raise PermissionDeniedError(
                f"single sign-on: none of your {self.config.role_claim!r} values gives a role on this server",
                details={"claim": self.config.role_claim, "values": [v for v in values if isinstance(v, str)]},
            )
        return list(dict.fromkeys(roles))

    def _team_from(self, claims: Mapping[str, Any]) -> str | None:
        value = claim_at(claims, self.config.team_claim) if self.config.team_claim else None
        if isinstance(value, list):
            value = next((v for v in value if isinstance(v, str)), None)
        return value[:255] if isinstance(value, str) and value else None

    async def _provision(self, subject: str, claims: Mapping[str, Any]) -> tuple[str, list[str], bool]:
        roles = self.roles_from(claims)
        store = self.accounts.store
        user = await store.user_by_subject(subject)
        if user is None:
            name = await self._free_name(subject, claims)
            team = self._team_from(claims)
            try:
                await self.accounts.create_user(name, roles=roles, team=team, oidc_subject=subject)
                return name, roles, True
            except ConflictError:  # a concurrent first login of the same person (or a name taken meanwhile)
                user = await store.user_by_subject(subject)
                if user is None:
                    raise
        if user["disabled"]:
            raise AuthenticationError("this user is disabled")
        changes: dict[str, Any] = {}
        if list(user["roles"]) != roles:
            changes["roles"] = roles
        if self.config.team_claim and user["team"] != self._team_from(claims):
            changes["team"] = self._team_from(claims)
        if changes:
            await self.accounts.update_user(user["name"], changes)
        return str(user["name"]), roles, False

    async def _free_name(self, subject: str, claims: Mapping[str, Any]) -> str:
        raw = next(
            (v for v in (claims.get("preferred_username"), claims.get("email"), claims.get("sub"))
             if isinstance(v, str) and v),
            "user",
        )  # fmt: skip
        base = _NAME_CHARS.sub("-", raw).strip("-._@")[:90] or "user"
        if await self.accounts.store.get_user(base) is None:
            return base
        return f"{base}-{hashlib.sha256(subject.encode()).hexdigest()[:8]}"


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise SsoProviderError(f"the identity provider answered {response.status_code} at {what}")
    try:
        doc = response.json()
    except ValueError as exc:
        raise SsoProviderError(f"the identity provider answered something other than JSON at {what}") from exc
    if not isinstance(doc, dict):
        raise SsoProviderError(f"the identity provider answered a JSON {type(doc).__name__} at {what}")
    return doc
