"""A real OpenID Connect provider (panva's ``oidc-provider`` on Node, ``oidc_provider/``) and a real Godel server
(uvicorn in the test's loop) for the single sign-on tests, and a browser-less user agent that walks between them.

The provider's npm packages are installed once per machine (``npm ci``, pinned by ``package-lock.json``) into
``${XDG_CACHE_HOME:-~/.cache}/godel/oidc-provider/<hash of package.json + lock>``, never into the repository; a
machine without node/npm skips these tests with the reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import select
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
import uvicorn

from godel.api.app import create_app
from godel.api.routes import oidc as oidc_routes
from godel.auth.oidc import OidcLogin
from godel.scheduler.plane import ControlPlane
from godel.settings import Settings
from tests.e2e.serverproc import free_port

PROVIDER_SRC = Path(__file__).parent / "oidc_provider"
CLIENT_ID = "godel"
CLIENT_SECRET = "godel-test-client-secret-0123456789"
OTHER_CLIENT_ID = "other-app"
OTHER_SECRET = "other-app-client-secret-0123456789"
OTHER_REDIRECT = "http://127.0.0.1:9/other/callback"  # never contacted: the test reads the code off the redirect
SECRET_ENV = "GODEL_TEST_OIDC_CLIENT_SECRET"


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "godel" / "oidc-provider"


@pytest.fixture(scope="session")
def provider_script() -> Path:
    """``provider.mjs`` beside its installed ``node_modules`` (installed here on first use, then reused)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed to run the OpenID provider of these tests (oidc-provider)")
    manifest = (PROVIDER_SRC / "package.json").read_bytes() + (PROVIDER_SRC / "package-lock.json").read_bytes()
    target = _cache_root() / hashlib.sha256(manifest).hexdigest()[:16]
    if not (target / "node_modules" / "oidc-provider" / "package.json").is_file():
        # Install beside the target and rename it into place: concurrent test sessions never see half an install.
        staging = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex[:8]}")
        staging.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(PROVIDER_SRC / name, staging / name)
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=staging, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            pytest.fail(f"npm ci of the test OpenID provider failed:\n{done.stdout}\n{done.stderr}")
        try:
            staging.rename(target)
        except OSError:  # another session installed it meanwhile
            shutil.rmtree(staging, ignore_errors=True)
    source = (PROVIDER_SRC / "provider.mjs").read_bytes()
    script = target / f"provider-{hashlib.sha256(source).hexdigest()[:12]}.mjs"
    if not script.is_file():
        tmp = script.with_name(f".{script.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(source)
        tmp.rename(script)
    return script


@dataclass
class Provider:
    issuer: str
    claims_file: Path
    process: subprocess.Popen[str]

    def set_claims(self, account: str, claims: dict[str, Any]) -> None:
        """What the provider says about ``account`` from its next login on (the file is read at each login)."""
        everyone = json.loads(self.claims_file.read_text())
        everyone[account] = claims
        tmp = self.claims_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(everyone))
        tmp.replace(self.claims_file)


