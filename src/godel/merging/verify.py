"""The gate: the repository's verification command, run in the integration worktree after a merge.

It runs through ``/bin/sh -c`` in its own process group, so a timeout (or a cancelled run) kills everything it
started, not just the shell. Its output is kept as a bounded tail: a test suite may print megabytes, and the
report needs the end, where the failures are.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from godel.core.ports import CommandConfinement
from godel.merging.gitlinks import GitLinks
from godel.runtimes.git import git

OUTPUT_TAIL = 4000  # characters of output kept in a result
_READ_TAIL = 64 * 1024  # bytes kept while reading (a multi-byte character may straddle the cut)

# Inherited variables that would point git commands inside the gate at another repository or index (the
# server may run from a git hook); the gate must see the integration worktree only.
_GIT_REDIRECTS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR",
                  "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_PREFIX")  # fmt: skip


@dataclass(frozen=True)
class Gate:
    exit_code: int | None  # None when it timed out
    output: str  # the tail of stdout and stderr, interleaved as written
    timed_out: bool
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def reason(self, timeout: float) -> str:
        if self.timed_out:
            return f"verify command timed out after {timeout:g}s"
        return f"verify command exited with {self.exit_code}"


def gate_env(extra: Mapping[str, str]) -> dict[str, str]:
    # The server's environment (PATH, a virtualenv, tool caches): the gate is the user's own test command.
    env = {k: v for k, v in os.environ.items() if k not in _GIT_REDIRECTS}
    env.update(extra)
    return env


class Confined:
    """How to run a command confined on a worktree (``argv``), and what to put back once it has run (``restore``):
    the files that point git at its repository there, which Godel's own git reads next (``gitlinks``)."""

    def __init__(self, runtime: CommandConfinement, tree: Path, own: Path, common: Path) -> None:
        self.runtime, self.tree, self.own, self.common = runtime, tree, own, common
        self.links = GitLinks.read(tree, own)

    def argv(self, argv: list[str]) -> list[str]:
        return self.runtime.confine(argv, self.tree, writable=[self.tree, self.own], readonly=[self.common])

    def restore(self) -> None:
        self.links.restore()


async def confined(runtime: object, tree: Path) -> Confined | None:
    """How to run a gate on ``tree`` (a worktree of the user's repository) as confined as an agent, when ``runtime``
    can (``CommandConfinement``): the tree and its own git directory writable, the repository's git directory
    read-only, no network. None: the runtime confines nothing (``local``), and the gate runs as the server's user."""
    if not isinstance(runtime, CommandConfinement):
        return None
    own = Path(await git("rev-parse", "--path-format=absolute", "--git-dir", cwd=tree))
    common = Path(await git("rev-parse", "--path-format=absolute", "--git-common-dir", cwd=tree))
    return await asyncio.to_thread(Confined, runtime, tree, own, common)


async def run_gate(
    command: str, cwd: Path, timeout: float, env: Mapping[str, str] | None = None, confine: Confined | None = None
) -> Gate:
    """Run ``command`` by ``/bin/sh -c`` in ``cwd``; through ``confine`` when given (a sandbox)."""
    argv = ["/bin/sh", "-c", command]
    if confine is not None:
        argv = confine.argv(argv)
    started = time.monotonic()
    # Output to a file, not a pipe: a child the command leaves in the background would keep a pipe open, and
    # asyncio's wait() waits for its pipes; the shell's exit is what decides.
    with tempfile.TemporaryFile() as out:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=gate_env(env or {}),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout kills the whole test run
        )
        code: int | None
        timed_out = False
        try:
            code = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            code, timed_out = None, True
        finally:
            # Also after a normal exit: a server or watcher the tests left running in the background must not
            # outlive the gate (it would hold the worktree open).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.shield(proc.wait())
            if confine is not None:  # before any git of Godel's runs there again (the gate's processes are gone)
                await asyncio.shield(asyncio.to_thread(confine.restore))
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - _READ_TAIL))
        tail = out.read()
    text = bytes(tail).decode("utf-8", errors="replace")
    return Gate(code, text[-OUTPUT_TAIL:], timed_out, time.monotonic() - started)
