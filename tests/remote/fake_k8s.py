"""A FAKE Kubernetes API server, for tests only: the few endpoints the official ``kubernetes`` client calls for the
``kubernetes`` runtime, spoken over real HTTP (and a real WebSocket for exec), so the client runs unmodified.

Pods: create, read, list (by label selector), delete, log, exec (the ``v5.channel.k8s.io`` / ``v4`` channel
protocol). A created pod "runs": its container's command is started at once as a real process in bubblewrap with
its emptyDir volumes (``container.Container``), its stdout and stderr go to its log, and its status follows the
process (Running, then Succeeded/Failed with the container's exit code). Not emulated: scheduling, images (an image
named ``unpullable`` sits in ErrImagePull), users and capabilities, resources, runtime classes, namespaces' other
objects. ``fail_next`` makes the next matching request answer with an error status, as a cluster that refuses would.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.remote.container import Container
from tests.remote.server import Served

TOKEN = "fake-cluster-token"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Pod:
    manifest: dict[str, Any]
    container: Container | None
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    created: str = field(default_factory=_now)
    waiting: str | None = None

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])

    def as_json(self) -> dict[str, Any]:
        pod = copy.deepcopy(self.manifest)
        pod["metadata"].setdefault("uid", self.name)
        pod["metadata"]["creationTimestamp"] = self.created
        spec = pod["spec"]["containers"][0]
        status: dict[str, Any] = {"name": spec["name"], "image": spec["image"], "imageID": "", "ready": False,
                                  "restartCount": 0}  # fmt: skip
        code = self.proc.poll() if self.proc is not None else None
        if self.waiting is not None:
            phase, status["state"] = "Pending", {"waiting": {"reason": self.waiting, "message": "fake: no such image"}}
        elif code is None:
            phase, status["state"], status["ready"] = "Running", {"running": {"startedAt": self.created}}, True
        else:
            code = 128 - code if code < 0 else code  # killed by a signal: as a container runtime reports it
            phase = "Succeeded" if code == 0 else "Failed"
            status["state"] = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}
        pod["status"] = {"phase": phase, "containerStatuses": [status]}
        return pod


class FakeKubernetes:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.pods: dict[tuple[str, str], Pod] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_next: dict[tuple[str, str], tuple[int, str]] = {}  # (method, "pods"|"log"|"exec") -> status
        base = "/api/v1/namespaces/{ns}/pods"
        app = Starlette(
            routes=[
                Route(base, self.create, methods=["POST"]),
                Route(base, self.list, methods=["GET"]),
                Route(base + "/{name}", self.read, methods=["GET"]),
                Route(base + "/{name}", self.delete, methods=["DELETE"]),
                Route(base + "/{name}/log", self.logs, methods=["GET"]),
                WebSocketRoute(base + "/{name}/exec", self.exec),
            ]
        )
        self.served = Served(app)
        self.url = self.served.url

    def kubeconfig(self, path: Path, namespace: str = "agents") -> Path:
        path.write_text(
            json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                "users": [{"name": "fake", "user": {"token": TOKEN}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            })
        )  # fmt: skip
        return path

    def stop(self) -> None:
        self.served.stop()
        for pod in self.pods.values():
            if pod.container is not None:
                pod.container.remove()

    # ------------------------------------------------------------------------------------------- helpers

    def _refused(self, request: Request, what: str) -> Response | None:
        self.requests.append((request.method, what))
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return _status(401, "Unauthorized")
        failure = self.fail_next.pop((request.method, what), None)
        return _status(*failure) if failure else None

    def _pod(self, request: Request) -> Pod | None:
        return self.pods.get((request.path_params["ns"], request.path_params["name"]))

    # ------------------------------------------------------------------------------------------ endpoints

    async def create(self, request: Request) -> Response:
        if (refused := self._refused(request, "pods")) is not None:
            return refused
        manifest = await request.json()
        ns, name = request.path_params["ns"], manifest["metadata"]["name"]
        if (ns, name) in self.pods:
            return _status(409, f'pods "{name}" already exists')
        spec = manifest["spec"]["containers"][0]
        mounts = {m["name"]: m["mountPath"] for m in spec.get("volumeMounts", [])}
        log = self.root / f"{ns}-{name}.log"
        log.write_bytes(b"")
        pod = Pod(manifest, None, log)
        if spec["image"].startswith("unpullable"):
            pod.waiting = "ErrImagePull"
        else:
            pod.container = Container(list(mounts.values()), self.root / f"{ns}-{name}")
            env = {e["name"]: e["value"] for e in spec.get("env", [])}
            with open(log, "ab") as out:  # noqa: ASYNC230 (a fake: a local file, opened once per pod)
                pod.proc = pod.container.run(
                    [*spec["command"], *spec.get("args", [])], env, spec.get("workingDir"),
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
        self.pods[(ns, name)] = pod
        return JSONResponse(pod.as_json(), status_code=201)

    async def list(self, request: Request) -> Response:
        if (refused := self._refused(request, "pods")) is not None:
            return refused
        wanted = dict(p.split("=", 1) for p in request.query_params.get("labelSelector", "").split(",") if p)
        items = [
            pod.as_json() for (ns, _), pod in self.pods.items()
            if ns == request.path_params["ns"] and wanted.items() <= pod.manifest["metadata"].get("labels", {}).items()
        ]  # fmt: skip
        return JSONResponse({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})

    async def read(self, request: Request) -> Response:
        if (refused := self._refused(request, "pods")) is not None:
            return refused
        pod = self._pod(request)
        return JSONResponse(pod.as_json()) if pod else _status(404, "not found")

    async def delete(self, request: Request) -> Response:
        if (refused := self._refused(request, "pods")) is not None:
            return refused
        pod = self.pods.pop((request.path_params["ns"], request.path_params["name"]), None)
        if pod is None:
            return _status(404, "not found")
        if pod.container is not None:
            pod.container.remove()
        return JSONResponse(pod.as_json())

    async def logs(self, request: Request) -> Response:
        if (refused := self._refused(request, "log")) is not None:
            return refused
        pod = self._pod(request)
        if pod is None:
            return _status(404, "not found")
        return Response(pod.log.read_bytes(), media_type="text/plain")

    async def exec(self, ws: WebSocket) -> None:
        protocols = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
        v5 = "v5.channel.k8s.io" in protocols
        self.requests.append(("GET", "exec"))
        pod = self.pods.get((ws.path_params["ns"], ws.path_params["name"]))
        failure = self.fail_next.pop(("GET", "exec"), None)
        if pod is None or pod.container is None or failure or ws.headers.get("authorization") != f"Bearer {TOKEN}":
            await ws.close(code=1008)
            return
        try:
            argv = pod.container.argv(ws.query_params.getlist("command"), None)
        except RuntimeError:  # the pod's command has ended: a cluster refuses an exec into a completed pod
            await ws.close(code=1008)
            return
        await ws.accept(subprotocol="v5.channel.k8s.io" if v5 else "v4.channel.k8s.io")
        proc = await asyncio.create_subprocess_exec(
            *argv, env={"PATH": "/usr/bin:/bin"},
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

        async def feed() -> None:
            assert proc.stdin is not None
            with contextlib.suppress(WebSocketDisconnect, BrokenPipeError, ConnectionResetError):
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    data = message.get("bytes") or (message.get("text") or "").encode()
                    if data[:1] == b"\xff":  # v5: close a channel (stdin: 0)
                        break
                    if data[:1] == b"\x00" and len(data) > 1:
                        proc.stdin.write(data[1:])
                        await proc.stdin.drain()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.close()

        async def pump(channel: int, reader: asyncio.StreamReader | None) -> None:
            while reader is not None and (chunk := await reader.read(65536)):
                await ws.send_bytes(bytes([channel]) + chunk)

        feeder = asyncio.create_task(feed())
        await asyncio.gather(pump(1, proc.stdout), pump(2, proc.stderr))
        code = await proc.wait()
        feeder.cancel()
        status: dict[str, Any] = {"metadata": {}, "status": "Success"}
        if code != 0:
            status = {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                      "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}  # fmt: skip
        with contextlib.suppress(Exception):
            await ws.send_bytes(b"\x03" + json.dumps(status).encode())
            await ws.close()


def _status(code: int, message: str) -> JSONResponse:
    reason = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "AlreadyExists"}.get(code, "InternalError")
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return JSONResponse(body, status_code=code)


def wait_until(check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.01)
