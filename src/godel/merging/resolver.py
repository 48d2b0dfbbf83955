"""The refinery hook: handing a conflict to someone who resolves it on a branch of their own.

When a branch conflicts with the integration branch, the queue may give the conflict to a ``Resolver``. The
resolver produces a *new* branch (``godel/refinery/…``) that contains the conflicting branch's tip and the
integration commit it conflicted with, merged and resolved; the queue then merges that branch instead, and it
goes through the same gate as any other. The agent's branch is never touched, so a bad resolution costs
nothing but a branch to delete.

The server will wire a resolver that spawns a refinery agent on that branch. ``CommandResolver`` is the
simplest one: a shell command run in a worktree where the conflicting merge is in progress (for example
``git checkout --theirs -- "$@"``, or a tool that regenerates a lock file). What the command leaves is staged
and committed, unless a conflicted file still has conflict markers.
"""

from __future__ import annotations

import re
import shlex
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from godel.merging.verify import OUTPUT_TAIL, confined, run_gate
from godel.merging.worktree import identity_env
from godel.runtimes.git import git, git_bytes
from godel.runtimes.worktrees import Worktrees

REFINERY_PREFIX = "godel/refinery/"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Conflict:
    repo: Path
    branch: str  # the branch that conflicted
    tip: str  # the commit of it that was being merged
    into: str  # the integration branch
    onto: str  # the integration commit it conflicted with
    files: list[str] = field(default_factory=list)
    refinery_branch: str = ""  # the branch name the resolution should be made on


@dataclass(frozen=True)
class Resolution:
    branch: str  # must contain both ``tip`` and ``onto``; the queue merges it in place of the conflicting branch
    note: str | None = None


class ResolutionFailed(Exception):
    """The resolver tried and could not resolve; the message says why (it goes into the branch's result)."""


class Resolver(Protocol):
    name: str

    async def resolve(self, conflict: Conflict) -> Resolution | None:
        """A branch with the conflict resolved, or None to decline. Raise ResolutionFailed to say why not."""
        ...


def refinery_branch(branch: str, run_id: str | None = None) -> str:
    """``godel/refinery/<branch, flattened>-<8 hex>``: unique per attempt, never an existing agent branch."""
    flat = _UNSAFE.sub("-", branch.removeprefix("refs/heads/").replace("/", "-")).strip("-.") or "branch"
    return f"{REFINERY_PREFIX}{flat[:80]}-{(run_id or uuid.uuid4().hex)[:8]}"


class CommandResolver:
    """Resolve a conflict with a shell command, on a new branch, in a temporary worktree.

    The worktree is on ``conflict.refinery_branch``, created at the conflicting branch's tip, with
    ``git merge <integration commit>`` stopped at its conflicts. The command runs there with the conflicting
    paths as its arguments (``"$@"``, and ``GODEL_CONFLICT_FILES`` one per line); it must leave no unmerged path.
    Then everything is staged and the merge committed. On any failure the refinery branch is deleted again (it
    holds nothing but the agent's commits) and ResolutionFailed says why.
    """

    name = "command"

    def __init__(self, command: str, workdir: Path, *, timeout: float = 600.0, runtime: object = None) -> None:
        self.command = command
        self.workdir = workdir
        self.timeout = timeout
        self.runtime = runtime  # the server's default runtime: the command runs confined when it can confine

    async def resolve(self, conflict: Conflict) -> Resolution:
        branch = conflict.refinery_branch or refinery_branch(conflict.branch)
        path = self.workdir / f"refinery-{uuid.uuid4().hex[:12]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        repo = conflict.repo
        env = await identity_env(repo)
        await git("worktree", "add", "--quiet", "-b", branch, str(path), conflict.tip, cwd=repo)
        done = False
        try:
            message = f"Merge {conflict.into} into {conflict.branch}, conflicts resolved by the refinery"
            await git_bytes("merge", "--no-ff", "--no-commit", "-m", message, conflict.onto, cwd=path, check=False,
                            env=env)  # fmt: skip
            files = (await git("diff", "--name-only", "--diff-filter=U", cwd=path)).splitlines()
            gate = await run_gate(
                f"set -- {' '.join(shlex.quote(f) for f in files)}\n{self.command}\n",
                path,
                self.timeout,
                {"GODEL_CONFLICT_FILES": "\n".join(files), "GODEL_CONFLICT_BRANCH": conflict.branch,
                 "GODEL_CONFLICT_INTO": conflict.into},
                await confined(self.runtime, path),
            )  # fmt: skip
            if not gate.ok:
                raise ResolutionFailed(f"{gate.reason(self.timeout)}: {gate.output[-OUTPUT_TAIL // 4 :].strip()}")
            # The command edits files (or picks a side with `git checkout --ours/--theirs`); staging is ours to
            # do, but not of a file that still has conflict markers.
            left = (await git("diff", "--name-only", "--diff-filter=U", cwd=path)).splitlines()
            marked = [name for name in left if _has_markers(path / name)]
            if marked:
                raise ResolutionFailed(f"conflict markers left in: {', '.join(marked)}")
            if await _has(path, "MERGE_HEAD"):
                await git("add", "-A", cwd=path)
                await git("commit", "--quiet", "--no-verify", "--no-edit", cwd=path, env=env)
            elif not await _contains(path, conflict.onto):  # it may commit the merge itself; not abort it
                raise ResolutionFailed("the command aborted the merge instead of resolving it")
            done = True
            return Resolution(branch, note=f"resolved by: {self.command}")
        finally:
            await Worktrees(self.workdir).discard(repo, path, None if done else branch)


def _has_markers(path: Path) -> bool:
    try:
        lines = path.read_bytes().splitlines()
    except (FileNotFoundError, IsADirectoryError):
        return False  # deleted (or a directory now): nothing left to mark
    return any(line.startswith((b"<<<<<<< ", b">>>>>>> ")) or line == b"=======" for line in lines)


async def _has(path: Path, ref: str) -> bool:
    rc, _, _ = await git_bytes("rev-parse", "--verify", "--quiet", ref, cwd=path, check=False)
    return rc == 0


async def _contains(path: Path, commit: str) -> bool:
    rc, _, _ = await git_bytes("merge-base", "--is-ancestor", commit, "HEAD", cwd=path, check=False)
    return rc == 0
