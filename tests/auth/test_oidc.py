"""Single sign-on end to end: a real OpenID provider (oidc-provider on Node), a real Godel server, and a user agent
that walks the authorization-code flow between them (docs/sso.md). No part of the provider is mocked."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from godel.api.access import COOKIE
from godel.auth.accounts import Accounts
from godel.auth.oidc import FLOW_COOKIE, OidcConfig, OidcLogin
from godel.auth.tokens import load_or_create_key
from godel.core.clock import ManualClock
from godel.errors import AuthenticationError
from tests.auth.conftest import (
    CLIENT_ID,
    OTHER_CLIENT_ID,
    OTHER_REDIRECT,
    OTHER_SECRET,
    Browser,
    Godel,
    Provider,
    oidc_settings,
)
from tests.e2e.serverproc import free_port

Start = Callable[..., Provider]


async def callback_url(browser: Browser, godel: Godel, account: str, next_path: str | None = None) -> str:
    """Start a login at Godel and walk the provider's pages; the URL the provider sends the browser back to."""
    query = f"?{urlencode({'next': next_path})}" if next_path else ""
    r = await browser.client.get(f"{godel.url}/auth/oidc/login{query}")
    assert r.status_code == 302, r.text
    return await browser.walk(r.headers["location"], godel.callback, account)


async def sign_in(browser: Browser, godel: Godel, account: str, next_path: str | None = None) -> httpx.Response:
    return await browser.client.get(await callback_url(browser, godel, account, next_path))


async def test_sso_login_maps_claims_to_roles_and_recomputes_them(
    start_provider: Start, godel_server: Any, browser: Callable[[], Browser]
) -> None:
    port = free_port()
    provider = start_provider(f"http://localhost:{port}/auth/oidc/callback")
    provider.set_claims("alice", {"preferred_username": "alice", "email": "alice@example.com",
                                  "groups": ["staff", "godel-admins"], "team": "platform"})  # fmt: skip
    async with godel_server(port, **oidc_settings(provider)) as godel:
        b = browser()
        r = await b.client.get(f"{godel.url}/auth/oidc/login", params={"next": "/agents?status=running"})
        assert r.status_code == 302
        authorize = urlsplit(r.headers["location"])
        params = parse_qs(authorize.query)
        assert f"{authorize.scheme}://{authorize.netloc}" == provider.issuer
        assert params["response_type"] == ["code"] and params["client_id"] == [CLIENT_ID]
        assert params["code_challenge_method"] == ["S256"] and params["code_challenge"][0]
        assert params["state"][0] and params["nonce"][0]
        assert params["redirect_uri"] == [godel.callback]
        flow_cookie = r.headers["set-cookie"].lower()
        assert "httponly" in flow_cookie and "samesite=lax" in flow_cookie and "path=/auth/oidc" in flow_cookie

        r = await b.client.get(await b.walk(r.headers["location"], godel.callback, "alice"))
        assert r.status_code == 303, r.text
        assert r.headers["location"] == "/agents?status=running"
        body = r.json()["data"]  # the same answer as POST /auth/login
        assert body["user"]["name"] == "alice" and body["user"]["roles"] == ["admin"]
        assert body["accessToken"] and body["refreshToken"]
        assert COOKIE in b.client.cookies and FLOW_COOKIE not in b.client.cookies

        user = await godel.plane.store.user_by_subject(f"{provider.issuer}|alice")
        assert user is not None and user["name"] == "alice"
        assert user["roles"] == ["admin"] and user["team"] == "platform" and user["password_hash"] is None

        me = await b.client.get(f"{godel.url}/auth/me")  # with the session cookie only
        assert me.status_code == 200, me.text
        assert me.json()["data"]["name"] == "alice" and me.json()["data"]["roles"] == ["admin"]
        assert me.json()["data"]["authenticatedBy"] == "cookie"

        # The provider now says alice left the admins: her next login takes the admin role away.
        provider.set_claims("alice", {"preferred_username": "alice", "groups": ["godel-devs", "godel-ops"],
                                      "team": "apps"})  # fmt: skip
        again = browser()
        r = await sign_in(again, godel, "alice", "/")
        assert r.status_code == 303 and r.headers["location"] == "/"
        user = await godel.plane.store.user_by_subject(f"{provider.issuer}|alice")
        assert user["roles"] == ["developer", "operator"] and user["team"] == "apps"
        assert [u["name"] for u in await godel.plane.store.list_users()] == ["admin", "alice"]  # no second user
        me = await again.client.get(f"{godel.url}/auth/me")
        assert me.json()["data"]["roles"] == ["developer", "operator"]
        # Her session from the first login is an admin's no more either (roles are read per request).
        me = await b.client.get(f"{godel.url}/api/v1/users")
        assert me.status_code == 403

        # And with no group that maps to a role (and no default role), no login at all.
        provider.set_claims("alice", {"preferred_username": "alice", "groups": ["staff"]})
        refused = await sign_in(browser(), godel, "alice")
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "FORBIDDEN"
        assert COOKIE not in refused.cookies


