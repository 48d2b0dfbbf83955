"""The integration worktree: where the queue merges, away from the user's checkout.

The worktree is *detached* at the integration branch's commit. Merges, resets and the gate all happen on that
detached HEAD; the branch itself is moved (``update-ref`` with the expected old value) only after a merge
has passed the gate. So the integration branch only ever holds verified merges, even if the server dies in the
middle of a test run, and a branch that someone else moved meanwhile is never overwritten. Agent branches
are only ever read: the queue merges their commits and never writes their refs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from godel.errors import BranchCheckedOutError, FieldError, GitError, ValidationError
from godel.runtimes.git import GODEL_IDENTITY, git, git_bytes
from godel.runtimes.worktrees import Worktrees


@dataclass(frozen=True)
class MergeOutcome:
    """What ``git merge`` did: a clean merge commit, a conflict (files), or another failure (message)."""

    commit: str | None = None
    files: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def conflict(self) -> bool:
        return bool(self.files)


async def identity_env(repo: Path) -> dict[str, str]:
    """The user's git identity when they have one, Godel's otherwise (a server may run with no git config, and
    a merge commit needs a committer)."""
    # `git var` fails exactly when a commit would fail for want of an identity.
    author, _, _ = await git_bytes("var", "GIT_AUTHOR_IDENT", cwd=repo, check=False)
    committer, _, _ = await git_bytes("var", "GIT_COMMITTER_IDENT", cwd=repo, check=False)
    return {} if author == committer == 0 else dict(GODEL_IDENTITY)


async def check_branch_name(repo: Path, name: str, field_name: str) -> None:
    rc, _, _ = await git_bytes("check-ref-format", f"refs/heads/{name}", cwd=repo, check=False)
    if rc != 0 or name.startswith("-"):
        raise ValidationError(f"invalid branch name {name!r}", [FieldError(field_name, "not a valid branch name")])


async def checked_out_at(repo: Path, branch: str) -> Path | None:
    """The worktree (the main checkout included) that has ``branch`` checked out, if any."""
    listing = await git("worktree", "list", "--porcelain", cwd=repo)
    path: str | None = None
    for line in listing.splitlines():
        if line.startswith("worktree "):
            path = line.removeprefix("worktree ")
        elif line == f"branch refs/heads/{branch}" and path is not None:
            return Path(path)
    return None


async def ensure_not_checked_out(repo: Path, branch: str) -> None:
    # Moving a checked-out branch would leave that checkout's files and index behind its HEAD: refused.
    path = await checked_out_at(repo, branch)
    if path is not None:
        raise BranchCheckedOutError(branch, str(path))


class IntegrationTree:
    """A detached worktree at the integration branch; ``head`` is where the merges stand now."""

    def __init__(self, repo: Path, into: str, path: Path, env: dict[str, str], start: str) -> None:
        self.repo = repo
        self.into = into
        self.path = path
        self.env = env
        self.head = start  # the worktree's HEAD
        self.published = start  # what refs/heads/<into> points to (as far as this run moved it)

    @classmethod
    async def open(cls, repo: Path, into: str, path: Path) -> IntegrationTree:
        start = await git("rev-parse", "--verify", f"refs/heads/{into}^{{commit}}", cwd=repo)
        path.parent.mkdir(parents=True, exist_ok=True)
        await git("worktree", "add", "--quiet", "--detach", str(path), start, cwd=repo)
        return cls(repo, into, path, await identity_env(repo), start)

    async def close(self) -> None:
        """Remove the worktree directory and its registration (best effort; never raises)."""
        await Worktrees(self.path.parent).discard(self.repo, self.path, None)

    async def contains(self, commit: str) -> bool:
        return await self.is_ancestor(commit, self.head)

    async def is_ancestor(self, ancestor: str, commit: str) -> bool:
        rc, _, _ = await git_bytes("merge-base", "--is-ancestor", ancestor, commit, cwd=self.path, check=False)
        return rc == 0

    async def merge(self, commit: str, message: str) -> MergeOutcome:
        """``git merge --no-ff`` of ``commit``; on a conflict the merge is aborted and the files reported."""
        rc, _, err = await git_bytes(
            "merge", "--no-ff", "--no-edit", "-m", message, commit, cwd=self.path, check=False, env=self.env
        )
        if rc == 0:
            self.head = await git("rev-parse", "HEAD", cwd=self.path)
            return MergeOutcome(commit=self.head)
        files = (await git("diff", "--name-only", "--diff-filter=U", cwd=self.path, check=False)).splitlines()
        await git("merge", "--abort", cwd=self.path, check=False)
        await self.reset(self.head)  # whatever the failed merge left behind
        if files:
            return MergeOutcome(files=files)
        return MergeOutcome(error=err.decode("utf-8", errors="replace").strip()[-2000:] or f"git merge exited {rc}")

    async def reset(self, commit: str) -> None:
        """Put the worktree back at ``commit``: tracked files reset, untracked ones (build output) removed."""
        await git("reset", "--quiet", "--hard", commit, cwd=self.path)
        # -ff: also nested repositories a test may have created; ignored files stay (caches), they never block
        # a merge.
        await git("clean", "-ffdq", cwd=self.path)
        self.head = commit

    async def publish(self, reason: str) -> None:
        """Move the integration branch to ``head``, only if it still is where this run last put it."""
        if self.head == self.published:
            return
        try:
            await git("update-ref", "-m", reason, f"refs/heads/{self.into}", self.head, self.published, cwd=self.repo)
        except GitError as exc:
            raise GitError(
                ["update-ref", f"refs/heads/{self.into}"],
                exc.returncode,
                f"the integration branch {self.into} was moved by someone else during the merge: {exc.stderr}",
            ) from exc
        self.published = self.head


async def create_branch(repo: Path, name: str, commit: str) -> None:
    """Create ``refs/heads/<name>`` at ``commit``; fails (rather than moving it) if it appeared meanwhile."""
    zero = "0" * len(commit)
    await git("update-ref", "-m", "godel merge: create the integration branch", f"refs/heads/{name}", commit, zero,
              cwd=repo)  # fmt: skip
