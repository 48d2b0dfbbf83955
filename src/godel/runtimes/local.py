"""The local runtime: a workspace per agent, the agent as a plain process on this machine.

This is the default back-end of the embedded mode. It isolates the filesystem view only (each agent has its
own workspace, private git directory and branch; it runs as the server's user), and in exchange it needs nothing
but git and a POSIX shell. The pieces live in their own modules and this class composes them into the
``Runtime`` protocol:

* ``workspaces`` creates and removes workspaces, all-or-nothing (an overlay of a cached checkout when the server
  may mount one, a plain checkout otherwise), each with a private git directory whose branch Godel brings back
  into the user's repository, and runs Godel's own git on them with nothing the agent wrote able to run;
* ``processes`` launches agents so they survive a server restart, and observes, signals and adopts them;
* ``snapshots`` keeps snapshots as commits under ``refs/godel/snapshots/``;
* ``paths`` confines every client-supplied path to the workspace.

Git always runs as an asyncio subprocess; file copies and /proc scans run in a worker thread, so a thousand
agents can be watched from one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from godel.core.ports import (
    ExecResult,
    LaunchSpec,
    OutputLine,
    ProcessState,
    ProcessStatus,
    RuntimeCapabilities,
    RuntimeHandle,
    SnapshotInfo,
    WorkspaceSpec,
)
from godel.errors import FieldError, GitError, GodelError, NotFoundError, ValidationError
from godel.runtimes import snapshots
from godel.runtimes.lines import LineSplitter, StreamName, read_output
from godel.runtimes.paths import confine
from godel.runtimes.processes import LocalProcesses, agent_env, find_launch
from godel.runtimes.workspaces import changes, gitdir
from godel.runtimes.workspaces.gitdir import AgentDirs, WorkspaceMeta
from godel.runtimes.workspaces.manager import Workspaces, git_common_dir

if TYPE_CHECKING:
    from godel.runtimes.cgroups import Cgroups
    from godel.settings import Settings

log = structlog.get_logger("godel.runtime")


class LocalRuntime:
    name = "local"

    def __init__(
        self,
        worktrees_root: Path | None = None,
        logs_root: Path | None = None,
        *,
        workspace_mode: str = "auto",
        workspace_cache_size: int = 16,
        cgroups: Cgroups | None = None,
    ) -> None:
        """``workspace_mode``: "overlay" (fail when overlayfs cannot be mounted), "checkout" (plain checkouts) or
        "auto" (overlay where possible); ``workspace_cache_size``: cached base checkouts kept for overlays.
        ``cgroups``: give each agent cgroups of its own (limits, pause by the freezer, a kill nothing escapes,
        accounting). The local runtime goes without by default: it confines nothing, and refuses limits."""
        if worktrees_root is None or logs_root is None:
            from godel.settings import Settings  # only when not told: the environment is read at the edge

            settings = Settings()
            worktrees_root = worktrees_root or settings.worktrees_dir
            logs_root = logs_root or settings.logs_dir
        self.worktrees_root = worktrees_root
        self.logs_root = logs_root
        self._workspaces = Workspaces(worktrees_root, mode=workspace_mode, cache_size=workspace_cache_size)
        self._processes = LocalProcesses(cgroups, name=self.name)

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalRuntime:
        return cls(worktrees_root=settings.worktrees_dir, logs_root=settings.logs_dir, **workspace_options(settings))

    def capabilities(self) -> RuntimeCapabilities:
        return RuntimeCapabilities(
            name=self.name, isolation="worktree", pause=True, snapshot="git-ref", workspace=self._workspaces.mode,
            resource_limits=self.enforces(), pause_freezes=self.freezes(), accounting=bool(self.enforces()),
        )  # fmt: skip

    def enforces(self) -> tuple[str, ...]:
        """The resource limits this runtime enforces here (``godel.core.limits`` kinds)."""
        cgroups = self._processes.cgroups
        return cgroups.enforces() if cgroups is not None else ()

    def freezes(self) -> bool:
        """Whether pause is the cgroup freezer here (else SIGSTOP to the process tree, which a daemon that
        double-forked out of the tree escapes)."""
        cgroups = self._processes.cgroups
        return cgroups is not None and "freezer" in cgroups.controllers

    # -------------------------------------------------------------------------------------- lifecycle

    async def prepare(self, spec: WorkspaceSpec) -> RuntimeHandle:
        ws = await self._workspaces.create(spec)
        return RuntimeHandle(
            agent_id=spec.agent_id,
            runtime=self.name,
            workspace=ws.path,
            repo=ws.repo,
            branch=ws.branch,
            base_commit=ws.base_commit,
            log_dir=self.logs_root / spec.agent_id,
            extra={"created_branch": ws.created_branch},
        )

    async def start(self, handle: RuntimeHandle, launch: LaunchSpec) -> RuntimeHandle:
        await self._workspaces.ready(handle)  # mounted again after a reboot, for a relaunch
        pid, started = await self._processes.start(handle, launch)
        return dataclasses.replace(handle, pid=pid, pid_started=started)

    async def spawn(self, spec: WorkspaceSpec, launch: LaunchSpec) -> RuntimeHandle:
        handle = await self.prepare(spec)
        try:
            return await self.start(handle, launch)
        except BaseException:  # nothing ran in it: take back the workspace and a branch made for it
            await self.discard(handle)
            raise

    async def discard(self, handle: RuntimeHandle) -> None:
        """Undo ``prepare`` for a workspace nothing ran in: the workspace, and its branch when ``prepare`` made it
        (an existing branch, with a retry's commits or the client's, stays). Best effort; never raises."""
        branch = handle.branch if handle.extra.get("created_branch") else None
        await self._workspaces.discard(handle.repo, handle.workspace, branch, handle.agent_id)

    async def adopt(self, handle: RuntimeHandle) -> bool:
        """True when the process still runs and is the recorded one, or when it finished while no server was
        watching (its exit status and output are on disk); ``status`` then reports what happened. A handle
        without a pid (the server died between launching and recording it) is completed from what the wrapper
        left (``find_launch``): only a process of the launch named in ``handle.extra["run"]`` is adopted."""
        if handle.pid is None:
            found = find_launch(handle)
            if found is None:
                return False
            handle.pid, handle.pid_started = found
        return self._processes.adopt(handle)

    async def terminate(self, handle: RuntimeHandle, *, grace: float = 5.0) -> None:
        await self._processes.terminate(handle, grace)

    async def pause(self, handle: RuntimeHandle) -> None:
        await self._processes.pause(handle)

    async def resume(self, handle: RuntimeHandle) -> None:
        await self._processes.resume(handle)

    async def status(self, handle: RuntimeHandle) -> ProcessStatus:
        """Once the run has ended, with its accounting (where it has cgroups, which are then removed)."""
        return await self._processes.settle(handle, self._processes.status(handle))

    async def wait_for_state(
        self,
        handle: RuntimeHandle,
        states: set[ProcessState],
        timeout: float,
    ) -> ProcessStatus:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.005
        while True:
            st = await self.status(handle)  # a subclass's own view (a paused container reads stopped)
            if st.state in states:
                return st
            if loop.time() >= deadline:
                raise TimeoutError(f"agent {handle.agent_id} is {st.state}, not {sorted(states)}, after {timeout}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def read_output(
        self, handle: RuntimeHandle, offsets: dict[str, int], *, final: bool = False
    ) -> tuple[list[OutputLine], dict[str, int]]:
        # A stat per stream when nothing changed, at most 1 MiB read otherwise: fine on the loop.
        return read_output(handle.log_dir, offsets, final)

    async def cleanup(self, handle: RuntimeHandle) -> None:
        """Stop what still runs, snapshot a dirty workspace as ``final-<agent-id>`` (its id is left in
        ``handle.extra["final_snapshot"]``), bring the branch back, then remove the workspace and the agent's git
        directory. The branch is kept. When the branch cannot be brought back (an object the agent made fails
        the check), nothing is removed, and that is logged: the agent's commits exist nowhere else."""
        if self._processes.status(handle).state in (ProcessState.RUNNING, ProcessState.STOPPED):
            await self.terminate(handle)
        await self.status(handle)  # settles what the run left in its cgroups
        await self._processes.release(handle)
        try:
            dirs, meta = await self._open(handle)
        except GodelError:  # a workspace this runtime did not make, or one gone already: nothing to bring back
            await self._workspaces.remove(handle)
            return
        try:
            head = await gitdir.resolve(dirs, "HEAD")
            await gitdir.bring_back(dirs, meta, also=(head,) if head else ())
        except GitError as exc:  # fail closed: the agent's commits exist nowhere else
            log.warning("workspace kept: its branch could not be brought back into the repository",
                        agent=handle.agent_id, workspace=str(handle.workspace), gitdir=str(dirs.git),
                        error=exc.stderr.strip()[-500:])  # fmt: skip
            return
        try:
            if head and await changes.is_dirty(dirs, meta, handle.workspace, head):
                info = await snapshots.take(handle, await snapshots.free_final_id(handle), dirs, meta)
                handle.extra["final_snapshot"] = info.id
        except GodelError as exc:  # a broken workspace must not keep the agent from moving on
            log.warning("workspace not snapshotted before removal", agent=handle.agent_id, error=exc.message)
        await self._workspaces.remove(handle)

    async def _open(self, handle: RuntimeHandle) -> tuple[AgentDirs, WorkspaceMeta]:
        """The workspace's state, its overlay mounted; NotFoundError when this runtime has no workspace for it."""
        meta = await self._workspaces.ready(handle)
        if meta is None or not handle.workspace.is_dir():
            raise NotFoundError(
                f"the workspace of agent {handle.agent_id} is gone", details={"workspace": str(handle.workspace)}
            )
        return self._workspaces.dirs(handle.agent_id), meta

    # ------------------------------------------------------------------------------------------- exec

    async def _spawn_exec(self, handle: RuntimeHandle, argv: Sequence[str]) -> asyncio.subprocess.Process:
        if not argv:
            raise ValidationError("empty command", [FieldError("argv", "must not be empty")])
        if not os.path.isdir(handle.workspace):
            raise NotFoundError(
                f"the workspace of agent {handle.agent_id} is gone",
                details={"workspace": str(handle.workspace)},
            )
        return await asyncio.create_subprocess_exec(
            *argv,
            cwd=handle.workspace,
            env=agent_env({"GODEL_WORKSPACE": str(handle.workspace)}),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a timeout kills the command's whole group
        )

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def exec(
        self,
        handle: RuntimeHandle,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
    ) -> ExecResult:
        """Run a command in the workspace. A missing program gives 127, like a shell; TimeoutError (after
        killing the command) when it outlives ``timeout``."""
        try:
            proc = await self._spawn_exec(handle, argv)
        except (FileNotFoundError, PermissionError) as exc:
            return ExecResult(127 if isinstance(exc, FileNotFoundError) else 126, "", f"{argv[0]}: {exc}\n")
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except BaseException as exc:
            await self._kill(proc)
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"{argv[0]} did not finish within {timeout:g}s") from exc
            raise
        code = proc.returncode if proc.returncode is not None else -1
        return ExecResult(code, out.decode("utf-8", errors="replace"), err.decode("utf-8", errors="replace"))

    async def exec_stream(self, handle: RuntimeHandle, argv: Sequence[str]) -> AsyncIterator[OutputLine]:
        """Lines of a command's stdout and stderr as they come; closing the iterator early kills it."""
        try:
            proc = await self._spawn_exec(handle, argv)
        except (FileNotFoundError, PermissionError) as exc:  # no exit status to carry a 127 here
            raise ValidationError(f"cannot run {argv[0]!r}: {exc}", [FieldError("argv", str(exc))]) from exc
        # Bounded, so a slow consumer slows the readers instead of growing memory.
        queue: asyncio.Queue[OutputLine | None] = asyncio.Queue(maxsize=1000)

        async def pump(name: StreamName, reader: asyncio.StreamReader | None) -> None:
            splitter = LineSplitter()
            while reader is not None and (chunk := await reader.read(65536)):
                for text in splitter.feed(chunk):
                    await queue.put(OutputLine(name, text))
            for text in splitter.flush():
                await queue.put(OutputLine(name, text))
            await queue.put(None)

        # One reader per pipe so neither can fill up and stall the command; both end with the command.
        pumps = [
            asyncio.create_task(pump("stdout", proc.stdout), name=f"exec-stream-stdout-{proc.pid}"),
            asyncio.create_task(pump("stderr", proc.stderr), name=f"exec-stream-stderr-{proc.pid}"),
        ]
        try:
            ended = 0
            while ended < len(pumps):
                item = await queue.get()
                if item is None:
                    ended += 1
                else:
                    yield item
            await proc.wait()
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            await self._kill(proc)

    # ------------------------------------------------------------------------------------------ files

    async def read_file(self, handle: RuntimeHandle, path: str) -> bytes:
        target = confine(handle.workspace, path)
        try:
            return await asyncio.to_thread(target.read_bytes)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotFoundError(f"no file {path!r} in the workspace", details={"path": path}) from exc
        except IsADirectoryError as exc:
            raise ValidationError(f"{path!r} is a directory", [FieldError("path", "is a directory")]) from exc

    async def write_file(self, handle: RuntimeHandle, path: str, data: bytes) -> None:
        target = confine(handle.workspace, path)
        if target.is_dir():
            raise ValidationError(f"{path!r} is a directory", [FieldError("path", "is a directory")])
        await asyncio.to_thread(_write, target, data)

    async def upload_dir(self, handle: RuntimeHandle, local: Path, path: str) -> None:
        """Copy a local directory into the workspace at ``path``; symlinks are copied as links. Every
        destination is confined on its own, so an existing symlink in the workspace cannot redirect it."""
        if not local.is_dir():
            raise ValidationError(f"{local} is not a directory", [FieldError("local", "not a directory")])
        confine(handle.workspace, path)
        await asyncio.to_thread(_upload, handle.workspace, local, path)

    async def download_dir(self, handle: RuntimeHandle, path: str, local: Path) -> None:
        """Copy a workspace directory out; symlinks are copied as links, never followed (no content from
        outside the workspace leaves through them)."""
        source = confine(handle.workspace, path)
        if not source.is_dir():
            raise NotFoundError(f"no directory {path!r} in the workspace", details={"path": path})
        await asyncio.to_thread(shutil.copytree, source, local, symlinks=True, dirs_exist_ok=True)

    # ------------------------------------------------------------------------------- changes, snapshots

    async def diff(self, handle: RuntimeHandle) -> str:
        """The workspace against its base commit, untracked files included; from the branch once it is gone."""
        meta = await self._workspaces.ready(handle)
        if meta is not None and handle.workspace.is_dir():
            dirs = self._workspaces.dirs(handle.agent_id)
            return await changes.diff(dirs, meta, handle.workspace, handle.base_commit)
        return await changes.branch_diff(await git_common_dir(handle.repo), handle.base_commit, handle.branch)

    async def commits(self, handle: RuntimeHandle) -> list[str]:
        """Commits on the agent's branch since its base, oldest first, the branch brought back first."""
        meta = self._workspaces.meta(handle.agent_id)
        if meta is not None:
            await gitdir.bring_back_quietly(self._workspaces.dirs(handle.agent_id), meta, handle.agent_id)
            common = meta.git_common
        else:
            common = await git_common_dir(handle.repo)
        return await changes.commits(common, handle.base_commit, handle.branch)

    async def snapshot(self, handle: RuntimeHandle, snapshot_id: str, *, include_ignored: bool = False) -> SnapshotInfo:
        return await snapshots.take(handle, snapshot_id, *await self._open(handle), ignored=include_ignored)

    async def restore(self, handle: RuntimeHandle, snapshot_id: str) -> None:
        await snapshots.restore(handle, snapshot_id, *await self._open(handle))

    async def list_snapshots(self, handle: RuntimeHandle) -> list[SnapshotInfo]:
        return await snapshots.list_for(handle)

    async def delete_snapshot(self, handle: RuntimeHandle, snapshot_id: str) -> None:
        await snapshots.delete(handle, snapshot_id)

    # ------------------------------------------------------------------------- git on the workspace

    async def commit_all(self, handle: RuntimeHandle, message: str | None) -> bool:
        """Commit what the workspace holds on the agent's branch (``message`` None: conclude a merge in progress
        that has no unmerged path); True when a commit was made. Git run by Godel, nothing the agent wrote able to
        run a program; the branch is brought back."""
        return await changes.commit_all(*await self._open(handle), handle.workspace, message)

    async def bring_back_branches(self, repo: Path, branches: Sequence[str]) -> None:
        """Bring the named branches of this repository's live workspaces back into it (before a merge reads
        them). A branch that cannot be brought back is logged and left where it is."""
        wanted = set(branches)
        common = await git_common_dir(repo)
        for agent_id, meta in await asyncio.to_thread(self._workspaces.live_metas):
            if meta.branch in wanted and meta.git_common == common:
                await gitdir.bring_back_quietly(self._workspaces.dirs(agent_id), meta, agent_id)


def workspace_options(settings: Settings) -> dict[str, Any]:
    """The workspace settings a runtime built on this one passes on (``from_settings``)."""
    return {"workspace_mode": settings.workspace_mode, "workspace_cache_size": settings.workspace_cache_size}


def _write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def _upload(workspace: Path, local: Path, path: str) -> None:
    prefix = Path(path)
    for dirpath, dirnames, filenames in os.walk(local):  # does not descend into symlinked directories
        base = Path(dirpath)
        for name in [*dirnames, *filenames]:
            src = base / name
            rel = str(prefix / src.relative_to(local))
            if src.is_symlink():
                parent = confine(workspace, str(Path(rel).parent))
                parent.mkdir(parents=True, exist_ok=True)
                link = parent / name
                if link.is_symlink() or link.is_file():
                    link.unlink()
                os.symlink(os.readlink(src), link)
            elif src.is_dir():
                confine(workspace, rel).mkdir(parents=True, exist_ok=True)
            else:
                dest = confine(workspace, rel)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)
