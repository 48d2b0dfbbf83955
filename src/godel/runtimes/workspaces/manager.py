"""Creating and removing agent workspaces.

A workspace is ``<worktrees root>/<agent-id>``: an overlay of the cached checkout of its start commit (an upper
layer of its own, so creating it costs a mount, whatever the size of the repository), or, where overlayfs cannot be
mounted (the server is not root), a plain checkout, which costs time in proportion to the files; the fallback is
logged once and shown in the runtime's capabilities. Its ``.git`` file points at the agent's private git directory
(``gitdir``); its branch ``godel/<agent-id>`` is created in the user's repository at the start commit by Godel
(``update-ref``, which fails rather than moves an existing branch) and kept there up to date by ``bring_back``.

Creating is all-or-nothing: the branch, the checkout or mount, the fork from a snapshot, the copy of the files
listed in ``.worktreeinclude`` and the setup command either all succeed, or everything created so far is removed.
Nothing that existed before is ever removed. An existing workspace folder is refused. An existing branch (a retry
of the same agent, whose branch was kept, or a branch the client named) is checked out at its tip, so earlier
commits on it are built upon, never discarded; it is refused when a checkout of the user's or another live
workspace has it; forking onto an existing branch is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import structlog

from godel.core.ids import branch_for
from godel.core.ports import RuntimeHandle, WorkspaceSpec
from godel.errors import ConflictError, FieldError, GitError, RuntimeFailure, ValidationError
from godel.runtimes.git import git, git_bytes, ref_exists, repo_root, resolve_commit
from godel.runtimes.snapshots import snapshot_commit
from godel.runtimes.workspaces import overlay, safegit
from godel.runtimes.workspaces.cache import CheckoutCache
from godel.runtimes.workspaces.changes import lay_tree
from godel.runtimes.workspaces.gitdir import (
    AgentDirs,
    WorkspaceMeta,
    bring_back_quietly,
    forget,
    make_git_dirs,
    write_gitfile,
)
from godel.runtimes.worktrees import INCLUDE_FILE, copy_includes, run_setup

log = structlog.get_logger("godel.runtime")

_GODEL_BRANCH = re.compile(r"^godel/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")  # always valid
_FULL_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # a full SHA-1 or SHA-256 object name
MODES = ("auto", "overlay", "checkout")
T = TypeVar("T")


@dataclass(frozen=True)
class Workspace:
    path: Path
    repo: Path
    branch: str
    base_commit: str
    created_branch: bool  # False when an existing branch was checked out (it must survive a rollback)


class Workspaces:
    def __init__(self, root: Path, *, mode: str = "auto", cache_size: int = 16) -> None:
        """``root``: where workspaces appear (the worktrees folder); Godel's state for each is in ``workspaces``
        beside it, cached checkouts in ``cache/checkouts``."""
        if mode not in MODES:
            raise ValueError(f"workspace mode must be one of {MODES}, not {mode!r}")
        self.root = root
        self.state_root = root.parent / "workspaces"
        self.cache = CheckoutCache(root.parent / "cache" / "checkouts", cache_size)
        self.requested = mode
        self._mode: str | None = None if mode != "checkout" else "checkout"
        self.fallback_reason: str | None = None

    def path_for(self, agent_id: str) -> Path:
        return self.root / agent_id

    def dirs(self, agent_id: str) -> AgentDirs:
        return AgentDirs(self.state_root / agent_id)

    def meta(self, agent_id: str) -> WorkspaceMeta | None:
        return WorkspaceMeta.load(self.dirs(agent_id).meta)

    @property
    def mode(self) -> str:
        """ "overlay" or "checkout": what new workspaces are made with (probed once)."""
        if self._mode is None:
            reason = overlay.probe(self.state_root)
            if reason is None:
                self._mode = "overlay"
            elif self.requested == "overlay":
                raise RuntimeFailure(f"workspace_mode is overlay, but {reason}", details={"reason": reason})
            else:
                self._mode, self.fallback_reason = "checkout", reason
                log.warning(
                    "workspaces are full checkouts (their cost grows with the repository's files): " + reason,
                    fix="run the server as root to make each workspace an overlay of a cached checkout",
                )
        return self._mode

    # -------------------------------------------------------------------------------------------- create

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
            base = spec.base_ref
        else:
            base = await resolve_commit(repo, spec.base_ref)
        path, dirs = self.path_for(spec.agent_id), self.dirs(spec.agent_id)
        if dirs.root.exists() and not (path.exists() or path.is_symlink()):
            await self._clear_leftover(spec.agent_id)
        for taken in (path, dirs.root):
            if taken.exists() or taken.is_symlink():
                raise ConflictError(f"workspace {taken} already exists", details={"path": str(taken)})
        mode = self.mode
        common = await git_common_dir(repo)
        created = await _to_the_end(self._claim_branch(repo, common, branch, base, forking=fork_from is not None))
        try:
            # Each step that writes runs to its end even when the creation is cancelled (a kill during the
            # checkout): a git process or a copying thread left running would write into the workspace after the
            # rollback below removed it. The setup command is the exception: it is killed (run_setup).
            tip = base if created else await git("rev-parse", "--verify", f"refs/heads/{branch}", cwd=repo)
            meta = WorkspaceMeta(repo, common, branch, base, tip, mode)
            await _to_the_end(self._lay_out(spec.agent_id, meta, path, dirs))
            if fork_from is not None:
                await _to_the_end(lay_tree(dirs, path, fork_from))
            if (repo / INCLUDE_FILE).exists():  # a thread hop only when there is something to copy
                await _to_the_end(asyncio.to_thread(copy_includes, repo, path))
            if spec.setup:
                await run_setup(spec.setup, path, spec.setup_timeout)
        except BaseException:  # cancellation too: leave nothing half-created behind
            await self.discard(repo, path, branch if created else None, spec.agent_id)
            raise
        return Workspace(path, repo, branch, base, created_branch=created)

    async def _clear_leftover(self, agent_id: str) -> None:
        """The state of a creation or a removal a crash interrupted (no workspace left): its branch brought back if
        it can be (a removal brings it back first, so this is a second try), then the state removed."""
        dirs = self.dirs(agent_id)
        meta = self.meta(agent_id)
        if meta is not None and (dirs.git / "HEAD").is_file():
            await bring_back_quietly(dirs, meta, agent_id)
        log.info("leftover workspace state removed", agent=agent_id, state=str(dirs.root))
        await asyncio.to_thread(shutil.rmtree, dirs.root, True)

    async def _claim_branch(self, repo: Path, common: Path, branch: str, base: str, *, forking: bool) -> bool:
        """Create ``refs/heads/<branch>`` at ``base`` in the user's repository (True), or find it there and check
        that it may be reused (False)."""
        zero = "0" * len(base)
        rc, _, err = await safegit.run(["update-ref", f"refs/heads/{branch}", base, zero], git_dir=common, check=False)
        if rc == 0:
            return True
        if not await ref_exists(repo, f"refs/heads/{branch}"):
            raise GitError(["update-ref", f"refs/heads/{branch}", base], rc, err.decode(errors="replace"))
        if forking:
            raise ConflictError(
                f"cannot fork onto branch {branch!r}: it already exists in {repo}", details={"branch": branch}
            )
        await self._check_reusable(repo, common, branch)
        return False

    async def _check_reusable(self, repo: Path, common: Path, branch: str) -> None:
        listing = await git("worktree", "list", "--porcelain", cwd=repo)
        for block in listing.split("\n\n"):
            if f"branch refs/heads/{branch}" in block.splitlines():
                where = block.splitlines()[0].removeprefix("worktree ")
                raise ConflictError(
                    f"branch {branch!r} is checked out in {where}", details={"branch": branch, "worktree": where}
                )
        for other in await asyncio.to_thread(self.live_metas):
            agent_id, meta = other
            if meta.branch == branch and meta.git_common == common:
                where = str(self.path_for(agent_id))
                raise ConflictError(
                    f"branch {branch!r} is checked out in {where}", details={"branch": branch, "worktree": where}
                )

    def live_metas(self) -> list[tuple[str, WorkspaceMeta]]:
        found = []
        with contextlib.suppress(FileNotFoundError):
            for state in self.state_root.iterdir():
                meta = WorkspaceMeta.load(state / "workspace.json")
                if meta is not None and self.path_for(state.name).exists():
                    found.append((state.name, meta))
        return found

    async def _lay_out(self, agent_id: str, meta: WorkspaceMeta, path: Path, dirs: AgentDirs) -> None:
        identity, exclude = await _identity(meta.repo), await asyncio.to_thread(_read, meta.git_common / "info/exclude")
        listed = await safegit.text(
            ["for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags"], git_dir=meta.git_common
        )
        refs = [(name, obj) for name, _, obj in (line.partition(" ") for line in listed.splitlines()) if obj]
        await asyncio.to_thread(make_git_dirs, dirs, meta, meta.checkout, identity, exclude, refs)
        if meta.mode == "overlay":
            entry = await self.cache.checkout(meta.git_common, meta.checkout)
            try:
                meta = WorkspaceMeta(**{**meta.__dict__, "lower": entry})
                await asyncio.to_thread(_mount_new, dirs, entry, path, meta)
            finally:
                self.cache.release(meta.checkout)
        else:
            await asyncio.to_thread(path.mkdir, parents=True)
            await safegit.run(["read-tree", "-u", "--reset", meta.checkout], git_dir=dirs.view, work_tree=path,
                              env={"GIT_INDEX_FILE": str(dirs.index)})  # fmt: skip
        await asyncio.to_thread(_finish, dirs, path)

    # ------------------------------------------------------------------------------------ remove, ready

    async def ready(self, handle: RuntimeHandle) -> WorkspaceMeta | None:
        """The workspace's record, its overlay mounted again if it is not (the machine restarted while the agent
        was kept); None for a workspace this runtime did not make (or one removed already)."""
        meta = self.meta(handle.agent_id)
        if meta is None or meta.mode != "overlay" or not handle.workspace.is_dir():
            return meta
        if os.path.ismount(handle.workspace):
            return meta
        dirs = self.dirs(handle.agent_id)
        if not dirs.upper.is_dir():
            return meta
        entry = await self.cache.checkout(meta.git_common, meta.checkout)
        try:
            await asyncio.to_thread(overlay.mount, entry / "tree", dirs.upper, dirs.work, handle.workspace)
        finally:
            self.cache.release(meta.checkout)
        log.info("workspace mounted again", agent=handle.agent_id, workspace=str(handle.workspace))
        return meta

    async def discard(self, repo: Path, path: Path, branch: str | None, agent_id: str) -> None:
        """Undo ``create``: the workspace, its state and (when given) the branch it created. Best effort; never
        raises."""
        with contextlib.suppress(Exception):
            await asyncio.shield(asyncio.to_thread(self._remove, path, self.dirs(agent_id)))
        if branch is not None:
            with contextlib.suppress(Exception):
                await git("branch", "-D", branch, cwd=repo, check=False)

    async def remove(self, handle: RuntimeHandle) -> None:
        """Remove the workspace and Godel's state for it (the caller brought the branch back first). A workspace
        made before private git directories (a git worktree of the repository) is unregistered too."""
        legacy = self.meta(handle.agent_id) is None and (handle.workspace / ".git").is_file()
        await asyncio.to_thread(self._remove, handle.workspace, self.dirs(handle.agent_id))
        await self.cache.evict()  # the checkout it used may be one too many now
        if legacy:
            await git("worktree", "prune", cwd=handle.repo, check=False)

    @staticmethod
    def _remove(path: Path, dirs: AgentDirs) -> None:
        with contextlib.suppress(OSError):
            overlay.unmount(path)
        if os.path.lexists(path):
            if path.is_symlink():
                path.unlink()
            else:
                shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(dirs.root, ignore_errors=True)
        forget(dirs)


async def git_common_dir(repo: Path) -> Path:
    """The user's repository's git directory holding its objects, refs and config."""
    dotgit = repo / ".git"
    if dotgit.is_dir() and not (dotgit / "commondir").exists():
        return dotgit.resolve()
    return Path(await git("rev-parse", "--path-format=absolute", "--git-common-dir", cwd=repo)).resolve()


async def _identity(repo: Path) -> dict[str, str]:
    """The user's git identity as their repository sees it (the agent's commits carried it in a worktree)."""
    rc, out, _ = await git_bytes("config", "--get-regexp", r"^user\.(name|email)$", cwd=repo, check=False)
    found = {}
    for line in out.decode(errors="replace").splitlines() if rc == 0 else []:
        key, _, value = line.partition(" ")
        found[key.removeprefix("user.")] = value
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _mount_new(dirs: AgentDirs, entry: Path, path: Path, meta: WorkspaceMeta) -> None:
    dirs.upper.mkdir(parents=True)
    dirs.work.mkdir(parents=True)
    path.mkdir(parents=True)
    overlay.mount(entry / "tree", dirs.upper, dirs.work, path)
    try:
        os.link(entry / "index", dirs.index)  # Godel only reads it (git replaces an index, never writes it in place)
    except OSError:
        shutil.copyfile(entry / "index", dirs.index)
    dirs.meta.write_text(meta.dump())


def _finish(dirs: AgentDirs, path: Path) -> None:
    shutil.copyfile(dirs.index, dirs.git / "index")  # the agent's own index: a copy it may rewrite
    write_gitfile(path, dirs.git)


async def _to_the_end(step: Awaitable[T]) -> T:
    """Await ``step`` to its end even if the caller is cancelled meanwhile; the cancellation is raised then. A
    checkout abandoned half-way goes on in its own process and would write into a workspace after the rollback
    that was meant to remove it."""
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