async def test_claims_from_the_id_token_and_default_role_and_no_account_takeover(
    start_provider: Start, godel_server: Any, browser: Callable[[], Browser]
) -> None:
    """With claims in the ID token itself (no userinfo needed); a provider user called "admin" does not become the
    server's administrator; a user without mapped groups gets the default role."""
    port = free_port()
    provider = start_provider(f"http://localhost:{port}/auth/oidc/callback", conform_id_token_claims=False)
    provider.set_claims("mallory", {"preferred_username": "admin", "groups": ["nobody-special"]})
    async with godel_server(port, **oidc_settings(provider, oidc_default_role="viewer")) as godel:
        r = await sign_in(browser(), godel, "mallory")
        assert r.status_code == 303, r.text
        name = r.json()["data"]["user"]["name"]
        assert name.startswith("admin-") and r.json()["data"]["user"]["roles"] == ["viewer"]
        assert (await godel.plane.store.get_user("admin"))["roles"] == ["admin"]  # the real one, untouched
        assert (await godel.plane.store.get_user("admin"))["oidc_subject"] is None


async def test_tampered_state_forged_cookie_and_replayed_callback_are_refused(
    start_provider: Start, godel_server: Any, browser: Callable[[], Browser]
) -> None:
    port = free_port()
    provider = start_provider(f"http://localhost:{port}/auth/oidc/callback")
    provider.set_claims("bob", {"preferred_username": "bob", "groups": ["godel-devs"]})
    async with godel_server(port, **oidc_settings(provider)) as godel:
        b = browser()
        url = await callback_url(b, godel, "bob")
        flow = b.client.cookies[FLOW_COOKIE]
        query = parse_qs(urlsplit(url).query)

        def with_state(state: str) -> str:
            return f"{godel.callback}?{urlencode({'code': query['code'][0], 'state': state, 'iss': provider.issuer})}"

        r = await b.client.get(with_state(query["state"][0][:-2] + "xx"))  # the attacker's own state
        assert r.status_code == 401, r.text
        async with httpx.AsyncClient() as stranger:  # another browser (no flow cookie): a login CSRF
            r = await stranger.get(url)
            assert r.status_code == 401, r.text
        forged = flow[:-4] + ("AAAA" if not flow.endswith("AAAA") else "BBBB")
        async with httpx.AsyncClient(cookies={FLOW_COOKIE: forged}) as forger:
            r = await forger.get(url)
            assert r.status_code == 401, r.text
        assert await godel.plane.store.user_by_subject(f"{provider.issuer}|bob") is None

        r = await b.client.get(url)  # the genuine answer still works after all that
        assert r.status_code == 303, r.text

        async with httpx.AsyncClient(cookies={FLOW_COOKIE: flow}) as replay:  # the same answer and cookie again
            r = await replay.get(url)
            assert r.status_code == 401 and "already used" in r.json()["error"]["message"]

        # Another server sharing the key (it does not know the answer was used): the provider's code is single-use.
        elsewhere = OidcLogin.from_settings(godel.plane.settings, Accounts(godel.plane.auth))
        assert elsewhere is not None
        with pytest.raises(AuthenticationError, match="invalid_grant"):
            await elsewhere.finish(flow, {k: v[0] for k, v in query.items()})


