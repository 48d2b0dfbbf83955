"""A small async wrapper around the ``git`` command line.

Git runs as a subprocess through asyncio so a slow checkout never blocks the event loop, and every failure
is translated here, once, into ``godel.errors.GitError`` (command, return code, stderr). Callers above this
module never see ``CalledProcessError`` or a raw return code.

Variables such as ``GIT_DIR`` or ``GIT_INDEX_FILE`` inherited from the server's environment (a server started
from a git hook, a test run inside one) would silently point every command at the wrong repository, so they are
removed before each call.

This wrapper is for repositories only Godel and the user write (the user's repository, the merge queue's
worktrees). Git on a tree an agent controls goes through ``godel.runtimes.workspaces.safegit``, which switches off
everything that could make git run a program.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from godel.errors import FieldError, GitError, NotAGitRepositoryError, RefNotFoundError, RuntimeFailure

# Variables that redirect git to another repository, index or object store; never inherited.
_REDIRECTING = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_NAMESPACE",
        "GIT_PREFIX",
        "GIT_CEILING_DIRECTORIES",
    }
)

# Godel's own commits (snapshots) carry Godel's identity; the user's git config may have none.
GODEL_IDENTITY = {
    "GIT_AUTHOR_NAME": "Godel",
    "GIT_AUTHOR_EMAIL": "godel@localhost",
    "GIT_COMMITTER_NAME": "Godel",
    "GIT_COMMITTER_EMAIL": "godel@localhost",
}


def _git_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _REDIRECTING}
    env["GIT_TERMINAL_PROMPT"] = "0"  # never wait for credentials on a closed stdin
    env["LC_ALL"] = "C"  # messages we may match on stay in English
    if extra:
        env.update(extra)
    return env


async def git_bytes(
    *args: str, cwd: Path, check: bool = True, env: Mapping[str, str] | None = None
) -> tuple[int, bytes, bytes]:
    """Run ``git *args`` in ``cwd``; return (returncode, stdout, stderr). Raises GitError when ``check``."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=cwd,
            env=_git_env(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError as exc:  # git missing, or cwd gone
        if shutil.which("git") is None:
            raise RuntimeFailure("git is not installed") from exc
        raise GitError(args, -1, f"cannot run in {cwd}: {exc}") from exc
    out, err = await proc.communicate()
    rc = proc.returncode if proc.returncode is not None else -1
    if check and rc != 0:
        raise GitError(args, rc, err.decode("utf-8", errors="replace"))
    return rc, out, err


async def git(*args: str, cwd: Path, check: bool = True, env: Mapping[str, str] | None = None) -> str:
    """Run ``git *args`` in ``cwd`` and return its stdout as text (trailing newline stripped)."""
    _, out, _ = await git_bytes(*args, cwd=cwd, check=check, env=env)
    return out.decode("utf-8", errors="replace").rstrip("\n")


async def repo_root(path: Path) -> Path:
    """The top level of the working tree containing ``path``; NotAGitRepositoryError otherwise."""
    if not path.is_dir():
        raise NotAGitRepositoryError(f"{path} is not a directory", [FieldError("repo", "not a directory")])
    rc, out, err = await git_bytes("rev-parse", "--show-toplevel", cwd=path, check=False)
    if rc != 0 or not out.strip():
        raise NotAGitRepositoryError(
            f"{path} is not a git repository with a working tree",
            [FieldError("repo", err.decode("utf-8", errors="replace").strip() or "not a git repository")],
        )
    return Path(out.decode().strip())


async def resolve_in_repo(path: Path, ref: str, *, field: str = "base_ref") -> tuple[Path, str]:
    """``repo_root`` and ``resolve_commit`` in one git process when both succeed (the spawn path pays for every
    process); on any failure the two separate calls run to give the precise error."""
    if path.is_dir() and ref and not ref.startswith("-"):
        rc, out, _ = await git_bytes(
            "rev-parse", "--show-toplevel", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=path, check=False
        )
        lines = out.decode().split()
        if rc == 0 and len(lines) == 2:
            return Path(lines[0]), lines[1]
    root = await repo_root(path)
    return root, await resolve_commit(root, ref, field=field)


async def resolve_commit(repo: Path, ref: str, *, field: str = "base_ref") -> str:
    """The full commit id ``ref`` names; RefNotFoundError when it names none."""
    # A leading dash would be read as an option; no valid ref starts with one.
    if not ref or ref.startswith("-"):
        raise RefNotFoundError(f"invalid ref {ref!r}", [FieldError(field, "invalid ref")])
    rc, out, _ = await git_bytes("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=repo, check=False)
    if rc != 0:
        raise RefNotFoundError(
            f"ref {ref!r} does not name a commit in {repo}", [FieldError(field, f"unknown ref {ref!r}")]
        )
    return out.decode().strip()


async def ref_exists(repo: Path, ref: str) -> bool:
    rc, _, _ = await git_bytes("show-ref", "--verify", "--quiet", ref, cwd=repo, check=False)
    return rc == 0
