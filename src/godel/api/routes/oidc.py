"""``/auth/oidc/…``: single sign-on through an OpenID Connect provider (``godel.auth.oidc``, docs/sso.md).

``GET /auth/oidc/login?next=/path`` sends the browser to the provider with the flow cookie set; the provider sends it
back to ``GET /auth/oidc/callback``, which logs the user in exactly as ``POST /auth/login`` does (the same cookies,
and the same JSON in the body) and redirects to ``next`` (or ``/``). Both are public: they are how one signs in.
Without ``oidc_issuer`` they answer 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from godel.api.access import auth_of, public
from godel.api.routes.auth import _tokens_response
from godel.auth.oidc import FLOW_COOKIE, OidcLogin
from godel.errors import NotFoundError

router = APIRouter(prefix="/auth/oidc", tags=["auth"])
_FLOW_PATH = "/auth/oidc"


def sso_of(request: Request) -> OidcLogin:
    sso: OidcLogin | None = getattr(request.app.state, "oidc", None)
    if sso is None:
        raise NotFoundError(
            "single sign-on is not configured on this server (set oidc_issuer and oidc_client_id: docs/sso.md)"
        )
    return sso


@router.get("/login", dependencies=[public()], status_code=302, response_class=RedirectResponse)
async def login(request: Request, next: Annotated[str | None, Query(max_length=2000)] = None) -> Response:
    """Start a login: 302 to the provider, with the flow cookie (state, nonce, PKCE verifier, ``next``)."""
    started = await sso_of(request).begin(next)
    response = RedirectResponse(started.url, status_code=302)
    response.set_cookie(
        FLOW_COOKIE, started.cookie, max_age=started.max_age, path=_FLOW_PATH, httponly=True, samesite="lax",
        secure=bool(request.app.state.cookie_secure),
    )  # fmt: skip
    return response


@router.get("/callback", dependencies=[public()], status_code=303, response_class=RedirectResponse)
async def callback(request: Request) -> Response:
    """Finish a login: the user is signed in (cookies, and the tokens in the body) and sent to ``next``."""
    query = {
        k: v for k, v in request.query_params.items() if k in ("code", "state", "iss", "error", "error_description")
    }
    signed_in = await sso_of(request).finish(request.cookies.get(FLOW_COOKIE), query)
    request.state.audit = {"user": signed_in.user, "sso": True, "created": signed_in.created}
    tokens = await auth_of(request).open_session(signed_in.user)
    response = _tokens_response(request, tokens)
    # A 303 keeps the login's body and cookies: a browser follows it, a script may read the tokens instead. The
    # session cookie is SameSite=Strict, so a browser may leave it off the navigation that ends this cross-site
    # chain; the pages it loads then send it on their own requests.
    response.status_code = 303
    response.headers["location"] = signed_in.next
    response.delete_cookie(FLOW_COOKIE, path=_FLOW_PATH, httponly=True, samesite="lax")
    return response
