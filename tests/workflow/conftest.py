"""A real control plane and API in-process, with the workflow engine, for running workflows of shell steps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from godel.api.app import create_app
from godel.scheduler.plane import ControlPlane
from tests.api.conftest import plane, settings  # noqa: F401  (fixtures)
from tests.conftest import admin_headers
from tests.gateway.conftest import stack  # noqa: F401  (a fixture)


@pytest.fixture
async def app(plane: ControlPlane) -> AsyncIterator[FastAPI]:  # noqa: F811
    application = create_app(plane=plane)
    try:
        yield application
    finally:
        await application.state.workflows.stop()


@pytest.fixture
async def client(app: FastAPI, plane: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:  # noqa: F811
    headers = await admin_headers(plane)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers) as c:
        yield c


async def submit(client: httpx.AsyncClient, source: str, repo: Any, **extra: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/workflows", json={"source": source, "repo": str(repo), **extra})
    assert r.status_code == 201, r.text
    return dict(r.json()["data"])


async def wait_finished(client: httpx.AsyncClient, workflow_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        data = (await client.get(f"/api/v1/workflows/{workflow_id}")).json()["data"]
        if data["status"] in ("completed", "failed", "cancelled"):
            return dict(data)
        assert time.monotonic() < deadline, f"workflow still {data['status']}: {data['steps']}"
        await asyncio.sleep(0.05)  # polling the API for the run's end, as a user would


def steps_by_id(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in data["steps"]}
