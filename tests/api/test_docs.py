"""``/docs`` and ``/redoc`` work on a machine without the internet: every file they load comes from this server.

Called with no credential at all, like a browser opening the page: the pages are as public as ``/openapi.json``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
import pytest

from godel.api.app import create_app
from godel.scheduler.plane import ControlPlane


class References(HTMLParser):
    """Every URL a page makes the browser fetch: ``src``/``href`` attributes, ReDoc's ``spec-url`` and the
    ``url:`` Swagger UI is started with in the inline script."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls.extend(v for k, v in attrs if k in ("src", "href", "spec-url") and v)
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.urls.extend(re.findall(r"""\burl:\s*['"]([^'"]+)['"]""", data))


@pytest.fixture
async def anonymous(plane: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(plane=plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        yield c


EXPECTED_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_doc_pages_load_only_from_this_server(anonymous: httpx.AsyncClient, page: str) -> None:
    r = await anonymous.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    parser = References()
    parser.feed(r.text)
    urls = parser.urls
    assert any(u.endswith(".js") for u in urls) and "/openapi.json" in urls, urls
    foreign = [u for u in urls if urlsplit(u).netloc or urlsplit(u).scheme]
    assert foreign == [], f"{page} loads from another host: {foreign}"
    assert "googleapis" not in r.text and "cdn." not in r.text
    for url in urls:
        asset = await anonymous.get(url)
        assert asset.status_code == 200, (url, asset.status_code)
        suffix = url[url.rfind(".") :]
        assert EXPECTED_TYPES[suffix] in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert len(asset.content) > 0


async def test_swagger_ui_bundle_is_the_real_library(anonymous: httpx.AsyncClient) -> None:
    """Not an empty placeholder: the bundle defines what the page's inline script calls."""
    js = (await anonymous.get("/docs/assets/swagger-ui-bundle.js")).text
    assert "SwaggerUIBundle" in js and len(js) > 100_000
    redoc = (await anonymous.get("/docs/assets/redoc.standalone.js")).text
    assert "Redoc" in redoc and len(redoc) > 100_000


async def test_doc_assets_refuse_paths_outside_their_folder(anonymous: httpx.AsyncClient) -> None:
    r = await anonymous.get("/docs/assets/%2e%2e/%2e%2e/__init__.py")
    assert r.status_code == 404


async def test_oauth2_redirect_page_is_served(anonymous: httpx.AsyncClient) -> None:
    r = await anonymous.get("/docs/oauth2-redirect")
    assert r.status_code == 200 and "oauth2" in r.text.lower()


async def test_doc_pages_are_not_in_the_openapi_document(anonymous: httpx.AsyncClient) -> None:
    paths = (await anonymous.get("/openapi.json")).json()["paths"]
    assert not {"/docs", "/redoc", "/docs/oauth2-redirect"} & set(paths)
