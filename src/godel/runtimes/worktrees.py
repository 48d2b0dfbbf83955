"""Plain git worktrees (the merge queue's integration and refinery trees), and what every workspace shares:
``.worktreeinclude`` and the setup command.

Agent workspaces are no longer git worktrees of the user's repository (see ``godel.runtimes.workspaces``): a
worktree shares the repository's hooks, config and every ref with whoever writes in it. The merge queue still
makes worktrees of its own, which only Godel writes in; ``Worktrees.discard`` removes one (directory, registration
and, when given, the branch its creation made).

``.worktreeinclude`` lists untracked files (``.env`` and the like) that a fresh checkout lacks and a workspace gets
copied from the user's working tree; the setup command runs in the new workspace before the agent starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from godel.errors import AgentSpawnError
from godel.runtimes.git import git, git_bytes
from godel.runtimes.paths import create_inside
from godel.runtimes.processes import agent_env

INCLUDE_FILE = ".worktreeinclude"
_OUTPUT_TAIL = 8 * 1024  # bytes of setup output kept for the error report


class Worktrees:
    """Git worktrees of a repository under ``root`` (the merge queue's own)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def discard(self, repo: Path, path: Path, branch: str | None) -> None:
        """Remove a worktree: directory, registration and (when given) the branch made for it. Best effort; never
        raises."""
        with contextlib.suppress(Exception):
            await self._remove_dir(repo, path)
        if branch is not None:
            with contextlib.suppress(Exception):
                await git("branch", "-D", branch, cwd=repo, check=False)

    @staticmethod
    async def _remove_dir(repo: Path, path: Path) -> None:
        if os.path.lexists(path):
            await git("worktree", "remove", "--force", str(path), cwd=repo, check=False)
        if os.path.lexists(path):
            await asyncio.to_thread(shutil.rmtree, path, ignore_errors=True)
        await git("worktree", "prune", cwd=repo, check=False)


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
