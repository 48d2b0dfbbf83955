"""``KubernetesRuntime``: each agent a Pod, through the official ``kubernetes`` client.

The shared remote lifecycle (``godel.runtimes.remote``) with a Pod as the remote side:

* **start**: create the Pod (``pods.pod_manifest``: the entry as its command), wait until its container runs
  (an image that cannot be pulled, a refused runtime class, a quota: RuntimeFailure, the Pod deleted), then stream
  ``in.tgz`` into it with an exec (``head -c SIZE``, as ``kubectl cp`` streams a tar: no size limit such as a
  ConfigMap's 1 MiB, and nothing stored in the cluster).
* **output**: the container's log (``read_namespaced_pod_log``) is the agent's stdout; its stderr and the result
  follow in the log when it ends (``entry``).
* **exit status**: ``status.containerStatuses[].state.terminated.exitCode``.
* **terminate**: an exec that sends TERM (then KILL) to the agent's process group, so the entry still brings the
  result home; the Pod is deleted after that, or at once when it cannot be reached.
* **pause**: not supported (Kubernetes cannot freeze a Pod): refused with 409.
* **adopt**: by the record in ``log_dir``, else by the labels ``godel.dev/agent`` and ``godel.dev/run``.

The ``pid`` of the handle is 1: the entry is the first process of the Pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from godel.core.ports import LaunchSpec, ProcessState, RuntimeCapabilities, RuntimeHandle
from godel.errors import RuntimeFailure
from godel.runtimes.kubernetes import pods
from godel.runtimes.local import workspace_options
from godel.runtimes.remote.base import Launched, RemoteRuntime, Seen, check_gateway, limits_of
from godel.runtimes.remote.entry import TRANSFER_DIR, entry_argv
from godel.runtimes.remote.transfer import split_log

if TYPE_CHECKING:
    from godel.settings import Settings

T = TypeVar("T")
_CHUNK = 256 * 1024  # bytes per websocket frame of the workspace
_FAILED_WAITING = {
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError",
    "RunContainerError", "CrashLoopBackOff",
}  # fmt: skip


class KubernetesRuntime(RemoteRuntime):
    name = "kubernetes"

    def __init__(
        self,
        worktrees_root: Path | None = None,
        logs_root: Path | None = None,
        *,
        image: str,
        namespace: str = "default",
        kubeconfig: Path | None = None,
        context: str | None = None,
        configuration: Any = None,
        runtime_class: str | None = None,
        memory_mb: int | None = None,
        cpus: float | None = None,
        service_account: str | None = None,
        gateway_url: str | None = None,
        workspace_mode: str = "auto",
        workspace_cache_size: int = 16,
        start_timeout: float = 300.0,
    ) -> None:
        """``configuration``: a ``kubernetes.client.Configuration`` (else ``kubeconfig``/``context``, else the
        in-cluster service account, else ``~/.kube/config``). ``memory_mb``/``cpus``: the requests and limits of an
        agent that asks for none. ``gateway_url``: where the agents reach the gateway; a loopback URL is refused
        (fail closed: the Pod's loopback is its own)."""
        check_gateway(self.name, gateway_url)
        super().__init__(
            worktrees_root, logs_root, workspace_mode=workspace_mode, workspace_cache_size=workspace_cache_size
        )
        self.image, self.namespace, self.runtime_class = image, namespace, runtime_class
        self.memory_mb, self.cpus, self.service_account = memory_mb, cpus, service_account
        self.start_timeout = start_timeout
        self._configuration = configuration if configuration is not None else _load_configuration(kubeconfig, context)

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesRuntime:
        if not settings.kubernetes_image:
            raise RuntimeFailure(
                "the kubernetes runtime needs an image with sh, git, tar and the agent CLIs: set kubernetes_image",
                details={"fix": "set kubernetes_image (GODEL_KUBERNETES_IMAGE)"},
            )
        return cls(
            worktrees_root=settings.worktrees_dir, logs_root=settings.logs_dir, image=settings.kubernetes_image,
            namespace=settings.kubernetes_namespace, kubeconfig=settings.kubernetes_kubeconfig,
            context=settings.kubernetes_context, runtime_class=settings.kubernetes_runtime_class,
            memory_mb=settings.kubernetes_memory_mb, cpus=settings.kubernetes_cpus,
            service_account=settings.kubernetes_service_account,
            gateway_url=settings.agent_gateway_url if settings.use_gateway else None, **workspace_options(settings),
        )  # fmt: skip

    def capabilities(self) -> RuntimeCapabilities:
        isolation = "vm" if (self.runtime_class or "").startswith("kata") else "container"
        return RuntimeCapabilities(
            name=self.name, isolation=isolation, pause=False, snapshot="git-ref",
            resource_limits=("memory", "cpu"), network_isolation=False, workspace=self._workspaces.mode,
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------- the API

    def _api(self) -> Any:
        from kubernetes import client  # the client is imported by this runtime only

        return client.CoreV1Api(client.ApiClient(self._configuration))

    async def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run a client call in a thread; every failure of the cluster becomes a RuntimeFailure naming it."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        def call() -> T:
            api = self._api()
            try:
                return fn(api)
            finally:
                api.api_client.close()

        try:
            return await asyncio.to_thread(call)
        except ApiException as exc:
            raise RuntimeFailure(
                f"Kubernetes refused to {what}: {exc.status} {exc.reason}",
                details={"status": exc.status, "reason": exc.reason, "body": _clip(exc.body)},
            ) from exc
        except (HTTPError, OSError) as exc:
            raise RuntimeFailure(f"cannot reach Kubernetes to {what}: {exc}", details={"error": str(exc)}) from exc

    async def _missing_ok(self, what: str, fn: Callable[[Any], T]) -> T | None:
        try:
            return await self._call(what, fn)
        except RuntimeFailure as exc:
            if exc.details.get("status") == 404:
                return None
            raise

    # ------------------------------------------------------------------------------------------- back-end

    def _new_record(self, handle: RuntimeHandle, run: str, started: float) -> Launched:
        return Launched(
            agent=handle.agent_id, id=pods.pod_name(handle.agent_id, run, started), run=run, started=started, pid=1
        )

    async def _launch(self, handle: RuntimeHandle, launch: LaunchSpec, payload: bytes, record: Launched) -> Launched:
        memory, cpus, _ = limits_of(launch)
        cwd = handle.workspace / launch.cwd if launch.cwd else handle.workspace
        argv = entry_argv(str(handle.workspace), handle.branch, str(cwd), "-", list(launch.argv))
        manifest = pods.pod_manifest(
            name=record.id, namespace=self.namespace, agent_id=handle.agent_id, run=record.run,
            started=record.started, image=self.image, argv=argv, env=launch.env, workspace=str(handle.workspace),
            files=[str(p) for p in launch.files], runtime_class=self.runtime_class,
            memory_mb=memory if memory is not None else self.memory_mb, cpus=cpus if cpus is not None else self.cpus,
            service_account=self.service_account,
        )  # fmt: skip
        await self._call("create the agent's pod", lambda api: api.create_namespaced_pod(self.namespace, manifest))
        await self._until_running(record)
        script = (
            f"head -c {len(payload)} > {TRANSFER_DIR}/in.tgz.part && "
            f"mv -f {TRANSFER_DIR}/in.tgz.part {TRANSFER_DIR}/in.tgz && : > {TRANSFER_DIR}/in.ready"
        )
        code, err = await self._exec(record, script, stdin=payload, timeout=self.start_timeout)
        if code != 0:
            raise RuntimeFailure(
                f"the workspace could not be handed to pod {record.id} (exit {code})", details={"stderr": err[-2000:]}
            )
        return record

    async def _until_running(self, record: Launched) -> None:
        deadline = time.monotonic() + self.start_timeout
        delay = 0.05
        while True:
            pod = await self._call(
                "read the agent's pod", lambda api: api.read_namespaced_pod(record.id, self.namespace)
            )
            phase = pod.status.phase if pod.status else None
            for status in (pod.status.container_statuses or []) if pod.status else []:
                waiting = status.state.waiting if status.state else None
                if waiting is not None and waiting.reason in _FAILED_WAITING:
                    raise RuntimeFailure(
                        f"pod {record.id} cannot start: {waiting.reason}: {waiting.message or ''}".rstrip(": "),
                        details={"pod": record.id, "reason": waiting.reason},
                    )
                if status.state and status.state.running is not None:
                    return
            if phase in ("Failed", "Succeeded"):
                raise RuntimeFailure(f"pod {record.id} ended before its workspace arrived", details={"phase": phase})
            if time.monotonic() > deadline:
                raise RuntimeFailure(
                    f"pod {record.id} did not start within {self.start_timeout:g}s (phase {phase})",
                    details={"pod": record.id, "phase": phase},
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _exec(
        self, record: Launched, script: str, *, stdin: bytes | None = None, timeout: float = 60.0
    ) -> tuple[int, str]:
        from kubernetes.stream import stream

        def run(api: Any) -> tuple[int, str]:
            ws = stream(
                api.connect_get_namespaced_pod_exec, record.id, self.namespace, container=pods.CONTAINER,
                command=["/bin/sh", "-c", script], stdin=stdin is not None, stdout=True, stderr=True, tty=False,
                _preload_content=False, binary=True,
            )  # fmt: skip
            try:
                if stdin is not None:
                    for at in range(0, len(stdin), _CHUNK):
                        ws.write_stdin(stdin[at : at + _CHUNK])
                    with contextlib.suppress(Exception):  # only the v5 protocol can close stdin; head -c needs not
                        ws.close_channel(0)
                ws.run_forever(timeout=timeout)
                err = ws.read_stderr() if ws.peek_stderr() else b""
                code = ws.returncode
            finally:
                ws.close()
            text = err.decode(errors="replace") if isinstance(err, bytes) else str(err)
            return (code if code is not None else -1), text

        return await self._call(f"run a command in pod {record.id}", run)

    async def _observe(self, handle: RuntimeHandle, record: Launched) -> Seen:
        pod = await self._missing_ok(
            "read the agent's pod", lambda api: api.read_namespaced_pod(record.id, self.namespace)
        )
        if (
            pod is None
            or pod.metadata is None
            or (pod.metadata.annotations or {}).get(pods.STARTED) != repr(record.started)
        ):
            return Seen(ProcessState.GONE)
        for status in pod.status.container_statuses or [] if pod.status else []:
            if status.name != pods.CONTAINER or status.state is None:
                continue
            if status.state.terminated is not None:
                return Seen(ProcessState.EXITED, status.state.terminated.exit_code)
        if pod.status is not None and pod.status.phase in ("Failed", "Succeeded"):
            return Seen(ProcessState.EXITED, None)
        return Seen(ProcessState.RUNNING)

    async def _collect(self, record: Launched, *, final: bool) -> tuple[bytes, bytes | None, bytes | None]:
        def read(api: Any) -> bytes:
            resp = api.read_namespaced_pod_log(
                record.id, self.namespace, container=pods.CONTAINER, _preload_content=False
            )
            data: bytes = resp.data
            return data

        log = await self._missing_ok("read the agent's log", read)
        stdout, packed = split_log(log or b"", final=final)
        return stdout, None, packed

    async def _signal(self, record: Launched, signal: str) -> None:
        await self._exec(record, f"p=$(cat {TRANSFER_DIR}/agent.pid 2>/dev/null) && kill -{shlex.quote(signal)} -$p")

    async def _delete(self, record: Launched) -> None:
        await self._missing_ok(
            "delete the agent's pod",
            lambda api: api.delete_namespaced_pod(record.id, self.namespace, grace_period_seconds=0),
        )

    async def _find(self, handle: RuntimeHandle, run: str) -> Launched | None:
        found = await self._call(
            "list the agent's pods",
            lambda api: api.list_namespaced_pod(self.namespace, label_selector=pods.selector(handle.agent_id, run)),
        )
        for pod in found.items or []:
            annotations = pod.metadata.annotations or {}
            with contextlib.suppress(ValueError, TypeError):
                started = float(annotations[pods.STARTED])
                return Launched(handle.agent_id, pod.metadata.name, run, started, 1, delivered=True)
        return None


def _load_configuration(kubeconfig: Path | None, context: str | None) -> Any:
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    try:
        if kubeconfig is None and context is None:
            try:
                config.load_incluster_config(client_configuration=configuration)
                return configuration
            except ConfigException:
                pass
        config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig else None, context=context, client_configuration=configuration
        )
    except (ConfigException, OSError, TypeError) as exc:
        raise RuntimeFailure(
            f"no Kubernetes configuration: {exc}",
            details={"fix": "set kubernetes_kubeconfig, or run the server in a cluster"},
        ) from exc
    return configuration


def _clip(body: object) -> str:
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    return text[:2000]
