"""Agent workspaces as git worktrees.

Each agent works in its own ``git worktree`` on its own branch (``godel/<agent-id>``), created at a resolved
base commit under a worktrees root (``$GODEL_HOME/worktrees/<agent-id>`` by default). A worktree shares the
repository's object store, so creating one costs a checkout and nothing more, and the agent's commits land
directly in the user's repository, on a branch, ready for review or merging.

Creating a workspace is all-or-nothing: the checkout, the fork from a snapshot, the copy of the files listed
in ``.worktreeinclude`` (untracked things such as ``.env`` that a fresh checkout lacks) and the setup command
either all succeed, or everything created so far (directory, worktree registration, branch) is removed.
Nothing that existed before is ever removed. An existing directory is refused. An existing branch (a retry
of the same agent, whose branch was kept, or a branch the client named) is checked out as it is, so earlier
commits on it are built upon, never discarded; forking onto an existing branch is refused.

Removing a workspace never deletes its branch; the caller snapshots a dirty one first, so no work is lost. Only
``discard``, the undo of a creation nothing ran in (a rollback, a launch killed before its process started), deletes
a branch, and only one that creation made.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

from godel.core.ids import branch_for
from godel.core.ports import RuntimeHandle, WorkspaceSpec
from godel.errors import AgentSpawnError, ConflictError, FieldError, GitError, ValidationError
from godel.runtimes.git import git, git_bytes, ref_exists, repo_root, resolve_commit, tree_of_workdir
from godel.runtimes.paths import create_inside
from godel.runtimes.processes import agent_env
from godel.runtimes.snapshots import lay_tree, snapshot_commit

INCLUDE_FILE = ".worktreeinclude"
_GODEL_BRANCH = re.compile(r"^godel/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")  # always valid
_FULL_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # a full SHA-1 or SHA-256 object name
_OUTPUT_TAIL = 8 * 1024  # bytes of setup output kept for the error report
T = TypeVar("T")


@dataclass(frozen=True)
class Workspace:
    path: Path
    repo: Path
    branch: str
    base_commit: str
    created_branch: bool  # False when an existing branch was checked out (it must survive a rollback)


class Worktrees:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, agent_id: str) -> Path:
        return self.root / agent_id

    async def create(self, spec: WorkspaceSpec) -> Workspace:
        # Every git process costs 1-5 ms here; the control plane passes a resolved repo root, a full commit
        # id and a godel/<uuid> branch, so the checks below only spawn git for input that needs it.
        repo = spec.repo if (spec.repo / ".git").exists() else await repo_root(spec.repo)
        branch = spec.branch or branch_for(spec.agent_id)
        if not _GODEL_BRANCH.match(branch):
            rc, _, _ = await git_bytes("check-ref-format", f"refs/heads/{branch}", cwd=repo, check=False)
            if rc != 0 or branch.startswith("-"):
                raise ValidationError(f"invalid branch name {branch!r}", [FieldError("branch", "invalid name")])
        fork_from: str | None = None
        if spec.from_snapshot:
            fork_from = await snapshot_commit(repo, spec.from_snapshot)
            base = await git("rev-parse", f"{fork_from}^", cwd=repo)  # the snapshot's branch HEAD
        elif _FULL_COMMIT.match(spec.base_ref):
            base = spec.base_ref  # `worktree add` fails on a commit that does not exist
        else:
            base = await resolve_commit(repo, spec.base_ref)
        path = self.path_for(spec.agent_id)
        if path.exists() or path.is_symlink():
            raise ConflictError(f"workspace {path} already exists", details={"path": str(path)})
        self.root.mkdir(parents=True, exist_ok=True)
        existing = False
        if fork_from is None:
            # The usual case, a new branch, in one git call; only if the branch exists (a retry) look closer.
            add = asyncio.ensure_future(
                git_bytes("worktree", "add", "--quiet", "-b", branch, str(path), base, cwd=repo, check=False)
            )
            try:
                rc, _, err = await _to_the_end(add)
            except asyncio.CancelledError:  # git has finished: undo what it made (its branch only if it made it)
                made = not add.cancelled() and add.exception() is None and add.result()[0] == 0
                await self.discard(repo, path, branch if made else None)
                raise
            if rc != 0:
                if not await ref_exists(repo, f"refs/heads/{branch}"):
                    await self.discard(repo, path, None)
                    raise GitError(["worktree", "add", "-b", branch, str(path), base], rc, err.decode(errors="replace"))
                existing = True
                await _check_reusable(repo, branch, forking=False)
        else:
            existing = await ref_exists(repo, f"refs/heads/{branch}")
            if existing:
                await _check_reusable(repo, branch, forking=True)
        try:
            # Each step that writes runs to its end even when the creation is cancelled (a kill during the
            # checkout): a git process or a copying thread left running would write into the workspace after the
            # rollback below removed it. The setup command is the exception: it is killed (run_setup).
            if existing:
                await _to_the_end(git("worktree", "add", "--quiet", str(path), branch, cwd=repo))
            elif fork_from is not None:
                await _to_the_end(git("worktree", "add", "--quiet", "-b", branch, str(path), base, cwd=repo))
            if fork_from is not None:
                await _to_the_end(lay_tree(path, fork_from))
            if (repo / INCLUDE_FILE).exists():  # a thread hop only when there is something to copy
                await _to_the_end(asyncio.to_thread(copy_includes, repo, path))
            if spec.setup:
                await run_setup(spec.setup, path, spec.setup_timeout)
        except BaseException:  # cancellation too: leave nothing half-created behind
            await self.discard(repo, path, None if existing else branch)
            raise
        return Workspace(path, repo, branch, base, created_branch=not existing)

    async def discard(self, repo: Path, path: Path, branch: str | None) -> None:
        """Undo ``create``: directory, worktree registration and (when given) the branch it created. Best
        effort; never raises."""
        with contextlib.suppress(Exception):
            await self._remove_dir(repo, path)
        if branch is not None:
            with contextlib.suppress(Exception):
                await git("branch", "-D", branch, cwd=repo, check=False)

    async def remove(self, handle: RuntimeHandle) -> None:
        """Remove the workspace directory and its registration; the branch stays."""
        await self._remove_dir(handle.repo, handle.workspace)

    @staticmethod
    async def _remove_dir(repo: Path, path: Path) -> None:
        if os.path.lexists(path):
            await git("worktree", "remove", "--force", str(path), cwd=repo, check=False)
        if os.path.lexists(path):
            await asyncio.to_thread(shutil.rmtree, path, ignore_errors=True)
        await git("worktree", "prune", cwd=repo, check=False)


async def _to_the_end(step: Awaitable[T]) -> T:
    """Await ``step`` to its end even if the caller is cancelled meanwhile; the cancellation is raised then. A
    ``git worktree add`` abandoned half-way goes on in its own process and would leave a worktree and a branch
    behind the rollback that was meant to remove them."""
    task = asyncio.ensure_future(step)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is not None:
        raise cancelled
    return task.result()


async def _check_reusable(repo: Path, branch: str, *, forking: bool) -> None:
    if forking:
        raise ConflictError(
            f"cannot fork onto branch {branch!r}: it already exists in {repo}", details={"branch": branch}
        )
    listing = await git("worktree", "list", "--porcelain", cwd=repo)
    for block in listing.split("\n\n"):
        if f"branch refs/heads/{branch}" in block.splitlines():
            where = block.splitlines()[0].removeprefix("worktree ")
            raise ConflictError(
                f"branch {branch!r} is checked out in {where}", details={"branch": branch, "worktree": where}
            )


# ------------------------------------------------------------------------------------ .worktreeinclude


def include_patterns(repo: Path) -> list[str]:
    try:
        text = (repo / INCLUDE_FILE).read_text(errors="replace")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return []
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.lstrip("/").rstrip("/")  # "/x" anchors at the root (all patterns do); "x/" is a dir
        if line and ".." not in PurePosixPath(line).parts:
            patterns.append(line)
    return patterns


def included_files(repo: Path) -> list[Path]:
    """Regular files under ``repo`` matched by ``.worktreeinclude`` (a matched directory brings its files),
    as paths relative to the repo; anything resolving outside the repo or inside ``.git`` is skipped."""
    root = repo.resolve()
    found: dict[Path, None] = {}
    for pattern in include_patterns(root):
        try:
            matches = list(root.glob(pattern))
        except (ValueError, NotImplementedError):  # an unusable pattern is ignored like a non-matching one
            continue
        for match in matches:
            candidates = match.rglob("*") if match.is_dir() and not match.is_symlink() else [match]
            for file in candidates:
                rel = file.relative_to(root)
                if rel.parts[0] == ".git" or not file.is_file():
                    continue
                if not file.resolve().is_relative_to(root):  # a symlink pointing out of the repo
                    continue
                found[rel] = None
    return list(found)


def copy_includes(repo: Path, dest: Path) -> list[Path]:
    """Copy the included files that the checkout did not already provide; return what was copied.

    Nothing is written through a symlink: the checkout (the base ref, a snapshot) may carry a symlinked folder
    pointing out of the workspace where the repo's own working tree has a real one, and a file copied "into" it
    would land outside. Such an entry fails the workspace (PathOutsideWorkspaceError, naming the entry and the
    link) rather than being skipped quietly: the agent would otherwise start without a file it was promised."""
    copied = []
    for rel in included_files(repo):
        if create_inside(dest, PurePosixPath(rel.as_posix()), repo / rel):  # never overwrites checked-out content
            copied.append(rel)
    return copied


async def include_escapes(repo: Path, commit: str) -> list[str]:
    """The folders of ``.worktreeinclude`` entries that are symlinks in ``commit``'s tree: copying the entry into a
    checkout of ``commit`` would write through them. Lets a spawn be refused (400) before anything is created;
    ``copy_includes`` refuses the same at copy time, whatever the tree."""
    if not (repo / INCLUDE_FILE).exists():  # the usual case: no thread hop on the spawn request's path
        return []
    files = await asyncio.to_thread(included_files, repo)
    folders = sorted({str(PurePosixPath(*f.parts[:i])) for f in files for i in range(1, len(f.parts))})
    if not folders or len(folders) > 1000:  # very many: left to the copy-time check (argv length)
        return []
    _, out, _ = await git_bytes("ls-tree", "-z", "--full-tree", commit, "--", *folders, cwd=repo, check=False)
    escapes = []
    for entry in out.split(b"\0"):
        meta, _, name = entry.partition(b"\t")
        if meta.startswith(b"120000 "):
            escapes.append(name.decode(errors="replace"))
    return escapes


# ---------------------------------------------------------------------------------------------- setup


async def run_setup(
    command: str, cwd: Path, limit: float, confine: Callable[[list[str]], list[str]] | None = None
) -> None:
    """Run the repo's setup command in the new workspace (through ``confine``, a sandbox's, when given);
    AgentSpawnError (with exit code and output tail) when it fails or outlives ``limit`` seconds."""
    argv = ["/bin/sh", "-c", command]
    proc = await asyncio.create_subprocess_exec(
        *(confine(argv) if confine is not None else argv),
        cwd=cwd,
        env=agent_env({"GODEL_WORKSPACE": str(cwd)}),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # so a timeout can kill everything it started
    )
    tail = bytearray()

    async def drain() -> int:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            tail.extend(chunk)
            del tail[:-_OUTPUT_TAIL]  # keep memory bounded whatever the setup prints
        return await proc.wait()

    try:
        code = await asyncio.wait_for(drain(), limit)
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        if isinstance(exc, TimeoutError):
            raise AgentSpawnError(
                f"setup command timed out after {limit:g}s",
                details={"command": command, "exitCode": None, "timedOut": True, "output": _text(tail)},
            ) from exc
        raise
    if code != 0:
        raise AgentSpawnError(
            f"setup command failed with exit code {code}",
            details={"command": command, "exitCode": code, "timedOut": False, "output": _text(tail)},
        )


def _text(tail: bytearray) -> str:
    return bytes(tail).decode("utf-8", errors="replace")


# ------------------------------------------------------------------------------------------- changes


async def diff(handle: RuntimeHandle) -> str:
    """The workspace against its base commit, untracked files included; from the branch once it is gone."""
    options = ("diff", "--no-color", "--no-ext-diff", "--src-prefix=a/", "--dst-prefix=b/")
    if handle.workspace.is_dir():
        tree = await tree_of_workdir(handle.workspace)
        _, out, _ = await git_bytes(*options, handle.base_commit, tree, cwd=handle.workspace)
    else:
        _, out, _ = await git_bytes(*options, handle.base_commit, f"refs/heads/{handle.branch}", cwd=handle.repo)
    return out.decode("utf-8", errors="replace")


async def commits(handle: RuntimeHandle) -> list[str]:
    """Commits on the agent's branch since its base, oldest first."""
    out = await git("rev-list", "--reverse", f"{handle.base_commit}..refs/heads/{handle.branch}", cwd=handle.repo)
    return out.split()