@pytest.fixture
def start_provider(provider_script: Path, tmp_path: Path) -> Iterator[Callable[..., Provider]]:
    started: list[Provider] = []

    def start(redirect_uri: str, *, conform_id_token_claims: bool = True) -> Provider:
        port = free_port()
        claims_file = tmp_path / f"claims-{port}.json"
        claims_file.write_text("{}")
        clients = [
            {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uris": [redirect_uri],
             "grant_types": ["authorization_code"], "response_types": ["code"]},
            {"client_id": OTHER_CLIENT_ID, "client_secret": OTHER_SECRET, "redirect_uris": [OTHER_REDIRECT],
             "grant_types": ["authorization_code"], "response_types": ["code"]},
        ]  # fmt: skip
        config = tmp_path / f"provider-{port}.json"
        config.write_text(json.dumps({"port": port, "claimsFile": str(claims_file), "clients": clients,
                                      "conformIdTokenClaims": conform_id_token_claims}))  # fmt: skip
        process = subprocess.Popen(
            ["node", str(provider_script), str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        provider = Provider(f"http://127.0.0.1:{port}", claims_file, process)
        started.append(provider)
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 0.2)
            if ready:
                line = process.stdout.readline()
                if line.startswith("ready "):
                    assert line.split()[1] == provider.issuer
                    return provider
                if not line and process.poll() is not None:
                    break
        raise AssertionError(f"the OpenID provider did not start: {process.stderr.read() if process.stderr else ''}")

    yield start
    for p in started:
        p.process.terminate()
        try:
            p.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.process.kill()
            p.process.wait()


def sso_app(plane: ControlPlane) -> Any:
    """The server's app. Until ``create_app`` wires single sign-on itself (see the SSO report), do it here the way
    it will: ``app.state.oidc`` built from the settings, and the router."""
    app = create_app(plane=plane)
    if not hasattr(app.state, "oidc"):
        app.state.oidc = OidcLogin.from_settings(plane.settings, app.state.accounts)
        app.include_router(oidc_routes.router)
    return app


@dataclass
class Godel:
    plane: ControlPlane
    url: str  # http://localhost:PORT: another host than the provider's 127.0.0.1, so each keeps its own cookies

    @property
    def callback(self) -> str:
        return f"{self.url}/auth/oidc/callback"


@pytest.fixture
def godel_server(fast_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)

    @asynccontextmanager
    async def run(port: int, **oidc: Any) -> AsyncIterator[Godel]:
        url = f"http://localhost:{port}"
        settings = Settings(home=fast_tmp / f"home-{port}", url=url, port=port, use_gateway=False, **oidc)
        plane = ControlPlane(settings)
        await plane.start()
        server = uvicorn.Server(uvicorn.Config(sso_app(plane), host="127.0.0.1", port=port, log_level="warning",
                                               lifespan="on"))  # fmt: skip
        task = asyncio.create_task(server.serve(), name="test:godel-sso-server")
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
            await asyncio.sleep(0.01)
        try:
            yield Godel(plane, url)
        finally:
            server.should_exit = True
            await task
            await plane.stop()

    return run


def oidc_settings(provider: Provider, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "oidc_issuer": provider.issuer,
        "oidc_client_id": CLIENT_ID,
        "oidc_client_secret_env": SECRET_ENV,
        "oidc_scopes": ["openid", "profile", "email", "groups", "team"],
        "oidc_role_claim": "groups",
        "oidc_role_map": {"godel-admins": "admin", "godel-devs": "developer", "godel-ops": "operator"},
        "oidc_team_claim": "team",
    }
    settings.update(overrides)
    return settings


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        elif tag == "form":
            self.forms.append({"action": a.get("action") or "", "method": (a.get("method") or "get").lower(),
                               "fields": {}})  # fmt: skip
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value") or ""


@dataclass
class Browser:
    """A user agent without JavaScript: follows redirects, fills the provider's login form with ``account`` (any
    password) and accepts its consent form (or, with ``cancel``, clicks the login page's Cancel link), and stops at
    the first URL under ``stop_at`` without requesting it."""

    client: httpx.AsyncClient
    pages: list[str] = field(default_factory=list)

    async def walk(self, url: str, stop_at: str, account: str, *, cancel: bool = False) -> str:
        method, data = "GET", None
        for _ in range(30):
            if url.startswith(stop_at):
                return url
            self.pages.append(url)
            r = await self.client.request(method, url, data=data)
            method, data = "GET", None
            if r.is_redirect:
                url = urljoin(url, r.headers["location"])
                continue
            assert r.status_code == 200, f"{url}: {r.status_code} {r.text[:500]}"
            parser = _Forms()
            parser.feed(r.text)
            abort = next((link for link in parser.links if link.endswith("/abort")), None)
            if cancel and abort is not None:
                url = urljoin(url, abort)
                continue
            form = next((f for f in parser.forms if f["method"] == "post"), None)
            assert form is not None, f"no form on {url}: {r.text[:500]}"
            fields = dict(form["fields"])
            if fields.get("prompt") == "login":
                fields.update(login=account, password="any password")
            method, data, url = "POST", fields, urljoin(url, form["action"])
        raise AssertionError(f"too many steps: {self.pages[-5:]}")


@pytest.fixture
async def browser() -> AsyncIterator[Callable[[], Browser]]:
    clients: list[httpx.AsyncClient] = []

    def make() -> Browser:
        client = httpx.AsyncClient(follow_redirects=False, timeout=15, trust_env=False)
        clients.append(client)
        return Browser(client)

    yield make
    for c in clients:
        await c.aclose()
