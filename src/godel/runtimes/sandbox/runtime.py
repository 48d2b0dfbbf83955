"""``SandboxRuntime``: the local runtime with every agent process inside bubblewrap.

Workspaces, snapshots, output and adoption are the local runtime's, unchanged: only the command changes. The
local runtime's wrapper (pid file, exit file, its own session) stays on the host and runs ``bwrap … /bin/sh -c
ENTRY … AGENT-ARGV`` instead of the agent's argv, so the exit status it records is the agent's (bwrap passes it
through; a signal becomes 128 + its number, as in the shell), and a TERM, STOP or KILL sent to the wrapper's
process group reaches every process in the sandbox (bwrap keeps the group: no ``--new-session``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from godel.core.ports import LaunchSpec, RuntimeCapabilities, RuntimeHandle
from godel.errors import FieldError, RuntimeFailure, ValidationError
from godel.runtimes.local import LocalRuntime
from godel.runtimes.processes import agent_env
from godel.runtimes.sandbox.bwrap import BWRAP, SOCAT, Confinement, bwrap_argv, entry_argv, write_etc

if TYPE_CHECKING:
    from godel.settings import Settings

INSTALL_HINT = "apt-get install bubblewrap socat"


def missing_tools() -> list[str]:
    """The programs the sandbox needs that are not on PATH."""
    return [tool for tool in (BWRAP, SOCAT) if shutil.which(tool) is None]


def tool_paths(agents_dir: Path | None) -> list[Path]:
    """What the agent CLIs need read-only: their install folder and the interpreter each Python venv in it was
    made from (a venv's ``bin/python`` is a symlink into that interpreter's prefix, e.g. under ``~/.pyenv``)."""
    if agents_dir is None or not agents_dir.is_dir():
        return []
    paths = [agents_dir.resolve()]
    for cfg in sorted((agents_dir / "venvs").glob("*/pyvenv.cfg")):
        for line in cfg.read_text(errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                prefix = Path(value.strip()).resolve().parent
                if prefix != Path("/usr") and prefix.is_dir():
                    paths.append(prefix)
    return paths


class SandboxRuntime(LocalRuntime):
    name = "sandbox"

    def __init__(
        self,
        worktrees_root: Path | None = None,
        logs_root: Path | None = None,
        *,
        run_root: Path | None = None,
        agents_dir: Path | None = None,
        gateway_socket: Path | None = None,
        gateway_port: int | None = None,
    ) -> None:
        """``run_root``: each agent's private directory is ``run_root/<agent-id>`` (its CLI config, output and home;
        default: ``run`` beside the worktrees). ``gateway_socket``: the Unix socket on which the server serves the
        gateway alone; the agent reaches it at ``127.0.0.1:gateway_port`` inside. Without it the sandbox has no
        way out at all. Fails closed: without bubblewrap and socat this runtime refuses to be built."""
        self._check_tools()
        super().__init__(worktrees_root, logs_root)
        self.run_root = run_root or self.worktrees_root.parent / "run"
        self.tools = tool_paths(agents_dir)
        self.gateway_socket = gateway_socket
        self.gateway_port = gateway_port
        self._etc = self.run_root / ".sandbox-etc"

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxRuntime:
        """Over the settings' directories. The sandbox reaches the gateway through the server's Unix socket,
        relayed inside to the port of the gateway URL the agents are given."""
        gateway: dict[str, Any] = {}
        if settings.use_gateway:
            gateway = {
                "gateway_socket": settings.gateway_socket,
                "gateway_port": urlsplit(settings.agent_gateway_url).port,
            }
        return cls(
            worktrees_root=settings.worktrees_dir, logs_root=settings.logs_dir, run_root=settings.home / "run",
            agents_dir=settings.agents_dir, **gateway,
        )  # fmt: skip

    def _check_tools(self) -> None:
        """Raise ``RuntimeFailure`` with the fix when what confines the agents is missing (a subclass that confines
        them by other means checks its own)."""
        missing = missing_tools()
        if missing:
            raise RuntimeFailure(
                f"the sandbox runtime needs {' and '.join(missing)}, which is not installed: {INSTALL_HINT} "
                '(or set runtime = "local" in godel.toml / GODEL_RUNTIME=local, which does not confine agents)',
                details={"missing": missing, "fix": INSTALL_HINT},
            )

    def capabilities(self) -> RuntimeCapabilities:
        return RuntimeCapabilities(
            name=self.name, isolation="namespace", pause=True, snapshot="git-ref", network_isolation=True
        )

    def private_dir(self, agent_id: str) -> Path:
        return self.run_root / agent_id

    # ------------------------------------------------------------------------------------ confinement

    async def _git_paths(self, handle: RuntimeHandle) -> tuple[list[Path], list[Path]]:
        """(read-only, read-write) paths git needs for commits in the worktree: the repository's git directory
        read-only, and read-write only where a commit writes (objects, refs, reflogs, this worktree's own git
        directory). Found from the repository, never from the workspace's ``.git`` file, which the agent may
        have rewritten to point anywhere."""
        common = handle.repo / ".git"
        if not common.is_dir():
            from godel.runtimes.git import git  # a repository that is itself a linked worktree: ask git

            common = Path(await git("rev-parse", "--path-format=absolute", "--git-common-dir", cwd=handle.repo))
        common = common.resolve()
        writable = [common / name for name in ("objects", "refs", "logs") if (common / name).is_dir()]
        try:
            text = (handle.workspace / ".git").read_text()
        except OSError:
            text = ""
        own = Path(text.removeprefix("gitdir:").strip()).resolve() if text.startswith("gitdir:") else None
        if own is not None and own.parent == common / "worktrees" and own.is_dir():
            writable.append(own)
        return [common], writable

    async def _confinement(
        self, handle: RuntimeHandle, cwd: Path, files: Sequence[Path], home: str | None
    ) -> Confinement:
        private = self.private_dir(handle.agent_id)
        agent_home = Path(home) if home else private / "home"
        await asyncio.to_thread(_prepare_dirs, [private, agent_home, *(f.parent for f in files)], self._etc)
        readonly, writable = await self._git_paths(handle)
        writable += [handle.workspace, private, agent_home]
        # Config files an adapter writes outside its private directory: their folders are the agent's too.
        writable += [f.parent for f in files if not f.parent.is_relative_to(private)]
        gateway_dir = self.gateway_socket.parent if self.gateway_socket is not None else None
        return Confinement(
            cwd=cwd, home=agent_home, etc=self._etc, writable=writable, readonly=[*self.tools, *readonly],
            gateway_dir=gateway_dir if gateway_dir is not None and gateway_dir.is_dir() else None,
        )  # fmt: skip

    def _entry(self, argv: Sequence[str]) -> list[str]:
        relay = self.gateway_port if self.gateway_socket is not None else None
        name = self.gateway_socket.name if self.gateway_socket is not None else ""
        return entry_argv(argv, relay, name)

    # -------------------------------------------------------------------------------------- processes

    async def start(self, handle: RuntimeHandle, launch: LaunchSpec) -> RuntimeHandle:
        cwd = handle.workspace / launch.cwd if launch.cwd else handle.workspace
        home = launch.env.get("HOME")
        confinement = await self._confinement(handle, cwd, list(launch.files), home)
        env = {"HOME": str(confinement.home), "TMPDIR": "/tmp", "USER": "agent", "LOGNAME": "agent", **launch.env}
        argv = await self._confined_argv(handle, confinement, launch.argv, env)
        return await super().start(handle, dataclasses.replace(launch, argv=argv, env=env))

    async def _confined_argv(
        self, handle: RuntimeHandle, confinement: Confinement, argv: Sequence[str], env: dict[str, str]
    ) -> list[str]:
        """What the host-side wrapper runs: the agent's ``argv`` inside ``confinement``. ``env`` is what the
        wrapper is given (bubblewrap passes it through to the agent)."""
        return [*bwrap_argv(confinement), *self._entry(argv)]

    async def _spawn_exec(self, handle: RuntimeHandle, argv: Sequence[str]) -> asyncio.subprocess.Process:
        if not argv:
            raise ValidationError("empty command", [FieldError("argv", "must not be empty")])
        # Resolved on the host first, so a missing program fails as it does in the local runtime (the sandbox
        # sees a subset of the host's files at the same paths: absent here is absent there).
        if shutil.which(argv[0], path=agent_env().get("PATH")) is None:
            raise FileNotFoundError(f"no such program: {argv[0]}")
        confinement = await self._confinement(handle, handle.workspace, [], None)
        env = {**agent_env({"GODEL_WORKSPACE": str(handle.workspace)}), "HOME": str(confinement.home), "TMPDIR": "/tmp"}
        return await asyncio.create_subprocess_exec(
            *bwrap_argv(confinement),
            *entry_argv(argv, None, ""),
            cwd=handle.workspace,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a timeout kills the command's whole group
        )


def _prepare_dirs(dirs: list[Path], etc: Path) -> None:
    for path in dirs:  # a bind needs its source to exist
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_etc(etc)
