"""``E2BRuntime``: each agent in its own E2B sandbox (a Firecracker microVM), through the official ``e2b`` SDK.

The shared remote lifecycle (``godel.runtimes.remote``) with a sandbox as the remote side:

* **start**: ``Sandbox.create`` (from ``e2b_template``, with the agent's id and launch id as metadata), ``in.tgz``
  and ``in.ready`` written with ``files.write``, then the entry started in the background with ``commands.run``
  (the launch's environment only: the E2B API key is the server's credential to E2B and never enters the sandbox).
  The entry runs as root inside the VM: E2B's default user has passwordless sudo, so the VM is the boundary.
* **output**: ``stdout.log`` and ``stderr.log`` in the sandbox, read with ``files.read`` whenever the supervisor
  reads output (the whole file each time: fine for agents' logs, costly for very chatty ones).
* **exit status**: the ``exit`` file the entry writes last; a command no longer listed without one is gone.
* **terminate**: TERM, then KILL, to the agent's process group (a foreground command); the result comes back as
  after any end; the sandbox is killed once the result is home.
* **pause**: ``Sandbox.pause`` (E2B snapshots the whole VM, memory included, so every process is frozen); resume
  by connecting again.
* **adopt**: by the sandbox id recorded in ``log_dir/remote.json`` (and in ``handle.extra["remote"]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from godel.core.ports import LaunchSpec, ProcessState, RuntimeCapabilities, RuntimeHandle
from godel.errors import RuntimeFailure
from godel.runtimes.local import workspace_options
from godel.runtimes.remote.base import Launched, RemoteRuntime, Seen, check_gateway
from godel.runtimes.remote.entry import TRANSFER_DIR, entry_argv

if TYPE_CHECKING:
    from godel.settings import Settings

T = TypeVar("T")
PAUSED = "paused"  # a marker in log_dir: this server paused the sandbox (a paused sandbox's agent cannot be asked)
AGENT_META, RUN_META = "godel-agent", "godel-run"


class E2BRuntime(RemoteRuntime):
    name = "e2b"

    def __init__(
        self,
        worktrees_root: Path | None = None,
        logs_root: Path | None = None,
        *,
        api_key: str,
        template: str = "base",
        domain: str | None = None,
        api_url: str | None = None,
        sandbox_url: str | None = None,
        timeout: int = 3600,
        gateway_url: str | None = None,
        workspace_mode: str = "auto",
        workspace_cache_size: int = 16,
    ) -> None:
        """``api_key``: the E2B key (kept in memory only, never logged, never in a sandbox). ``api_url`` and
        ``sandbox_url``: a self-hosted E2B (or a test's fake); HTTP/1.1 is used where they are plain http (HTTP/2
        needs TLS to be negotiated). ``gateway_url``: where agents reach the gateway; loopback is refused."""
        check_gateway(self.name, gateway_url)
        if not api_key:
            raise RuntimeFailure("the e2b runtime needs an E2B API key", details={"fix": "set E2B_API_KEY"})
        super().__init__(
            worktrees_root, logs_root, workspace_mode=workspace_mode, workspace_cache_size=workspace_cache_size
        )
        self.template, self.timeout = template, timeout
        plain = any(u and u.startswith("http://") for u in (api_url, sandbox_url))
        self._opts: dict[str, Any] = {
            k: v
            for k, v in {
                "domain": domain, "api_url": api_url, "sandbox_url": sandbox_url,
                "http_version": "1.1" if plain else None,
            }.items()
            if v is not None
        }  # fmt: skip
        self.__key = api_key
        self._sandboxes: dict[str, Any] = {}

    def __repr__(self) -> str:  # never the key
        return f"E2BRuntime(template={self.template!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> E2BRuntime:
        import os

        key = os.environ.get(settings.e2b_api_key_env, "")
        if not key:
            raise RuntimeFailure(
                f"the e2b runtime needs an E2B API key in ${settings.e2b_api_key_env}",
                details={"fix": f"export {settings.e2b_api_key_env}=… (or set e2b_api_key_env)"},
            )
        return cls(
            worktrees_root=settings.worktrees_dir, logs_root=settings.logs_dir, api_key=key,
            template=settings.e2b_template, domain=settings.e2b_domain, api_url=settings.e2b_api_url,
            sandbox_url=settings.e2b_sandbox_url, timeout=settings.e2b_timeout,
            gateway_url=settings.agent_gateway_url if settings.use_gateway else None, **workspace_options(settings),
        )  # fmt: skip

    def capabilities(self) -> RuntimeCapabilities:
        return RuntimeCapabilities(
            name=self.name, isolation="vm", pause=True, snapshot="git-ref", workspace=self._workspaces.mode
        )

    # ------------------------------------------------------------------------------------------- the SDK

    def _params(self) -> dict[str, Any]:
        return {"api_key": self.__key, **self._opts}

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run an SDK call in a thread; its failures become a RuntimeFailure naming what was attempted."""
        from e2b.exceptions import SandboxException

        try:
            return await asyncio.to_thread(fn)
        except SandboxException as exc:
            status = getattr(exc, "status_code", None)
            raise RuntimeFailure(
                f"E2B refused to {what}: {exc}", details={"status": status, "error": type(exc).__name__}
            ) from exc
        except OSError as exc:
            raise RuntimeFailure(f"cannot reach E2B to {what}: {exc}", details={"error": str(exc)}) from exc

    def _sandbox(self, sandbox_id: str) -> Any:
        """The SDK's object for a sandbox (connected once per server: connecting also resumes a paused one)."""
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None:
            from e2b import Sandbox

            sandbox = Sandbox.connect(sandbox_id, **self._params())
            self._sandboxes[sandbox_id] = sandbox
        return sandbox

    async def _read(self, record: Launched, name: str) -> bytes | None:
        from e2b.exceptions import NotFoundException

        def read() -> bytes | None:
            try:
                return bytes(self._sandbox(record.id).files.read(f"{TRANSFER_DIR}/{name}", format="bytes"))
            except NotFoundException as exc:
                if "sandbox" in type(exc).__name__.lower():
                    raise
                return None

        return await self._call(f"read {name} from sandbox {record.id}", read)

    # ------------------------------------------------------------------------------------------- back-end

    def _new_record(self, handle: RuntimeHandle, run: str, started: float) -> Launched:
        return Launched(agent=handle.agent_id, id="", run=run, started=started, pid=0)

    async def _launch(self, handle: RuntimeHandle, launch: LaunchSpec, payload: bytes, record: Launched) -> Launched:
        from e2b import Sandbox

        meta = {AGENT_META: handle.agent_id, RUN_META: record.run}
        sandbox = await self._call(
            "create a sandbox",
            lambda: Sandbox.create(self.template, timeout=self.timeout, metadata=meta, **self._params()),
        )
        self._sandboxes[sandbox.sandbox_id] = sandbox
        record = dataclasses.replace(record, id=sandbox.sandbox_id)
        self._save(handle, record)  # the sandbox exists from here: a failure below deletes it
        cwd = handle.workspace / launch.cwd if launch.cwd else handle.workspace
        argv = entry_argv(
            str(handle.workspace), handle.branch, str(cwd), f"{TRANSFER_DIR}/stdout.log", list(launch.argv)
        )

        def deliver() -> int:
            sandbox.files.write(f"{TRANSFER_DIR}/in.tgz", payload, user="root", use_octet_stream=True)
            sandbox.files.write(f"{TRANSFER_DIR}/in.ready", b"", user="root", use_octet_stream=True)
            command = sandbox.commands.run(
                shlex.join(argv), background=True, envs=dict(launch.env), user="root", cwd="/", timeout=0
            )
            pid: int = command.pid
            command.disconnect()  # the command goes on; its output is read from its files
            return pid

        pid = await self._call(f"start the agent in sandbox {sandbox.sandbox_id}", deliver)
        return dataclasses.replace(record, pid=pid)

    async def _observe(self, handle: RuntimeHandle, record: Launched) -> Seen:
        if (handle.log_dir / PAUSED).exists():
            return Seen(ProcessState.STOPPED)
        try:
            code = await self._read(record, "exit")
            if code is not None:
                return Seen(ProcessState.EXITED, _code(code))
            pids = await self._call(
                "list the sandbox's commands", lambda: [p.pid for p in self._sandbox(record.id).commands.list()]
            )
            if record.pid in pids:
                return Seen(ProcessState.RUNNING)
            code = await self._read(record, "exit")  # it may have ended between the two looks
            return Seen(ProcessState.EXITED, _code(code)) if code is not None else Seen(ProcessState.GONE)
        except RuntimeFailure as exc:
            if exc.details.get("status") == 404 or "NotFound" in str(exc.details.get("error")):
                return Seen(ProcessState.GONE)  # the sandbox is gone (killed, or its timeout passed)
            raise

    async def _collect(self, record: Launched, *, final: bool) -> tuple[bytes, bytes | None, bytes | None]:
        stdout = await self._read(record, "stdout.log") or b""
        stderr = await self._read(record, "stderr.log") or b""
        packed = await self._read(record, "out.tgz") if final else None
        return stdout, stderr, packed

    async def _signal(self, record: Launched, signal: str) -> None:
        from e2b import CommandExitException

        script = f"p=$(cat {TRANSFER_DIR}/agent.pid 2>/dev/null) && kill -{shlex.quote(signal)} -$p"

        def send() -> None:
            with contextlib.suppress(CommandExitException):  # nothing left to signal
                self._sandbox(record.id).commands.run(script, user="root", timeout=30)

        await self._call(f"signal the agent in sandbox {record.id}", send)

    async def _delete(self, record: Launched) -> None:
        from e2b import Sandbox

        if not record.id:
            return
        self._sandboxes.pop(record.id, None)
        await self._call(f"kill sandbox {record.id}", lambda: Sandbox.kill(record.id, **self._params()))

    async def _before_signal(self, handle: RuntimeHandle, record: Launched) -> None:
        await self._resume_sandbox(record, handle.log_dir)

    # ---------------------------------------------------------------------------------------------- pause

    async def pause(self, handle: RuntimeHandle) -> None:
        record = self._owned(handle)
        if record is None or (await self.status(handle)).state is not ProcessState.RUNNING:
            return
        await self._call(f"pause sandbox {record.id}", lambda: self._sandbox(record.id).pause())
        self._sandboxes.pop(record.id, None)  # connecting again is what resumes it
        (handle.log_dir / PAUSED).touch()

    async def resume(self, handle: RuntimeHandle) -> None:
        record = self._owned(handle)
        if record is not None:
            await self._resume_sandbox(record, handle.log_dir)

    async def _resume_sandbox(self, record: Launched, log_dir: Path) -> None:
        marker = log_dir / PAUSED
        if marker.exists():
            await self._call(f"resume sandbox {record.id}", lambda: self._sandbox(record.id))
            marker.unlink(missing_ok=True)


def _code(text: bytes) -> int | None:
    stripped = text.strip()
    return int(stripped) if stripped.lstrip(b"-").isdigit() else None
