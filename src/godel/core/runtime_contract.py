"""The runtime contract: where an agent's workspace and process live (``Runtime``), the optional capabilities some
runtimes add (``FileAccess``, ``OutputStreaming``, ``SnapshotCatalog``, ``CommandConfinement``, ``WorkspaceGit``),
and the data that crosses it. Every runtime passes the one conformance suite (tests/conformance/test_runtime.py).
Re-exported by ``godel.core.ports`` with the other seams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from godel.core.limits import ResourceLimits, ResourceUsage


@dataclass(frozen=True)
class RuntimeCapabilities:
    name: str
    isolation: str  # "worktree" (filesystem only), "namespace", "container", "vm", "remote"
    pause: bool
    snapshot: str  # "git-ref", "filesystem", "vm-memory", "none"
    resource_limits: tuple[str, ...] = ()  # the limits it enforces: "memory", "cpu", "pids" (godel.core.limits)
    network_isolation: bool = False
    workspace: str = ""  # how workspaces are made: "overlay" (constant time), "checkout" (in proportion to files)
    pause_freezes: bool = False  # pause stops every process of the agent, daemons that left its tree included
    accounting: bool = False  # the agent's CPU time and peak memory are read back (ProcessStatus.usage)


@dataclass
class WorkspaceSpec:
    agent_id: str
    repo: Path
    base_ref: str = "HEAD"
    branch: str | None = None  # default godel/<agent-id>
    from_snapshot: str | None = None  # fork: the snapshot id to start the working tree from
    setup: str | None = None
    setup_timeout: float = 600.0
    runtime: str | None = None  # the runtime to make it in (``Runtimes`` routes by it); None: the default


@dataclass
class RuntimeHandle:
    """Everything needed to find an agent's workspace and process again, also after a server restart."""

    agent_id: str
    runtime: str
    workspace: Path
    repo: Path
    branch: str
    base_commit: str
    log_dir: Path
    pid: int | None = None
    pid_started: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ``RuntimeHandle.extra[RUN_KEY]``: the id of the launch a handle is for (the supervisor uses the run's session id).
# A runtime records it with the process it starts, so that ``adopt`` after a restart trusts only that launch.
RUN_KEY = "run"


@dataclass
class LaunchSpec:
    """What an adapter asks the runtime to run. stdin is always closed (agents run headless)."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to a minimal inherited environment
    cwd: Path | None = None  # default: the workspace
    files: dict[Path, str] = field(default_factory=dict)  # config files to write before launch (absolute)
    # "AGENT-ID:TOKEN": the credential a runtime that confines the network gives the agent for Godel's egress proxy
    # (``HTTP_PROXY``); a runtime that leaves the network open ignores it.
    egress: str | None = None
    # Enforced by the runtime or refused (AgentSpawnError naming what is missing): never run without them.
    limits: ResourceLimits | None = None


class ProcessState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"  # paused
    EXITED = "exited"  # ended; exit_code known
    GONE = "gone"  # not there and no recorded exit (killed with the server, pid reused…)


@dataclass(frozen=True)
class ProcessStatus:
    state: ProcessState
    exit_code: int | None = None
    usage: ResourceUsage | None = None  # once ended, where the runtime accounts for its processes (cgroups)


@dataclass(frozen=True)
class OutputLine:
    stream: Literal["stdout", "stderr"]
    text: str


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class SnapshotInfo:
    id: str
    ref: str
    commit: str
    parent_commit: str
    created_at: datetime


@runtime_checkable
class Runtime(Protocol):
    """Where an agent runs: the contract every runtime (a worktree on this machine, a sandbox, a container, a
    remote sandbox) meets, cut to what the control plane calls. Seed 000's RuntimeProvider, split so the supervisor
    can record each phase: ``prepare`` creates the workspace (initializing → spawning), ``start`` launches the
    process (spawning → executing). What only some runtimes can do is in the optional protocols below
    (``FileAccess``, ``OutputStreaming``, ``SnapshotCatalog``), found with ``isinstance``."""

    name: str

    def capabilities(self) -> RuntimeCapabilities: ...
    async def prepare(self, spec: WorkspaceSpec) -> RuntimeHandle: ...
    async def start(self, handle: RuntimeHandle, launch: LaunchSpec) -> RuntimeHandle: ...
    async def adopt(self, handle: RuntimeHandle) -> bool:
        """True when the recorded process still runs (and is the same process) or its exit is recorded; the
        runtime then watches it. A handle without a pid is completed from the runtime's own record of the launch
        named by ``handle.extra[RUN_KEY]`` (the pid is filled in when that launch is found, even if it is gone)."""

    async def terminate(self, handle: RuntimeHandle, *, grace: float = 5.0) -> None: ...
    async def pause(self, handle: RuntimeHandle) -> None: ...
    async def resume(self, handle: RuntimeHandle) -> None: ...
    async def status(self, handle: RuntimeHandle) -> ProcessStatus: ...
    async def read_output(
        self, handle: RuntimeHandle, offsets: dict[str, int], *, final: bool = False
    ) -> tuple[list[OutputLine], dict[str, int]]:
        """Complete lines written since ``offsets`` (bytes per stream) and the new offsets. With ``final``, a
        last line without a newline is returned too."""

    async def exec(self, handle: RuntimeHandle, argv: Sequence[str], *, timeout: float = 60.0) -> ExecResult: ...
    async def diff(self, handle: RuntimeHandle) -> str:
        """The workspace's changes against its base commit (committed, staged, unstaged and untracked)."""

    async def commits(self, handle: RuntimeHandle) -> list[str]: ...
    async def snapshot(self, handle: RuntimeHandle, snapshot_id: str, *, include_ignored: bool = False) -> SnapshotInfo:
        """The whole working tree (tracked changes and untracked files; ignored ones too with ``include_ignored``:
        build output, ``node_modules``), as a commit the user's repository keeps."""

    async def restore(self, handle: RuntimeHandle, snapshot_id: str) -> None: ...
    async def cleanup(self, handle: RuntimeHandle) -> None:
        """Remove the workspace (a dirty one is snapshotted first); the branch is kept."""

    async def discard(self, handle: RuntimeHandle) -> None:
        """Undo ``prepare`` (``handle`` as it returned it) for a workspace no process ever ran in: the workspace,
        and the branch when ``prepare`` created it. Never raises."""


@runtime_checkable
class WorkspaceGit(Protocol):
    """Optional: git on an agent's workspace run by Godel itself (on the host), with nothing the agent wrote able to
    make it run a program, and the agent's branch brought back into the user's repository. A runtime without it is
    driven through ``exec`` inside its own isolation."""

    async def commit_all(self, handle: RuntimeHandle, message: str | None) -> bool:
        """Commit everything on the agent's branch (``None``: conclude a merge in progress that has no unmerged
        path); True when a commit was made."""

    async def bring_back_branches(self, repo: Path, branches: Sequence[str]) -> None:
        """Bring these branches of ``repo``'s live workspaces back into ``repo`` (before a merge reads them)."""


@runtime_checkable
class FileAccess(Protocol):
    """Optional: files in and out of a workspace (paths confined to it)."""

    async def read_file(self, handle: RuntimeHandle, path: str) -> bytes: ...
    async def write_file(self, handle: RuntimeHandle, path: str, data: bytes) -> None: ...
    async def upload_dir(self, handle: RuntimeHandle, local: Path, path: str) -> None: ...
    async def download_dir(self, handle: RuntimeHandle, path: str, local: Path) -> None: ...


@runtime_checkable
class OutputStreaming(Protocol):
    """Optional: a command's output line by line as it runs."""

    def exec_stream(self, handle: RuntimeHandle, argv: Sequence[str]) -> AsyncIterator[OutputLine]: ...


@runtime_checkable
class CommandConfinement(Protocol):
    """Optional: the argv that runs a command of Godel's own on a tree agents wrote (a merge gate, a conflict
    resolver) as confined as an agent: no network, the system read-only, nothing writable but ``writable``."""

    def confine(
        self, argv: Sequence[str], cwd: Path, *, writable: Sequence[Path], readonly: Sequence[Path] = ()
    ) -> list[str]: ...


@runtime_checkable
class SnapshotCatalog(Protocol):
    """Optional: the snapshots of a workspace, listed and deleted."""

    async def list_snapshots(self, handle: RuntimeHandle) -> list[SnapshotInfo]: ...
    async def delete_snapshot(self, handle: RuntimeHandle, snapshot_id: str) -> None: ...
