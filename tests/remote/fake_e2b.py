"""A FAKE E2B, for tests only: the API (``/v2/sandboxes``, connect, kill, pause) and each sandbox's envd (``/files``,
``/health``, and the Connect-protocol ``process.Process`` service with the JSON codec) that the official ``e2b`` SDK
calls for the ``e2b`` runtime, spoken over real HTTP/1.1, so the SDK runs unmodified (pointed here by ``api_url``
and ``sandbox_url``; sandboxes are told apart by the ``E2b-Sandbox-Id`` header the SDK sends).

A sandbox is a set of folders (its ``/tmp`` and its ``/dev/shm``) and its commands are real
processes in bubblewrap over them (``container.Container``): files written through envd are what the commands see.
Not emulated: users (everything runs as the test's user), templates, network rules, timeouts; ``pause`` stops the
sandbox's processes with SIGSTOP (E2B snapshots the VM). ``fail_next`` answers the next request of a kind with an
error status, as E2B would when it refuses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import signal
import struct
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.remote.container import Container
from tests.remote.server import Served

API_KEY = "e2b_fake_key_1234567890"
ENVD_VERSION = "0.6.4"
MOUNTS = ("/tmp", "/dev/shm")


@dataclass
class FakeSandbox:
    id: str
    template: str
    metadata: dict[str, str]
    container: Container
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    procs: dict[int, tuple[subprocess.Popen[bytes], dict[str, Any]]] = field(default_factory=dict)
    paused: bool = False


class FakeE2B:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers): to check the key stays out
        self.commands: list[dict[str, Any]] = []  # every process config started: to check what reaches a sandbox
        self.fail_next: dict[str, int] = {}  # "create" | "start" | ... -> HTTP status
        self.killed: list[str] = []
        app = Starlette(
            routes=[
                Route("/v2/sandboxes", self.create, methods=["POST"]),
                Route("/v2/sandboxes/{id}/connect", self.connect, methods=["POST"]),
                Route("/sandboxes/{id}/connect", self.connect, methods=["POST"]),
                Route("/sandboxes/{id}", self.kill, methods=["DELETE"]),
                Route("/sandboxes/{id}/pause", self.pause, methods=["POST"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/files", self.files, methods=["GET", "POST"]),
                Route("/process.Process/Start", self.start, methods=["POST"]),
                Route("/process.Process/List", self.list, methods=["POST"]),
            ]
        )
        self.served = Served(app)
        self.url = self.served.url

    def stop(self) -> None:
        self.served.stop()
        for sandbox in self.sandboxes.values():
            sandbox.container.remove()

    # ------------------------------------------------------------------------------------------- helpers

    def _seen(self, request: Request) -> None:
        self.requests.append((request.method, request.url.path, dict(request.headers)))

    def _api_refused(self, request: Request, kind: str) -> Response | None:
        self._seen(request)
        if request.headers.get("x-api-key") != API_KEY:
            return JSONResponse({"code": 401, "message": "Invalid API key"}, status_code=401)
        if (status := self.fail_next.pop(kind, None)) is not None:
            return JSONResponse({"code": status, "message": f"fake refusal of {kind}"}, status_code=status)
        return None

    def _sandbox(self, request: Request) -> FakeSandbox | None:
        self._seen(request)
        sandbox = self.sandboxes.get(request.headers.get("e2b-sandbox-id", ""))
        if sandbox is None or request.headers.get("x-access-token") != sandbox.token:
            return None
        return sandbox

    def _body(self, sandbox: FakeSandbox) -> dict[str, Any]:
        return {
            "templateID": sandbox.template, "sandboxID": sandbox.id, "clientID": "fake", "envdVersion": ENVD_VERSION,
            "envdAccessToken": sandbox.token,
        }  # fmt: skip

    def _groups(self, sandbox: FakeSandbox, sig: signal.Signals) -> None:
        """Signal every process of the sandbox (those of its pid namespace, setsid or not)."""
        import psutil

        for started in sandbox.container.procs:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(started.pid)
                for proc in [root, *root.children(recursive=True)]:
                    if "sleep infinity" not in " ".join(proc.cmdline()):  # the sandbox's own init keeps it alive
                        with contextlib.suppress(psutil.Error):
                            proc.send_signal(sig)

    # ----------------------------------------------------------------------------------------------- API

    async def create(self, request: Request) -> Response:
        if (refused := self._api_refused(request, "create")) is not None:
            return refused
        body = await request.json()
        sandbox_id = "sbx" + secrets.token_hex(6)
        container = Container(list(MOUNTS), self.root / sandbox_id)
        # The sandbox's first process holds its pid namespace: commands join it, a kill ends them all.
        with open(container.root / "init.err", "wb") as err:  # noqa: ASYNC230 (a new local file: no wait)
            container.run(["sleep", "infinity"], {}, None, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=err)  # fmt: skip
        sandbox = FakeSandbox(sandbox_id, body.get("templateID", "base"), body.get("metadata") or {}, container)
        self.sandboxes[sandbox_id] = sandbox
        return JSONResponse(self._body(sandbox), status_code=201)

    async def connect(self, request: Request) -> Response:
        if (refused := self._api_refused(request, "connect")) is not None:
            return refused
        sandbox = self.sandboxes.get(request.path_params["id"])
        if sandbox is None:
            return JSONResponse({"code": 404, "message": "sandbox not found"}, status_code=404)
        if sandbox.paused:  # connecting resumes a paused sandbox
            self._groups(sandbox, signal.SIGCONT)
            sandbox.paused = False
        return JSONResponse(self._body(sandbox), status_code=200)

    async def kill(self, request: Request) -> Response:
        if (refused := self._api_refused(request, "kill")) is not None:
            return refused
        sandbox = self.sandboxes.pop(request.path_params["id"], None)
        if sandbox is None:
            return JSONResponse({"code": 404, "message": "sandbox not found"}, status_code=404)
        self.killed.append(sandbox.id)
        sandbox.container.remove()
        return Response(status_code=204)

    async def pause(self, request: Request) -> Response:
        if (refused := self._api_refused(request, "pause")) is not None:
            return refused
        sandbox = self.sandboxes.get(request.path_params["id"])
        if sandbox is None:
            return JSONResponse({"code": 404, "message": "sandbox not found"}, status_code=404)
        self._groups(sandbox, signal.SIGSTOP)
        sandbox.paused = True
        return Response(status_code=204)

    # ---------------------------------------------------------------------------------------------- envd

    async def health(self, request: Request) -> Response:
        return Response(status_code=204 if self._sandbox(request) else 502)

    async def files(self, request: Request) -> Response:
        sandbox = self._sandbox(request)
        if sandbox is None or sandbox.paused:
            return JSONResponse({"code": 502, "message": "The sandbox was not found"}, status_code=502)
        path = request.query_params.get("path", "")
        host = sandbox.container.host_path(path)
        if host is None:  # only the sandbox's writable folders are served by this fake
            return JSONResponse({"code": 403, "message": f"fake envd: {path} is outside {MOUNTS}"}, status_code=403)
        if request.method == "GET":
            if not host.is_file():
                return JSONResponse({"code": 404, "message": f"file {path} not found"}, status_code=404)
            return Response(host.read_bytes(), media_type="application/octet-stream")
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_bytes(await request.body())
        return JSONResponse([{"name": host.name, "path": path, "type": "file"}])

    async def list(self, request: Request) -> Response:
        sandbox = self._sandbox(request)
        if sandbox is None:
            return JSONResponse({"code": "unavailable", "message": "sandbox not found"}, status_code=502)
        running = [
            {"pid": pid, "config": config} for pid, (proc, config) in sandbox.procs.items() if proc.poll() is None
        ]
        return JSONResponse({"processes": running})

    async def start(self, request: Request) -> Response:
        sandbox = self._sandbox(request)
        if sandbox is None:
            return JSONResponse({"code": "unavailable", "message": "sandbox not found"}, status_code=502)
        if (status := self.fail_next.pop("start", None)) is not None:
            return JSONResponse({"code": "internal", "message": "fake refusal of start"}, status_code=status)
        raw = await request.body()
        (length,) = struct.unpack(">I", raw[1:5])
        config = json.loads(raw[5 : 5 + length])["process"]
        self.commands.append(config)
        proc = sandbox.container.run(
            [config["cmd"], *config.get("args", [])], config.get("envs") or {}, config.get("cwd"),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        sandbox.procs[proc.pid] = (proc, config)
        return StreamingResponse(self._events(proc), media_type="application/connect+json")

    async def _events(self, proc: subprocess.Popen[bytes]) -> AsyncIterator[bytes]:
        yield _frame({"event": {"start": {"pid": proc.pid}}})
        queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def pump(name: str, pipe: Any) -> None:
            for chunk in iter(lambda: pipe.read1(65536), b""):
                loop.call_soon_threadsafe(queue.put_nowait, (name, chunk))
            loop.call_soon_threadsafe(queue.put_nowait, None)

        readers = [
            loop.run_in_executor(None, pump, "stdout", proc.stdout),
            loop.run_in_executor(None, pump, "stderr", proc.stderr),
        ]
        ended = 0
        while ended < 2:
            item = await queue.get()
            if item is None:
                ended += 1
                continue
            yield _frame({"event": {"data": {item[0]: base64.b64encode(item[1]).decode()}}})
        await asyncio.gather(*readers)
        code = await asyncio.to_thread(proc.wait)
        yield _frame({"event": {"end": {"exitCode": code, "exited": True, "status": f"exit status {code}"}}})
        yield _frame({}, end=True)


def _frame(message: dict[str, Any], *, end: bool = False) -> bytes:
    data = json.dumps(message).encode()
    return struct.pack(">BI", 2 if end else 0, len(data)) + data
