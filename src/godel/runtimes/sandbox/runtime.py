"""``SandboxRuntime``: the local runtime with every agent process inside bubblewrap.

Workspaces, snapshots, output and adoption are the local runtime's, unchanged: only the command changes. The
local runtime's wrapper (pid file, exit file, its own session) stays on the host and runs ``bwrap … /bin/sh -c
ENTRY … AGENT-ARGV`` instead of the agent's argv, so the exit status it records is the agent's (bwrap passes it
through; a signal becomes 128 + its number, as in the shell), and a TERM, STOP or KILL sent to the wrapper's
process group reaches every process in the sandbox (bwrap keeps the group: no ``--new-session``).

Where the machine has cgroups (detected at start: v1 here, v2 elsewhere), the wrapper joins the agent's own before it
starts bwrap, so the whole sandbox is inside them: its resource limits, pause by the freezer, a kill of every task
and the accounting of what it used (``godel.runtimes.cgroups``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from godel.core.ports import LaunchSpec, RuntimeCapabilities, RuntimeHandle, WorkspaceSpec
from godel.errors import FieldError, RuntimeFailure, RuntimeUnavailableError, ValidationError
from godel.runtimes.cgroups import Cgroups
from godel.runtimes.local import LocalRuntime, workspace_options
from godel.runtimes.processes import agent_env
from godel.runtimes.sandbox.bwrap import BWRAP, EGRESS_PORT, SOCAT, Confinement, bwrap_argv, entry_argv, write_etc
from godel.runtimes.worktrees import run_setup

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
        egress_socket: Path | None = None,
        workspace_mode: str = "auto",
        workspace_cache_size: int = 16,
        cgroups: Cgroups | Literal[False] | None = None,
    ) -> None:
        """``run_root``: each agent's private directory is ``run_root/<agent-id>`` (its CLI config, output and home;
        default: ``run`` beside the worktrees). ``gateway_socket``: the Unix socket on which the server serves the
        gateway alone; the agent reaches it at ``127.0.0.1:gateway_port`` inside. Without it the sandbox has no
        way out at all. ``cgroups``: where each sandbox gets its cgroups (limits, the freezer, kill of every task,
        accounting); None detects them on this machine, False goes without (pause is then SIGSTOP, and limits are
        refused). Fails closed: without bubblewrap and socat this runtime refuses to be built."""
        missing = missing_tools()
        if missing:
            raise RuntimeUnavailableError(
                f"the sandbox runtime needs {' and '.join(missing)}, which is not installed: {INSTALL_HINT} "
                '(or set runtime = "local" in godel.toml / GODEL_RUNTIME=local, which does not confine agents)',
                details={"missing": missing, "fix": INSTALL_HINT},
            )
        super().__init__(
            worktrees_root,
            logs_root,
            workspace_mode=workspace_mode,
            workspace_cache_size=workspace_cache_size,
            cgroups=(Cgroups.detect() if cgroups is None else cgroups) or None,
        )
        self._set_confinement(run_root, agents_dir, gateway_socket, gateway_port, egress_socket)

    def _set_confinement(
        self, run_root: Path | None, agents_dir: Path | None, gateway_socket: Path | None, gateway_port: int | None,
        egress_socket: Path | None,
    ) -> None:  # fmt: skip
        """What every runtime built on the sandbox's confinement needs (also the container and gVisor runtimes, which
        do not run bubblewrap and so skip this constructor): the agents' private directories, the tools bound into
        them, the relays to the gateway and the egress proxy (in the gateway socket's directory, relayed inside to a
        port of its own), the generated /etc and the agents' git identity."""
        self.run_root = run_root or self.worktrees_root.parent / "run"
        self.tools = tool_paths(agents_dir)
        self.gateway_socket = gateway_socket
        self.gateway_port = gateway_port
        self.egress_socket = egress_socket if gateway_socket is not None else None
        self.egress_port = EGRESS_PORT if gateway_port != EGRESS_PORT else EGRESS_PORT + 1
        self._etc = self.run_root / ".sandbox-etc"
        self._gitconfig = agent_gitconfig()

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxRuntime:
        """Over the settings' directories. The sandbox reaches the gateway through the server's Unix socket,
        relayed inside to the port of the gateway URL the agents are given."""
        gateway: dict[str, Any] = {}
        if settings.use_gateway:
            gateway = {
                "gateway_socket": settings.gateway_socket,
                "gateway_port": urlsplit(settings.agent_gateway_url).port,
                "egress_socket": settings.egress_socket,
            }
        return cls(
            worktrees_root=settings.worktrees_dir, logs_root=settings.logs_dir, run_root=settings.home / "run",
            agents_dir=settings.agents_dir, **gateway, **workspace_options(settings),
        )  # fmt: skip

    def capabilities(self) -> RuntimeCapabilities:
        return RuntimeCapabilities(
            name=self.name, isolation="namespace", pause=True, snapshot="git-ref", network_isolation=True,
            workspace=self._workspaces.mode, resource_limits=self.enforces(), pause_freezes=self.freezes(),
            accounting=bool(self.enforces()),
        )  # fmt: skip

    async def prepare(self, spec: WorkspaceSpec) -> RuntimeHandle:
        """The local runtime's workspace, with its setup command run inside a sandbox of its own (no network,
        only the workspace and its git paths writable): the setup is what the spawn's caller wrote, possibly an
        agent through its API credential, and must not run on the host."""
        if not spec.setup:
            return await super().prepare(spec)
        handle = await super().prepare(dataclasses.replace(spec, setup=None))
        try:
            readonly, writable = await self._git_paths(handle)
            where = [handle.workspace, *writable]
            await run_setup(
                spec.setup, handle.workspace, spec.setup_timeout,
                confine=lambda argv: self.confine(argv, handle.workspace, writable=where, readonly=readonly),
            )  # fmt: skip
        except BaseException:  # a failed or cancelled setup leaves nothing behind, as in the local runtime
            await self.discard(handle)
            raise
        return handle

    def private_dir(self, agent_id: str) -> Path:
        return self.run_root / agent_id

    # ------------------------------------------------------------------------------------ confinement

    async def _git_paths(self, handle: RuntimeHandle) -> tuple[list[Path], list[Path]]:
        """(read-only, read-write) paths git needs inside for the agent's commits: its private git directory
        writable (objects, refs, logs, HEAD, the index), but not what would change what Godel's own git does there
        (``config``, ``hooks``, ``info``, ``objects/info``: bound read-only over it), and the user repository's
        object store read-only (the private directory's alternates). Nothing else of the user's repository is
        visible, so no ref, hook or config of it can be written. Found from Godel's own record, never from the
        workspace's ``.git`` file, which the agent may have rewritten to point anywhere."""
        from godel.runtimes.workspaces.gitdir import PROTECTED

        meta = self._workspaces.meta(handle.agent_id)
        if meta is None:
            return [], []
        private = self._workspaces.dirs(handle.agent_id).git
        readonly = [meta.git_common / "objects", *(private / name for name in PROTECTED if (private / name).exists())]
        return readonly, [private]

    async def _confinement(
        self, handle: RuntimeHandle, cwd: Path, files: Sequence[Path], home: str | None
    ) -> Confinement:
        private = self.private_dir(handle.agent_id)
        agent_home = _own_home(home, private, files) or private / "home"
        await asyncio.to_thread(
            _prepare_dirs, [private, agent_home, *(f.parent for f in files)], self._etc, agent_home, self._gitconfig
        )
        readonly, writable = await self._git_paths(handle)
        writable += [handle.workspace, private, agent_home]
        # Config files an adapter writes outside its private directory: their folders are the agent's too.
        writable += [f.parent for f in files if not f.parent.is_relative_to(private)]
        gateway_dir = self.gateway_socket.parent if self.gateway_socket is not None else None
        return Confinement(
            cwd=cwd, home=agent_home, etc=self._etc, writable=writable, readonly=[*self.tools, *readonly],
            gateway_dir=gateway_dir if gateway_dir is not None and gateway_dir.is_dir() else None,
        )  # fmt: skip

    def _entry(self, argv: Sequence[str], egress: bool) -> list[str]:
        relay = self.gateway_port if self.gateway_socket is not None else None
        name = self.gateway_socket.name if self.gateway_socket is not None else ""
        if not egress or self.egress_socket is None:
            return entry_argv(argv, relay, name)
        return entry_argv(argv, relay, name, self.egress_port, self.egress_socket.name)

    def _egress_env(self, credential: str | None) -> dict[str, str]:
        """The proxy variables that send the agent's other traffic through the egress proxy (with its credential),
        and keep the gateway on loopback direct. None when the server serves no egress proxy."""
        if credential is None or self.egress_socket is None or not self.egress_socket.exists():
            return {}
        proxy = f"http://{credential}@127.0.0.1:{self.egress_port}"
        direct = "127.0.0.1,localhost,::1"
        return {"HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy, "https_proxy": proxy,
                "NO_PROXY": direct, "no_proxy": direct}  # fmt: skip

    def confine(
        self, argv: Sequence[str], cwd: Path, *, writable: Sequence[Path], readonly: Sequence[Path] = ()
    ) -> list[str]:
        """``argv`` in a sandbox of its own, with no way out at all (no relay): for Godel's own commands on trees
        agents wrote (``CommandConfinement``). Its home and ``/tmp`` are a private tmpfs."""
        write_etc(self._etc)
        confinement = Confinement(
            cwd=cwd, home=Path("/tmp"), etc=self._etc, writable=list(writable), readonly=[*self.tools, *readonly],
            env={"HOME": "/tmp", "TMPDIR": "/tmp"},
        )  # fmt: skip
        return [*bwrap_argv(confinement), *entry_argv(argv, None, "")]

    # -------------------------------------------------------------------------------------- processes

    async def start(self, handle: RuntimeHandle, launch: LaunchSpec) -> RuntimeHandle:
        cwd = handle.workspace / launch.cwd if launch.cwd else handle.workspace
        home = launch.env.get("HOME")
        confinement = await self._confinement(handle, cwd, list(launch.files), home)
        env = {"TMPDIR": "/tmp", "USER": "agent", "LOGNAME": "agent", **launch.env, "HOME": str(confinement.home)}
        # The host's git configuration is not in the sandbox (an adapter may point at it): the agent's own is.
        env["GIT_CONFIG_GLOBAL"] = str(confinement.home / ".gitconfig")
        egress = self._egress_env(launch.egress)
        env.update(egress)
        argv = [*bwrap_argv(confinement), *self._entry(launch.argv, bool(egress))]
        return await super().start(handle, dataclasses.replace(launch, argv=argv, env=env))

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


