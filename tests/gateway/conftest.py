"""A real Godel API (uvicorn, in the test's event loop) with its gateway in front of a scripted model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from godel.api.app import create_app
from godel.scheduler.plane import ControlPlane
from godel.settings import Settings
from godel.testing import ScriptedModel
from tests.conftest import local_admin_headers
from tests.e2e.serverproc import free_port

UPSTREAM_KEY = "sk-upstream-0123456789-secret"
MODEL = "scripted-model"


@dataclass
class Stack:
    plane: ControlPlane
    model: ScriptedModel
    url: str  # the Godel server

    @property
    def headers(self) -> dict[str, str]:
        """The first administrator's key, as ``godel serve`` wrote it to ``$GODEL_HOME/credentials``."""
        return local_admin_headers(self.plane.settings.home)

    @property
    def openai_base(self) -> str:
        return f"{self.url}/proxy/v1"

    @property
    def anthropic_base(self) -> str:
        return f"{self.url}/proxy"

    def gemini_url(self, method: str, model: str = MODEL) -> str:
        return f"{self.url}/proxy/v1beta/models/{model}:{method}"

    async def key(self, scope: str = "user", scope_id: str = "alice", **kw: Any) -> str:
        text, _ = await self.plane.gateway.issue(scope, scope_id, **kw)
        return text

    async def records(self) -> list[Any]:
        await self.plane.gateway.settle()
        return await self.plane.store.usage_records()


@pytest.fixture
def stack(fast_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    monkeypatch.setenv("SCRIPTED_UPSTREAM_KEY", UPSTREAM_KEY)

    @asynccontextmanager
    async def make(
        turns: Any, *, upstream_down: bool = False, provider_options: dict[str, Any] | None = None, **overrides: Any
    ) -> AsyncIterator[Stack]:
        with ScriptedModel(turns) as model:
            root = f"http://127.0.0.1:{free_port()}" if upstream_down else model.url
            providers = {
                "scripted": {"kind": "openai-chat", "base_url": f"{root}/v1", "models": [MODEL]},
                "scripted-responses": {"kind": "openai-responses", "base_url": f"{root}/v1", "models": [MODEL]},
                "scripted-anthropic": {"kind": "anthropic", "base_url": root, "models": [MODEL]},
                "scripted-gemini": {"kind": "gemini", "base_url": root, "models": [MODEL]},
            }
            for p in providers.values():
                p["api_key_env"] = "SCRIPTED_UPSTREAM_KEY"
                p.update(provider_options or {})
            port = free_port()
            home = fast_tmp / f"home-{port}"  # one database per stack
            settings = Settings(home=home, providers=providers, url=f"http://127.0.0.1:{port}", port=port, **overrides)
            plane = ControlPlane(settings)
            await plane.start()
            server = uvicorn.Server(uvicorn.Config(create_app(plane=plane), host="127.0.0.1", port=port,
                                                   log_level="warning", lifespan="on"))  # fmt: skip
            task = asyncio.create_task(server.serve())
            while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
                await asyncio.sleep(0.01)
            try:
                yield Stack(plane, model, f"http://127.0.0.1:{port}")
            finally:
                server.should_exit = True
                await task
                await plane.stop()

    return make
