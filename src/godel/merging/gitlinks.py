"""What points git at its repository from a worktree, kept from a confined command that runs there.

A merge gate or a conflict resolver runs in a worktree of the user's repository with the tree and the worktree's
own git directory (``<repo>/.git/worktrees/<name>``) writable: it runs the tests, or ``git checkout --ours``.
Godel's own git then runs in that tree on the host, with the server's rights, and finds its repository from what
the command could write: the tree's ``.git`` file (rewritten to name a git directory planted in the tree, whose
``core.fsmonitor`` git runs), the own directory's ``commondir`` (the same through the common directory), ``HEAD``
(a symbolic ref to ``refs/heads/main``: Godel's ``reset --hard`` then moves the user's branch), ``gitdir`` and
``config.worktree``. Found by a hostile review: a gate ran a program as root on the host, and moved ``main``.

So those files are read before the command and put back exactly as they were after it (its processes are gone by
then): whatever else it left in the tree is cleaned by Godel's git, now pointed at the right repository.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

# In the worktree's own git directory: what names the common directory, the work tree, the branch or a configuration.
_OWN_FILES = ("HEAD", "commondir", "gitdir", "config.worktree")


@dataclass
class GitLinks:
    tree: Path
    own: Path
    saved: dict[Path, bytes | None] = field(default_factory=dict)

    @classmethod
    def read(cls, tree: Path, own: Path) -> GitLinks:
        links = cls(tree, own)
        for path in (tree / ".git", *(own / name for name in _OWN_FILES)):
            links.saved[path] = _read(path)
        return links

    def restore(self) -> None:
        """Put every file back as it was read (removed when it did not exist), whatever now stands at its path."""
        for path, data in self.saved.items():
            _remove(path)
            if data is not None:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)


def _read(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