def agent_gitconfig() -> str:
    """The agent's own ``~/.gitconfig``: an identity for its commits (the server user's, else Godel's), since the
    sandbox has no view of the host's git configuration. Without one, CLIs that commit fail, and some (aider) try to
    write one into the repository's config instead."""
    identity = {}
    for key, fallback in (("name", "Godel agent"), ("email", "agent@godel.localhost")):
        found = subprocess.run(
            ["git", "config", "--global", "--get", f"user.{key}"], capture_output=True, text=True, check=False
        )
        identity[key] = found.stdout.strip() if found.returncode == 0 and found.stdout.strip() else fallback
    return f"[user]\n\tname = {identity['name']}\n\temail = {identity['email']}\n"


def _prepare_dirs(dirs: list[Path], etc: Path, home: Path, gitconfig: str) -> None:
    """The folders of a launch (``dirs[0]``: the agent's private directory), and its ``~/.gitconfig`` when it has
    none. The agent wrote in its private directory on an earlier run (a retry, a restart): a folder there that is a
    symlink now is refused, and the ``.gitconfig`` is never written through one (the file a dangling symlink named
    was created on the host: found by a hostile review)."""
    private = dirs[0]
    for path in dirs:  # a bind needs its source to exist
        # Checked before it is made (a folder made through a symlink would be made on the host) and after.
        for _ in ("before", "after"):
            if _leads_elsewhere(path, private):
                raise RuntimeFailure(
                    f"the agent's folder {path} leads elsewhere (a symlink the agent left): not launched there",
                    details={"path": str(path)},
                )
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_etc(etc)
    try:
        fd = os.open(home / ".gitconfig", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        return  # the agent's own from then on (a symlink included: never written through)
    with os.fdopen(fd, "w") as f:
        f.write(gitconfig)


def _leads_elsewhere(path: Path, private: Path) -> bool:
    """True when ``path``, inside ``private``, resolves anywhere but where it says (a symlink on the way)."""
    if not path.is_relative_to(private):
        return False
    where = Path(os.path.realpath(private.parent)) / private.name / path.relative_to(private)
    return Path(os.path.realpath(path)) != where


def _own_home(home: str | None, private: Path, files: Sequence[Path]) -> Path | None:
    """``HOME`` as the launch asked, when it is the agent's own: inside its private directory, or the folder of a
    config file its adapter wrote; None otherwise. ``HOME`` may come from the spawn request's ``env``, and the home
    is bound writable: ``HOME=$GODEL_HOME`` (or ``/``) would hand the agent the server's secrets. A path through
    a symlink (which the agent may have planted in its private directory on an earlier run) is not its own either."""
    if not home or not os.path.isabs(home):
        return None
    path = Path(os.path.normpath(home))
    if os.path.realpath(path) != str(path):
        return None
    if path.is_relative_to(private) or path in {Path(os.path.normpath(f.parent)) for f in files}:
        return path
    return None
