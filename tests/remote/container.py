"""The fakes' "container": a real process run in bubblewrap with the volumes a pod or sandbox would have.

A FAKE, for tests only. The system is bound read-only at ``/`` (as a read-only root filesystem) and ``/dev`` is fresh
(its own ``/dev/shm``). It has its own pid namespace: when its first process ends, every process in it ends, as in a
container; ``exec`` joins its pid and mount namespaces with ``nsenter``. Each volume is a host folder bound at its
mount path, so a workspace mounted at the server's own workspace path hides the server's copy, as on another machine.
It does not emulate the rest of a container: the process runs as the test's own user, in the host's network namespace
(securityContext, runtimeClassName and resources are recorded by the fake API, not enforced).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"}


class Container:
    def __init__(self, mounts: Sequence[str], root: Path | None = None) -> None:
        """``mounts``: the paths that get a fresh, empty, writable volume each."""
        self.root = root or Path(tempfile.mkdtemp(prefix="fake-volumes-"))
        self.binds: list[tuple[Path, str]] = []
        for i, path in enumerate(sorted(mounts, key=lambda p: (len(Path(p).parts), p))):
            host = self.root / f"v{i}"
            host.mkdir(parents=True, exist_ok=True)
            self.binds.append((host, path))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.init: subprocess.Popen[bytes] | None = None

    def host_path(self, path: str) -> Path | None:
        """Where ``path`` (inside) lives on the host, when it is inside a volume (the deepest one wins)."""
        for host, mount in sorted(self.binds, key=lambda b: -len(b[1])):
            if path == mount or path.startswith(mount.rstrip("/") + "/"):
                return host / os.path.relpath(path, mount)
        return None

    def _ns_member(self) -> int:
        """A process of the container's own command: inside its pid and mount namespaces once they are ready
        (bubblewrap execs the command only when every mount is in place; its own processes may be half set up)."""
        import psutil

        assert self.init is not None
        deadline = time.monotonic() + 10
        while True:
            for child in psutil.Process(self.init.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if child.name() != "bwrap":
                        return child.pid
            if self.init.poll() is not None or time.monotonic() > deadline:
                err = (self.root / "init.err").read_text(errors="replace") if (self.root / "init.err").is_file() else ""
                raise RuntimeError(f"the fake container is not running (its first process: {self.init.poll()}) {err}")
            time.sleep(0.01)

    def argv(self, command: Sequence[str], cwd: str | None) -> list[str]:
        """The first process starts the container (bubblewrap: its own pid and mount namespaces, its own ``/proc``,
        the volumes); later ones (exec) join that pid and mount namespace, as a container runtime's exec does.

        Not bubblewrap again under ``nsenter --pid``: that bwrap reads its child's pid (a number in the container's
        pid namespace) in the host's ``/proc``, so it dies whenever no host process has that number, leaving its
        child waiting forever with the command's pipes open (a command that hangs, or works, by the host's pids)."""
        if self.init is not None:
            join = ["nsenter", "--target", str(self._ns_member()), "--pid", "--mount", "--root", "--"]
            return [*join, "env", f"--chdir={cwd or '/'}", "--", *command]
        args = [
            "bwrap",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--die-with-parent",
            "--unshare-pid",
        ]
        for host, mount in self.binds:
            args += ["--bind", str(host), mount]
        if cwd:
            args += ["--chdir", cwd]
        return [*args, "--", *command]

    def run(
        self, command: Sequence[str], env: Mapping[str, str], cwd: str | None, *, stdin: int | None, stdout: object,
        stderr: object,
    ) -> subprocess.Popen[bytes]:  # fmt: skip
        if cwd and (inside := self.host_path(cwd)) is not None:
            inside.mkdir(parents=True, exist_ok=True)  # a container runtime makes a missing working directory
        proc = subprocess.Popen(
            self.argv(command, cwd), env={**BASE_ENV, **env}, stdin=stdin, stdout=stdout, stderr=stderr,  # type: ignore[arg-type]
            start_new_session=True,
        )  # fmt: skip
        self.procs.append(proc)
        if self.init is None:
            self.init = proc
        return proc

    def kill(self) -> None:
        # The init first: its namespace, and every process in it, ends with it.
        for proc in sorted(self.procs, key=lambda p: p is not self.init):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)