async def test_tokens_for_another_audience_or_nonce_or_too_old_are_refused(
    start_provider: Start, godel_server: Any, browser: Callable[[], Browser]
) -> None:
    port = free_port()
    provider = start_provider(f"http://localhost:{port}/auth/oidc/callback")
    provider.set_claims("carol", {"preferred_username": "carol", "groups": ["godel-admins"]})
    async with godel_server(port, **oidc_settings(provider)) as godel:
        # Another application of the same provider gets a real ID token for carol (audience: that application).
        sso = OidcLogin.from_settings(godel.plane.settings, Accounts(godel.plane.auth))
        assert sso is not None
        metadata = await sso.metadata()
        verifier, nonce = generate_token(64), generate_token(16)
        authorize = prepare_grant_uri(
            metadata["authorization_endpoint"], OTHER_CLIENT_ID, "code", redirect_uri=OTHER_REDIRECT,
            scope="openid", state="s", nonce=nonce, code_challenge=create_s256_code_challenge(verifier),
            code_challenge_method="S256",
        )  # fmt: skip
        b = browser()
        landed = await b.walk(authorize, OTHER_REDIRECT, "carol")
        other_code = parse_qs(urlsplit(landed).query)["code"][0]

        # Fed to Godel's callback with Godel's own valid state: the provider will not give Godel another's code.
        url = await callback_url(b, godel, "carol")
        state = parse_qs(urlsplit(url).query)["state"][0]
        r = await b.client.get(f"{godel.callback}?{urlencode({'code': other_code, 'state': state})}")
        assert r.status_code == 401 and "invalid_grant" in r.json()["error"]["message"], r.text
        assert await godel.plane.store.user_by_subject(f"{provider.issuer}|carol") is None

        # The other application redeems it, and the ID token it gets is refused by Godel's checks.
        async with httpx.AsyncClient() as http:
            answer = await http.post(
                metadata["token_endpoint"], auth=(OTHER_CLIENT_ID, OTHER_SECRET),
                data={"grant_type": "authorization_code", "code": other_code, "redirect_uri": OTHER_REDIRECT,
                      "code_verifier": verifier},
            )  # fmt: skip
        assert answer.status_code == 200, answer.text
        id_token = answer.json()["id_token"]
        with pytest.raises(AuthenticationError, match="aud"):
            await sso.verify_id_token(id_token, nonce=nonce)

        # The same token, checked as the application it was made for, passes; only with its own nonce, and only
        # while it has not expired.
        key = load_or_create_key(godel.plane.settings.home / "jwt.key")
        config = OidcConfig(issuer=provider.issuer, client_id=OTHER_CLIENT_ID, redirect_url=OTHER_REDIRECT)
        clock = ManualClock(godel.plane.clock.now())
        as_other = OidcLogin(config, Accounts(godel.plane.auth), key, clock=clock)
        claims = await as_other.verify_id_token(id_token, nonce=nonce)
        assert claims["sub"] == "carol" and claims["aud"] == OTHER_CLIENT_ID
        with pytest.raises(AuthenticationError, match="nonce"):
            await as_other.verify_id_token(id_token, nonce="another-login's-nonce")
        header, payload, signature = id_token.split(".")
        with pytest.raises(AuthenticationError, match="signature"):  # the signature of another token
            await as_other.verify_id_token(".".join([header, payload, signature[::-1]]), nonce=nonce)
        clock.advance(timedelta(hours=2).total_seconds())
        with pytest.raises(AuthenticationError, match="expired"):
            await as_other.verify_id_token(id_token, nonce=nonce)


async def test_a_login_refused_at_the_provider_is_refused_here(
    start_provider: Start, godel_server: Any, browser: Callable[[], Browser]
) -> None:
    port = free_port()
    provider = start_provider(f"http://localhost:{port}/auth/oidc/callback")
    provider.set_claims("dave", {"preferred_username": "dave", "groups": ["godel-admins"]})
    async with godel_server(port, **oidc_settings(provider)) as godel:
        b = browser()
        r = await b.client.get(f"{godel.url}/auth/oidc/login")
        url = await b.walk(r.headers["location"], godel.callback, "dave", cancel=True)
        assert parse_qs(urlsplit(url).query)["error"] == ["access_denied"]
        r = await b.client.get(url)
        assert r.status_code == 401 and "access_denied" in r.json()["error"]["message"], r.text
        assert COOKIE not in b.client.cookies
        assert await godel.plane.store.user_by_subject(f"{provider.issuer}|dave") is None


async def test_next_must_be_a_path_of_this_server(
    start_provider: Start, godel_server: Any, browser: Callable[[], Browser]
) -> None:
    port = free_port()
    provider = start_provider(f"http://localhost:{port}/auth/oidc/callback")
    async with godel_server(port, **oidc_settings(provider)) as godel:
        b = browser()
        for bad in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "evil", "/a\r\nSet-Cookie: x"):
            r = await b.client.get(f"{godel.url}/auth/oidc/login", params={"next": bad})
            assert r.status_code == 400, (bad, r.text)


async def test_without_sso_configured_the_routes_answer_404(godel_server: Any) -> None:
    async with godel_server(free_port()) as godel, httpx.AsyncClient() as http:
        for path in ("/auth/oidc/login", "/auth/oidc/callback?code=x&state=y"):
            r = await http.get(f"{godel.url}{path}")
            assert r.status_code == 404, r.text
            assert "single sign-on is not configured" in r.json()["error"]["message"]
