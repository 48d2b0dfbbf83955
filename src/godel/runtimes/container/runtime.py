"""``ContainerRuntime``: the sandbox's workspace contract, with each agent in a podman container (runc).

Workspaces, git snapshots, output files and adoption are the local runtime's; what the agent may see (the workspace,
its private directory, git's write paths, the agent CLIs read-only, the gateway's socket) is the sandbox's
``_confinement``, turned into podman volumes instead of bwrap binds. The local runtime's wrapper stays on the host
and runs ``podman run`` in the foreground, so its pid and exit files, its adoption after a server restart and the
exit status work unchanged: ``podman run`` returns the agent's status and proxies TERM to the container's init
(``--init``: catatonit), which hands it to the agent. What a signal to the host-side group cannot reach (the
container's processes are children of conmon, not of the wrapper) is reached through podman: pause is the cgroup
freezer (``podman pause``), and a kill ends with ``podman rm --force``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from godel.core.limits import ResourceLimits
from godel.core.ports import LaunchSpec, ProcessState, ProcessStatus, RuntimeCapabilities, RuntimeHandle
from godel.errors import (
    FieldError,
    NotFoundError,
    RuntimeFailure,
    RuntimeUnavailableError,
    ValidationError,
)
from godel.runtimes.container.podman import (
    BUILD_SCRIPT,
    DEFAULT_IMAGE,
    LABEL,
    Limits,
    Podman,
    Spec,
    default_storage,
    run_argv,
)
from godel.runtimes.local import LocalRuntime, workspace_options
from godel.runtimes.processes import agent_env
from godel.runtimes.sandbox.bwrap import Confinement, entry_argv
from godel.runtimes.sandbox.runtime import SandboxRuntime
from godel.runtimes.workspaces import jail

if TYPE_CHECKING:
    from godel.settings import Settings

# A reference podman resolves locally: lowercase name components, an optional tag or digest. Never a leading "-":
# the image is a positional argument after podman's options, and a flag there would be obeyed.
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$")
_LIVE = (ProcessState.RUNNING, ProcessState.STOPPED)
NODE_INSIDE = "/usr/local/bin/node"  # where the host's node appears; first on the PATH inside


def check_image(image: str, field: str = "config.sandbox.image") -> str:
    if len(image) > 255 or not _IMAGE.match(image):
        raise ValidationError(
            f"{image!r} is not an image reference such as {DEFAULT_IMAGE}",
            [FieldError(field, "a lowercase image name with an optional :tag")],
        )
    return image


def sandbox_options(handle: RuntimeHandle) -> Mapping[str, Any]:
    """The agent's ``config.sandbox`` as the scheduler passed it in ``handle.extra["sandbox"]`` (image, limits)."""
    value = handle.extra.get("sandbox")
    return value if isinstance(value, Mapping) else {}


def limits_from(asked: ResourceLimits | None, default: Limits) -> Limits:
    """The agent's limits (``LaunchSpec.limits``: the spawn's, its team's or the server's, checked at spawn) over the
    runtime's own defaults, as podman's flags take them."""
    if not asked:
        return default
    return Limits(
        memory=asked.memory_mb << 20 if asked.memory_mb is not None else default.memory,
        cpus=asked.cpus if asked.cpus is not None else default.cpus,
        pids=asked.pids if asked.pids is not None else default.pids,
    )


PAUSE_WAIT = 30.0  # seconds a pause waits for a container that `podman run` is still making
_ENDED_STATES = ("exited", "stopped", "stopping", "removing", "dead")


