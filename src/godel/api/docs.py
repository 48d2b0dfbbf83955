"""The API's human documentation pages, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served from this server.

FastAPI's defaults load both from a CDN, so on a machine without the internet (or behind a strict proxy) the pages
are blank. The JavaScript and CSS come instead from the ``fastapi-offline`` wheel, which ships the built files of
both projects; only its ``static`` folder is used, the pages themselves are FastAPI's own generators pointed at it.

Like ``/openapi.json``, these routes say nothing the API does not already publish and are open to anyone: they
declare no permission (``tests/api/test_rbac.py`` knows them as FastAPI's own paths), and the assets are a
``StaticFiles`` mount, which carries no credentials either way.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs/assets"
SWAGGER_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"


def assets_dir() -> Path:
    """Where the installed ``fastapi-offline`` keeps ``swagger-ui-bundle.js``, ``swagger-ui.css``,
    ``redoc.standalone.js`` and ``favicon.png``."""
    return Path(str(files("fastapi_offline") / "static"))


def install(app: FastAPI) -> None:
    """Add the two pages, Swagger UI's OAuth2 redirect page, and the assets they load. The app must be built with
    ``docs_url=None, redoc_url=None`` so that FastAPI does not add its CDN-backed pages first."""
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")

    def asset(request: Request, name: str) -> str:
        # root_path keeps the links right behind a reverse proxy that serves Godel under a prefix.
        return f"{request.scope.get('root_path', '')}{ASSETS_URL}/{name}"

    def openapi_url(request: Request) -> str:
        return f"{request.scope.get('root_path', '')}{app.openapi_url}"

    @app.get(SWAGGER_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url(request),
            title=f"{app.title} API",
            oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            swagger_js_url=asset(request, "swagger-ui-bundle.js"),
            swagger_css_url=asset(request, "swagger-ui.css"),
            swagger_favicon_url=asset(request, "favicon.png"),
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url(request),
            title=f"{app.title} API",
            redoc_js_url=asset(request, "redoc.standalone.js"),
            redoc_favicon_url=asset(request, "favicon.png"),
            with_google_fonts=False,  # a stylesheet from fonts.googleapis.com: the page falls back to system fonts
        )
