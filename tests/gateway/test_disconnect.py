"""A caller that goes away in the middle of a streamed response: the gateway reads the rest of the provider's
answer to meter it (the provider bills it all), and records it exactly once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from godel.api.app import create_app
from godel.scheduler.plane import ControlPlane
from godel.settings import Settings
from tests.e2e.serverproc import free_port


async def _slow_chat(request: Request) -> StreamingResponse:
    """A chat-completions stream whose usage chunk comes 1 s after its first words."""

    async def body() -> AsyncIterator[bytes]:
        first = {"id": "c1", "object": "chat.completion.chunk", "model": "slow",
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello"}}]}  # fmt: skip
        yield f"data: {json.dumps(first)}\n\n".encode()
        await asyncio.sleep(1)
        usage = {"id": "c1", "object": "chat.completion.chunk", "model": "slow", "choices": [],
                 "usage": {"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12}}  # fmt: skip
        yield f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode()

    return StreamingResponse(body(), media_type="text/event-stream")


async def _serve(app: Any, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=1))  # fmt: skip
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
        await asyncio.sleep(0.01)
    return server, task


async def test_a_caller_gone_mid_stream_is_recorded_once(fast_tmp: Path) -> None:
    up_port, port = free_port(), free_port()
    upstream, up_task = await _serve(
        Starlette(routes=[Route("/v1/chat/completions", _slow_chat, methods=["POST"])]), up_port
    )
    providers = {"slow": {"kind": "openai-chat", "base_url": f"http://127.0.0.1:{up_port}/v1", "models": ["slow"]}}
    plane = ControlPlane(Settings(home=fast_tmp / "home", providers=providers, port=port))
    await plane.start()
    server, task = await _serve(create_app(plane=plane), port)
    try:
        key, _ = await plane.gateway.issue("user", "alice")
        body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        async with httpx.AsyncClient(timeout=10) as client:
            async with client.stream("POST", f"http://127.0.0.1:{port}/proxy/v1/chat/completions", json=body,
                                     headers={"authorization": f"Bearer {key}"}) as response:  # fmt: skip
                async for line in response.aiter_lines():
                    if "Hello" in line:
                        break  # and go away, with the usage chunk still 1 s off
        for _ in range(200):
            await plane.gateway.settle()
            if await plane.store.usage_records():
                break
            await asyncio.sleep(0.05)  # the relay notices the caller is gone at its next write or disconnect
        await asyncio.sleep(0.2)
        await plane.gateway.settle()
        (record,) = await plane.store.usage_records()  # once, not twice
        assert record.status_code == 200 and record.stream and record.complete  # metered to the end all the same
        assert (record.input_tokens, record.output_tokens) == (11, 1)
        assert record.user_name == "alice" and record.error.startswith("the caller went away mid-response")
    finally:
        server.should_exit = True
        upstream.should_exit = True
        await asyncio.gather(task, up_task)
        await plane.stop()