class ContainerRuntime(SandboxRuntime):
    name = "container"

    def __init__(
        self,
        worktrees_root: Path | None = None,
        logs_root: Path | None = None,
        *,
        run_root: Path | None = None,
        agents_dir: Path | None = None,
        gateway_socket: Path | None = None,
        gateway_port: int | None = None,
        egress_socket: Path | None = None,
        workspace_mode: str = "auto",
        workspace_cache_size: int = 16,
        storage: Path | None = None,
        image: str | None = None,
        limits: Limits | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """``storage``: Godel's podman storage (default ``~/.cache/godel/containers``, where
        scripts/build-agent-image imports the image). ``image``: the default image (an agent's
        ``config.sandbox.image`` wins). ``limits``: the default cgroup limits. ``labels``: put on every container
        (tests mark theirs to remove them whatever happens). Fails closed without podman and runc, and when the
        server is not root (rootless podman is not supported yet)."""
        if not jail.available():
            raise RuntimeUnavailableError(  # a fallback chain moves on
                f"the container runtime needs bubblewrap too ({jail.WHY}): apt-get install bubblewrap",
                details={"missing": ["bwrap"], "fix": "apt-get install bubblewrap"},
            )
        self.podman = Podman(storage or default_storage())
        if os.getuid() != 0:
            raise RuntimeFailure(
                "the container runtime runs podman as root with Godel's own storage; rootless podman is not "
                'supported yet: run the server as root or use runtime = "sandbox"'
            )
        # Not SandboxRuntime.__init__: it requires bubblewrap on the host, which containers do not use. The same
        # attributes, so the sandbox's confinement (and its git paths) work here unchanged.
        LocalRuntime.__init__(
            self, worktrees_root, logs_root, workspace_mode=workspace_mode, workspace_cache_size=workspace_cache_size
        )
        self._set_confinement(run_root, agents_dir, gateway_socket, gateway_port, egress_socket)
        self.image = check_image(image or DEFAULT_IMAGE, "container_image")
        self.limits = limits or Limits()
        self.labels = dict(labels or {})
        node = shutil.which("node")
        self.node = Path(node).resolve() if node else None
        self._images: set[str] = set()  # seen in the storage: checked once per image and runtime
        # The launches this runtime started or adopted, by agent: (pid, start time) of the wrapper. When one is
        # seen ended, its container is removed once (``status``), so a wrapper killed from outside cannot leave
        # its container running unsupervised; a handle naming another launch never touches the container.
        self._owned: dict[str, tuple[int | None, float | None]] = {}
        # Agents whose container is paused (frozen by ``podman pause``): their status reads ``stopped``. The
        # host-side ``podman run`` is never stopped itself: it may hold a lock of the storage at that moment, and
        # every other podman call of the machine (other agents' starts) would wait on it for as long as the pause.
        self._paused: set[str] = set()
        self._exec_names: weakref.WeakKeyDictionary[asyncio.subprocess.Process, str] = weakref.WeakKeyDictionary()

    @classmethod
    def from_settings(cls, settings: Settings) -> ContainerRuntime:
        gateway: dict[str, Any] = {}
        if settings.use_gateway:
            gateway = {
                "gateway_socket": settings.gateway_socket,
                "gateway_port": urlsplit(settings.agent_gateway_url).port,
                "egress_socket": settings.egress_socket,
            }
        return cls(
            worktrees_root=settings.worktrees_dir, logs_root=settings.logs_dir, run_root=settings.home / "run",
            agents_dir=settings.agents_dir, storage=settings.container_storage, image=settings.container_image,
            **gateway, **workspace_options(settings),
        )  # fmt: skip

    def capabilities(self) -> RuntimeCapabilities:
        return RuntimeCapabilities(
            name=self.name, isolation="container", pause=True, snapshot="git-ref",
            resource_limits=("memory", "cpu", "pids"), network_isolation=True,
        )  # fmt: skip

    @staticmethod
    def container_name(handle: RuntimeHandle) -> str:
        """One container per agent, found again by name after a restart (the handle's extra is not persisted)."""
        return f"godel-{handle.agent_id}"

    # -------------------------------------------------------------------------------------- the container

    async def _require_image(self, image: str) -> None:
        if image in self._images:
            return
        if not await self.podman.image_exists(image):
            fix = f"run {BUILD_SCRIPT} (as root)" if image == DEFAULT_IMAGE else f"import {image} into it"
            raise RuntimeUnavailableError(  # this runtime cannot serve here: a fallback chain moves on
                f"the container image {image} is not in Godel's podman storage ({self.podman.storage}): {fix}",
                details={"image": image, "storage": str(self.podman.storage), "fix": fix},
            )
        self._images.add(image)

    def _spec(
        self, handle: RuntimeHandle, c: Confinement, argv: Sequence[str], env: Mapping[str, str], name: str,
        limits: ResourceLimits | None = None,
    ) -> Spec:  # fmt: skip
        options = sandbox_options(handle)
        image = check_image(str(options["image"])) if options.get("image") else self.image
        extra = [(self.node, NODE_INSIDE)] if self.node is not None else []
        if c.gateway_dir is not None:
            extra.append((c.gateway_dir, "/run/godel"))
        return Spec(
            name=name, image=image, cwd=c.cwd, argv=argv, env_names=sorted(env), readonly=c.readonly,
            writable=c.writable, extra_binds=extra, limits=limits_from(limits, self.limits),
            labels={**self.labels, LABEL: handle.agent_id}, seccomp=self.podman.seccomp,
        )  # fmt: skip

    @staticmethod
    def _env(c: Confinement, env: Mapping[str, str]) -> dict[str, str]:
        merged = {"HOME": str(c.home), "TMPDIR": "/tmp", "USER": "agent", "LOGNAME": "agent", "LANG": "C.UTF-8"}
        merged.update(env)
        merged["HOME"] = str(c.home)  # the one bound for it (a HOME of the request's env may not be: _own_home)
        # The host's PATH names the same paths inside (every bind is at its own path) plus the image's; node first.
        path = [p for p in merged.get("PATH", agent_env().get("PATH", "")).split(":") if p]
        merged["PATH"] = ":".join(dict.fromkeys(["/usr/local/bin", *path, "/usr/bin", "/bin"]))
        return merged

    async def start(self, handle: RuntimeHandle, launch: LaunchSpec) -> RuntimeHandle:
        cwd = handle.workspace / launch.cwd if launch.cwd else handle.workspace
        c = await self._confinement(handle, cwd, list(launch.files), launch.env.get("HOME"))
        env = self._env(c, launch.env)
        env["GIT_CONFIG_GLOBAL"] = str(c.home / ".gitconfig")  # the host's is not inside; the agent's own is
        egress = self._egress_env(launch.egress)
        env.update(egress)
        name = self.container_name(handle)
        spec = self._spec(handle, c, self._entry(launch.argv, bool(egress)), env, name, launch.limits)
        await self._require_image(spec.image)
        argv = run_argv(self.podman.podman, self.podman.flags, spec)
        # podman copies each variable into the container from its own environment (``--env NAME``): no value
        # (a gateway key) is ever on a command line, where /proc/<pid>/cmdline would show it.
        # The limits are podman's to enforce (its flags above), not the host-side wrapper's cgroups.
        started = await LocalRuntime.start(self, handle, dataclasses.replace(launch, argv=argv, env=env, limits=None))
        self._owned[handle.agent_id] = (started.pid, started.pid_started)
        return started

    async def adopt(self, handle: RuntimeHandle) -> bool:
        adopted = await LocalRuntime.adopt(self, handle)
        if adopted:
            self._owned[handle.agent_id] = (handle.pid, handle.pid_started)
            if await self.podman.state(self.container_name(handle)) == "paused":
                self._paused.add(handle.agent_id)
        return adopted

    async def status(self, handle: RuntimeHandle) -> ProcessStatus:
        status = await LocalRuntime.status(self, handle)
        if status.state not in _LIVE and self._owned.get(handle.agent_id) == (handle.pid, handle.pid_started):
            del self._owned[handle.agent_id]
            self._paused.discard(handle.agent_id)
            await self.podman.remove(self.container_name(handle))  # normally gone already (``--rm``)
        if status.state is ProcessState.RUNNING and handle.agent_id in self._paused:
            return dataclasses.replace(status, state=ProcessState.STOPPED)
        return status

    async def pause(self, handle: RuntimeHandle) -> None:
        """The cgroup freezer freezes every process of the container (a double-forked daemon too); the agent's
        status then reads ``stopped``, as in the other runtimes."""
        name = self.container_name(handle)
        deadline = asyncio.get_running_loop().time() + PAUSE_WAIT
        while True:
            if (await self.status(handle)).state is not ProcessState.RUNNING:
                return  # ended meanwhile: nothing to pause
            if await self.podman.pause(name):
                self._paused.add(handle.agent_id)
                return
            # Paused in its first moments, `podman run` may still be making the container (or starting its init,
            # which refuses a pause): try again until it runs for good, or has ended.
            state = await self.podman.state(name)
            if state in _ENDED_STATES or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        if (await self.status(handle)).state is not ProcessState.RUNNING:
            return
        raise RuntimeFailure(f"podman could not pause the container of agent {handle.agent_id} (state {state})")

    async def resume(self, handle: RuntimeHandle) -> None:
        await self.podman.unpause(self.container_name(handle))  # a no-op when it is not paused
        self._paused.discard(handle.agent_id)

    async def terminate(self, handle: RuntimeHandle, *, grace: float = 5.0) -> None:
        """TERM through ``podman run`` (proxied to the agent), KILL after ``grace``, then the container itself is
        removed, whatever is left in it. Only a launch that is verifiably this handle's is acted on: a handle with
        a stale pid must not kill the container of the agent's current run."""
        if (await self.status(handle)).state not in _LIVE:
            return
        name = self.container_name(handle)
        await self.podman.unpause(name)  # a frozen agent cannot act on TERM; a no-op when it is not paused
        self._paused.discard(handle.agent_id)
        await LocalRuntime.terminate(self, handle, grace=grace)
        await self.podman.remove(name)

    async def cleanup(self, handle: RuntimeHandle) -> None:
        """The run is over for good: its container goes too, even one whose wrapper was killed from outside."""
        await self.terminate(handle)
        await self.podman.remove(self.container_name(handle))
        await LocalRuntime.cleanup(self, handle)

    # ------------------------------------------------------------------------------------------- exec

    async def _spawn_exec(self, handle: RuntimeHandle, argv: Sequence[str]) -> asyncio.subprocess.Process:
        """A command in a container of its own over the agent's workspace (the agent's may not be running)."""
        if not argv:
            raise ValidationError("empty command", [FieldError("argv", "must not be empty")])
        if not handle.workspace.is_dir():
            raise NotFoundError(
                f"the workspace of agent {handle.agent_id} is gone", details={"workspace": str(handle.workspace)}
            )
        # Resolved on the host first, so a missing program fails before a container starts, as in the sandbox;
        # the image carries the host's usual tools (sh, git, python3) at the same paths.
        if shutil.which(argv[0], path=agent_env().get("PATH")) is None:
            raise FileNotFoundError(f"no such program: {argv[0]}")
        c = await self._confinement(handle, handle.workspace, [], None)
        env = self._env(c, {"GODEL_WORKSPACE": str(handle.workspace)})
        name = f"godel-exec-{handle.agent_id}-{os.urandom(4).hex()}"
        spec = self._spec(handle, c, entry_argv(argv, None, ""), env, name)
        spec = dataclasses.replace(spec, extra_binds=[b for b in spec.extra_binds if b[1] == NODE_INSIDE])  # no relay
        await self._require_image(spec.image)
        proc = await asyncio.create_subprocess_exec(
            *run_argv(self.podman.podman, self.podman.flags, spec),
            cwd=handle.workspace, env={**agent_env(), **env},
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        self._exec_names[proc] = name
        return proc

    async def _kill(self, proc: asyncio.subprocess.Process) -> None:  # type: ignore[override]
        """Killing ``podman run`` leaves its container running (conmon holds it): remove the container too."""
        await LocalRuntime._kill(proc)
        name = self._exec_names.pop(proc, None)
        if name is not None:
            await self.podman.remove(name)
