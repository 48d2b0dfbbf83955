"""Godel's own git over a work tree an agent may still be changing, in a mount namespace that shows nothing else.

Git walks a work tree by path: it ``lstat``s an entry, then opens it (or lists it) by the same path. A running
agent can swap a folder of its workspace for a symlink in between (``renameat2(RENAME_EXCHANGE)`` in a loop), and
git, outside any sandbox with the server's rights, then reads what the symlink names: ``$GODEL_HOME/secret.key``,
the administrator's ``credentials``, another agent's logs -- and hands them back in the agent's own diff. Measured:
a sandboxed agent that asks for its own diff in a loop gets both files within seconds
(tests/sandbox/test_review2_reads.py).

So the git that reads a work tree (``add -A``) runs under bubblewrap in a new mount namespace holding the system
(read-only), the work tree (read-only) and the folders that git itself reads or writes; a swapped symlink names a
path that does not exist there. The process keeps the server's identity and rights (bubblewrap started by root
needs no user namespace): nothing changes but what it can see. Where bubblewrap is missing git runs as before,
with a warning: only unconfined agents exist there (``local``, whose agent has the server's rights anyway, and the
remote runtimes, whose agents never touch the server's copy), since every confining runtime refuses to be built
without bubblewrap (``WHY``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Why the confining runtimes (sandbox, gvisor, container) refuse to run without bubblewrap even where they need no
# bubblewrap of their own: their agents' workspaces are read by Godel's git through this jail.
WHY = (
    "Godel's own git reads a confined agent's workspace inside it, so that a symlink the agent swaps in cannot name a "
    "host file"
)

_SYSTEM = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


@dataclass(frozen=True)
class Jail:
    """What a jailed git may see besides the system: ``readonly`` and ``writable`` folders, at their own paths."""

    readonly: Sequence[Path] = ()
    writable: Sequence[Path] = ()


def available() -> bool:
    return shutil.which("bwrap") is not None


def argv(jail: Jail, cwd: Path) -> list[str]:
    """The bubblewrap prefix of a git command run in ``jail`` from ``cwd`` (one of its folders)."""
    # A pid namespace of its own: its /proc shows only its own processes. Git keeps the server's rights in here, and
    # ``/proc/<pid>/root`` of any process outside (the agent's own sandbox, whose pid the API gives it) is the host's
    # root: a swapped symlink through it named the server's home again (found by a hostile review).
    out = ["bwrap", "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-net", "--unshare-uts"]
    out += ["--ro-bind", "/usr", "/usr"]
    for name in _SYSTEM:
        host = Path("/") / name
        if host.is_symlink():
            out += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            out += ["--ro-bind", str(host), str(host)]
    out += ["--dev", "/dev", "--proc", "/proc", "--dir", "/tmp"]
    binds = [(p, "--ro-bind") for p in jail.readonly] + [(p, "--bind") for p in jail.writable]
    # Shallowest first (a bind inside another must come after it); at one depth, read-write after read-only.
    for path, how in sorted(binds, key=lambda b: (len(b[0].parts), b[1] == "--bind")):
        out += [how, str(path), str(path)]
    return [*out, "--chdir", str(cwd), "--"]
