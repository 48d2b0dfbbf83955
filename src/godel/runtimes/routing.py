"""Several runtimes behind the one ``Runtime`` contract, so that each agent can run in a runtime of its own.

The control plane holds one ``Runtimes``: every call on an agent's workspace or process goes to the runtime the
agent's handle names (``RuntimeHandle.runtime``, recorded on the agent as ``runtime_name``), and a new workspace to
the one its ``WorkspaceSpec.runtime`` names. Runtimes other than the server's default are built on first use, and
only those the operator enabled (``runtimes`` in the settings): a spawn cannot ask for a runtime, weaker or not,
that the server was not told to offer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from godel.core.ports import (
    ExecResult,
    FileAccess,
    LaunchSpec,
    OutputLine,
    OutputStreaming,
    ProcessStatus,
    Runtime,
    RuntimeCapabilities,
    RuntimeHandle,
    SnapshotCatalog,
    SnapshotInfo,
    WorkspaceSpec,
)
from godel.errors import FieldError, RuntimeUnavailableError, ValidationError


class Runtimes:
    """The runtimes of one server by name; itself a ``Runtime`` that routes each call by the handle's runtime."""

    def __init__(
        self, default: Runtime, *, enabled: Sequence[str] = (), build: Callable[[str], Runtime] | None = None
    ) -> None:
        """``default``: the runtime of an agent that names none. ``enabled``: the other runtimes a spawn may name,
        each made by ``build(name)`` when first needed."""
        self.default = default
        self.name = default.name
        self.enabled: tuple[str, ...] = tuple(dict.fromkeys([default.name, *enabled]))
        self._build = build
        self._built: dict[str, Runtime] = {default.name: default}

    def get(self, name: str | None) -> Runtime:
        """The runtime ``name`` (the default for None), built when first needed. Any runtime Godel knows is built for
        an agent that is already in it (its process must stay reachable, to be watched, paused and killed, after
        the operator stopped offering that runtime); new workspaces go through ``for_new``. RuntimeUnavailableError
        when it cannot be built on this machine (a tool missing)."""
        if not name or name == self.default.name:
            return self.default
        runtime = self._built.get(name)
        if runtime is not None:
            return runtime
        if self._build is None:
            raise RuntimeUnavailableError(f"the {name} runtime is not available here", details={"runtime": name})
        runtime = self._build(name)  # raises when the machine lacks what it needs; not cached, so a fix is seen
        self._built[name] = runtime
        return runtime

    def for_new(self, name: str | None) -> Runtime:
        """The runtime a new workspace is made in: only one this server offers (``enabled``); a runtime the
        operator stopped offering after the agent was accepted is unavailable (its chain may move on)."""
        if name and name not in self.enabled:
            raise RuntimeUnavailableError(
                f"the {name} runtime is not enabled on this server (enabled: {', '.join(self.enabled)}); an "
                "operator enables it with `runtimes` in godel.toml",
                details={"runtime": name, "enabled": list(self.enabled)},
            )
        return self.get(name)

    def check(self, name: str, field: str) -> None:
        """400 unless ``name`` is a runtime a spawn may ask for here."""
        if name not in self.enabled:
            raise ValidationError(
                f"runtime {name!r} is not enabled on this server (enabled: {', '.join(self.enabled)})",
                [FieldError(field, f"one of: {', '.join(self.enabled)}")],
            )

    def built(self) -> list[Runtime]:
        return list(self._built.values())

    def _of(self, handle: RuntimeHandle) -> Runtime:
        return self.get(handle.runtime)

    # ------------------------------------------------------------------------------------------ Runtime

    def capabilities(self) -> RuntimeCapabilities:
        return self.default.capabilities()

    async def prepare(self, spec: WorkspaceSpec) -> RuntimeHandle:
        return await self.for_new(spec.runtime).prepare(spec)

    async def start(self, handle: RuntimeHandle, launch: LaunchSpec) -> RuntimeHandle:
        return await self._of(handle).start(handle, launch)

    async def adopt(self, handle: RuntimeHandle) -> bool:
        return await self._of(handle).adopt(handle)

    async def terminate(self, handle: RuntimeHandle, *, grace: float = 5.0) -> None:
        await self._of(handle).terminate(handle, grace=grace)

    async def pause(self, handle: RuntimeHandle) -> None:
        await self._of(handle).pause(handle)

    async def resume(self, handle: RuntimeHandle) -> None:
        await self._of(handle).resume(handle)

    async def status(self, handle: RuntimeHandle) -> ProcessStatus:
        return await self._of(handle).status(handle)

    async def read_output(
        self, handle: RuntimeHandle, offsets: dict[str, int], *, final: bool = False
    ) -> tuple[list[OutputLine], dict[str, int]]:
        return await self._of(handle).read_output(handle, offsets, final=final)

    async def exec(self, handle: RuntimeHandle, argv: Sequence[str], *, timeout: float = 60.0) -> ExecResult:
        return await self._of(handle).exec(handle, argv, timeout=timeout)

    async def diff(self, handle: RuntimeHandle) -> str:
        return await self._of(handle).diff(handle)

    async def commits(self, handle: RuntimeHandle) -> list[str]:
        return await self._of(handle).commits(handle)

    async def snapshot(self, handle: RuntimeHandle, snapshot_id: str, *, include_ignored: bool = False) -> SnapshotInfo:
        return await self._of(handle).snapshot(handle, snapshot_id, include_ignored=include_ignored)

    async def restore(self, handle: RuntimeHandle, snapshot_id: str) -> None:
        await self._of(handle).restore(handle, snapshot_id)

    async def cleanup(self, handle: RuntimeHandle) -> None:
        await self._of(handle).cleanup(handle)

    async def discard(self, handle: RuntimeHandle) -> None:
        await self._of(handle).discard(handle)

    # ------------------------------------------------------------------- optional capabilities, routed

    def _files(self, handle: RuntimeHandle) -> FileAccess:
        runtime = self._of(handle)
        if not isinstance(runtime, FileAccess):
            raise _unsupported(runtime, "file access")
        return runtime

    async def read_file(self, handle: RuntimeHandle, path: str) -> bytes:
        return await self._files(handle).read_file(handle, path)

    async def write_file(self, handle: RuntimeHandle, path: str, data: bytes) -> None:
        await self._files(handle).write_file(handle, path, data)

    async def upload_dir(self, handle: RuntimeHandle, local: Path, path: str) -> None:
        await self._files(handle).upload_dir(handle, local, path)

    async def download_dir(self, handle: RuntimeHandle, path: str, local: Path) -> None:
        await self._files(handle).download_dir(handle, path, local)

    async def exec_stream(self, handle: RuntimeHandle, argv: Sequence[str]) -> AsyncIterator[OutputLine]:
        runtime = self._of(handle)
        if not isinstance(runtime, OutputStreaming):
            raise _unsupported(runtime, "streaming a command's output")
        async for line in runtime.exec_stream(handle, argv):
            yield line

    async def list_snapshots(self, handle: RuntimeHandle) -> list[SnapshotInfo]:
        runtime = self._of(handle)
        if not isinstance(runtime, SnapshotCatalog):
            raise _unsupported(runtime, "listing snapshots")
        return await runtime.list_snapshots(handle)

    async def delete_snapshot(self, handle: RuntimeHandle, snapshot_id: str) -> None:
        runtime = self._of(handle)
        if not isinstance(runtime, SnapshotCatalog):
            raise _unsupported(runtime, "deleting snapshots")
        await runtime.delete_snapshot(handle, snapshot_id)


def _unsupported(runtime: Runtime, what: str) -> ValidationError:
    return ValidationError(f"the {runtime.name} runtime does not support {what}", [FieldError("runtime", what)])
