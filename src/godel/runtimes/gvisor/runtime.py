"""``GVisorRuntime``: the sandbox runtime's contract, with gVisor's own kernel between the agent and the host's.

The confinement (which paths, read-only or writable, the gateway's socket) is the bubblewrap sandbox's, computed by
the same code (``SandboxRuntime._confinement``, git's paths from ``_git_paths``); only how it is enforced changes.
The local runtime's wrapper stays on the host and runs ``runsc … run --bundle B godel-<agent-id>`` instead of
bwrap, so the pid and exit files, adoption after a server restart and output to the log files are unchanged. The
container's processes are not processes of the host: on the host the sandbox is ``runsc`` (the wrapper's child,
which the sandbox's kernel dies with: ``--attached``), its gofer, and the kernel ("sentry") with its ptrace stubs.

Signals (see ``control``). The stubs must not be signalled (the sentry panics), so ``pause`` and ``resume`` are
``runsc pause``/``resume`` (the guest's own kernel stops every task) plus SIGSTOP/SIGCONT to the untraced host
processes, and a TERM must not go to runsc or its gofer (they die of it at once, the agent without its grace
period): ``terminate`` asks runsc to signal every process inside (``runsc kill --all``), TERM and, after the grace,
KILL; the host side's tree is signalled only for what is left after that.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import psutil
import structlog

from godel.core.ports import LaunchSpec, ProcessState, RuntimeCapabilities, RuntimeHandle
from godel.errors import FieldError, RuntimeUnavailableError, ValidationError
from godel.runtimes.gvisor import control, oci
from godel.runtimes.local import LocalRuntime
from godel.runtimes.processes import agent_env
from godel.runtimes.sandbox.bwrap import SOCAT, Confinement, entry_argv, write_etc
from godel.runtimes.sandbox.runtime import SandboxRuntime
from godel.runtimes.workspaces import jail

INSTALL_HINT = "apt-get install runsc socat bubblewrap"
_PROBE_TIMEOUT = 60.0  # a no-op sandbox starts in well under a second; the KVM platform's hang is what this catches
_LIVE = (ProcessState.RUNNING, ProcessState.STOPPED)
_DONE = {ProcessState.EXITED, ProcessState.GONE}
log = structlog.get_logger("godel.runtime")
# Run an exec's ``runsc run`` ($2…), then remove its one-off bundle and state ($1); exit with runsc's status.
_EXEC = 'd=$1; shift; "$@"; c=$?; rm -rf "$d"; exit $c'
# The same for ``confine``, first writing the caller's environment for the command inside ($1/env/vars, owner only).
_CONFINED = 'd=$1; shift; (umask 077; export -p >"$d/env/vars") && "$@"; c=$?; rm -rf "$d"; exit $c'
# Inside: take that environment, with gVisor's memory as home and /tmp, then run the command ($2…).
_WITH_ENV = '. "$1" && shift && export HOME=/tmp TMPDIR=/tmp && exec "$@"'


def gvisor_ids() -> tuple[int, int]:
    """The uid and gid inside: the server's own. gVisor (this 2022 build) cannot map ids as bubblewrap does (a user
    namespace in the spec fails to start the gofer), and files keep their host owner inside, so another id could not
    write the workspace the server made. When the server is root the agent is uid 0 of gVisor's kernel, with every
    capability set empty and ``no_new_privs``."""
    return os.getuid(), os.getgid()


def container_id(agent_id: str, suffix: str = "") -> str:
    """runsc's name for the sandbox: unique on the machine (its control socket is named after it)."""
    return "godel-" + re.sub(r"[^A-Za-z0-9_.-]", "_", agent_id) + suffix


def runsc_problem() -> str | None:
    """Why this machine cannot run the gvisor runtime, or None. Checked by running a no-op sandbox once per process
    (about half a second), so a runsc that is installed but cannot start a sandbox fails closed too."""
    runsc = shutil.which(oci.RUNSC)
    if runsc is None:
        return "runsc (gVisor) is not installed"
    if shutil.which(SOCAT) is None:
        return "socat (the gateway relay inside the sandbox) is not installed"
    if not jail.available():
        return f"bubblewrap is not installed ({jail.WHY})"
    if os.geteuid() != 0:
        return "runsc needs the server to run as root here (its rootless mode is not supported by Godel)"
    return _probe(runsc)


@functools.cache
def _probe(runsc: str) -> str | None:  # by path: a runsc installed later is probed afresh
    base = Path(
        tempfile.mkdtemp(prefix="godel-gvisor-probe-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    )
    try:
        etc = base / "etc"
        write_etc(etc, gvisor_ids())
        config = oci.spec(
            Confinement(cwd=Path("/"), home=base, etc=etc), ["/bin/true"], {"PATH": "/usr/bin"}, gvisor_ids()
        )
        oci.write_bundle(base / "bundle", config)
        argv = [*oci.runsc_argv(base / "state"), "run", "--bundle", str(base / "bundle")]
        argv.append(container_id(f"probe-{os.getpid()}-{secrets.token_hex(4)}"))
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=_PROBE_TIMEOUT, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            return f"runsc did not run a no-op sandbox within {_PROBE_TIMEOUT:g}s (platform {oci.PLATFORM})"
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            return f"runsc cannot start a sandbox here (exit {done.returncode}: {last})"
        return None
    finally:
        shutil.rmtree(base, ignore_errors=True)


class GVisorRuntime(SandboxRuntime):
    name = "gvisor"

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
    ) -> None:
        """As ``SandboxRuntime``. Fails closed: without a working runsc (and socat) this runtime refuses to be
        built, with the reason and the fix."""
        problem = runsc_problem()
        if problem is not None:
            raise RuntimeUnavailableError(  # a fallback chain moves on
                f"the gvisor runtime cannot run here: {problem}. Install it with {INSTALL_HINT} (runsc is Debian's "
                'gVisor package), or set runtime = "sandbox" (bubblewrap) or "local" in godel.toml / GODEL_RUNTIME',
                details={"reason": problem, "fix": INSTALL_HINT},
            )
        # Not SandboxRuntime.__init__: its checks are for bubblewrap's sandbox, which gVisor does not use. The same
        # attributes, so the sandbox's confinement (its git paths, its egress relay) works here unchanged.
        LocalRuntime.__init__(
            self, worktrees_root, logs_root, workspace_mode=workspace_mode, workspace_cache_size=workspace_cache_size
        )
        self._set_confinement(run_root, agents_dir, gateway_socket, gateway_port, egress_socket)
        self._gvisor_root = self.run_root / ".gvisor"  # bundles and runsc state, per agent; never bound inside
        self._gvisor_etc = self.run_root / ".gvisor-etc"  # passwd and group naming gVisor's ids: what the bundles bind
        # Written once here, before agents start at the same time (each start only checks it is still in place).
        write_etc(self._gvisor_etc, gvisor_ids())

    def capabilities(self) -> RuntimeCapabilities:
        return RuntimeCapabilities(
            name=self.name, isolation="user-kernel", pause=True, snapshot="git-ref", network_isolation=True
        )

    def sandbox_dir(self, agent_id: str) -> Path:
        """Where an agent's bundles and runsc state live (outside everything bound into its sandbox)."""
        return self._gvisor_root / agent_id

    # ------------------------------------------------------------------------------------ the bundle

    async def _bundle(
        self, run_dir: Path, confinement: Confinement, args: Sequence[str], env: dict[str, str]
    ) -> list[str]:
        """Write the bundle of ``args`` under ``run_dir`` and return the ``runsc … run`` command for it (without
        the container id). ``env`` is the agent's whole environment: runsc passes none of its own on."""
        confinement = dataclasses.replace(confinement, etc=self._gvisor_etc)
        config = oci.spec(confinement, args, agent_env(env), gvisor_ids())
        await asyncio.to_thread(_fresh_bundle, run_dir, config, self._gvisor_etc)
        return [*oci.runsc_argv(run_dir / "state"), "run", "--bundle", str(run_dir / "bundle")]

    async def start(self, handle: RuntimeHandle, launch: LaunchSpec) -> RuntimeHandle:
        cwd = handle.workspace / launch.cwd if launch.cwd else handle.workspace
        confinement = await self._confinement(handle, cwd, list(launch.files), launch.env.get("HOME"))
        env = {"TMPDIR": "/tmp", "USER": "agent", "LOGNAME": "agent", **launch.env, "HOME": str(confinement.home)}
        # The host's git configuration is not in the sandbox (an adapter may point at it): the agent's own is.
        env["GIT_CONFIG_GLOBAL"] = str(confinement.home / ".gitconfig")
        egress = self._egress_env(launch.egress)
        env.update(egress)
        args = self._entry(launch.argv, bool(egress))
        run = await self._bundle(self.sandbox_dir(handle.agent_id) / "run", confinement, args, env)
        argv = [*run, container_id(handle.agent_id)]
        # The wrapper gets the same environment, as in the other runtimes; runsc itself runs with none (``env -i``).
        return await LocalRuntime.start(self, handle, dataclasses.replace(launch, argv=argv, env=env))

    def confine(
        self, argv: Sequence[str], cwd: Path, *, writable: Sequence[Path], readonly: Sequence[Path] = ()
    ) -> list[str]:
        """``argv`` in a gVisor sandbox of its own with no way out at all, for Godel's own commands on trees agents
        wrote (a setup command, a merge gate: ``CommandConfinement``). Its home and ``/tmp`` are gVisor's memory.
        The caller's environment reaches the command as it does through bubblewrap: the host-side shell writes it
        (owner only) to a file bound read-only inside, which the command's shell reads before it runs."""
        token = secrets.token_hex(6)
        run_dir = self._gvisor_root / ".commands" / token
        env_dir = run_dir / "env"
        confinement = Confinement(
            cwd=cwd, home=Path("/tmp"), etc=self._gvisor_etc, writable=list(writable),
            readonly=[*self.tools, *readonly, env_dir],
        )  # fmt: skip
        args = ["/bin/sh", "-c", _WITH_ENV, "godel-confined", str(env_dir / "vars"), *entry_argv(argv, None, "")]
        config = oci.spec(confinement, args, {"PATH": agent_env()["PATH"]}, gvisor_ids())
        _fresh_bundle(run_dir, config, self._gvisor_etc)
        env_dir.mkdir(mode=0o700)
        run = [*oci.runsc_argv(run_dir / "state"), "run", "--bundle", str(run_dir / "bundle")]
        return ["/bin/sh", "-c", _CONFINED, "godel-gvisor-command", str(run_dir), *run, container_id(f"cmd-{token}")]

    # -------------------------------------------------------------------------------------- processes

    def _state(self, handle: RuntimeHandle) -> Path:
        return self.sandbox_dir(handle.agent_id) / "run" / "state"

    async def _host_side(self, handle: RuntimeHandle) -> list[psutil.Process]:
        if handle.pid is None or handle.pid_started is None or (await self.status(handle)).state not in _LIVE:
            return []
        return await asyncio.to_thread(control.host_side, handle.pid, handle.pid_started)

    async def pause(self, handle: RuntimeHandle) -> None:
        """The guest stopped by its own kernel (``runsc pause``: every task, daemons and busy loops included), then
        the host side's untraced processes by SIGSTOP, so the wrapper reads as stopped and nothing of the sandbox
        runs. A sandbox still being created cannot be paused by runsc yet; stopping its kernel holds it all the same.
        Returns once the host side has stopped."""
        procs = await self._host_side(handle)
        if not procs:
            return
        await control.runsc(self._state(handle), "pause", container_id(handle.agent_id))
        procs = await self._host_side(handle)  # a sandbox being created may have gained processes meanwhile
        control.send(procs, signal.SIGSTOP)
        await control.wait_stopped(procs)

    async def resume(self, handle: RuntimeHandle) -> None:
        control.send(await self._host_side(handle), signal.SIGCONT)
        await control.runsc(self._state(handle), "resume", container_id(handle.agent_id))

    async def _kill_inside(self, handle: RuntimeHandle, sig: str) -> bool:
        """``runsc kill --all``: ``sig`` to every process in the agent's sandbox. False when runsc could not."""
        return await control.runsc(self._state(handle), "kill", "--all", container_id(handle.agent_id), sig)

    async def _ended_within(self, handle: RuntimeHandle, seconds: float) -> bool:
        try:
            await self.wait_for_state(handle, _DONE, timeout=max(seconds, 0.0))
        except TimeoutError:
            return False
        return True

    async def terminate(self, handle: RuntimeHandle, *, grace: float = 5.0) -> None:
        """TERM to every process inside, KILL to whatever is left after ``grace``; then the host side's tree, by
        signal, for anything still there (a sandbox that was still being created, or whose kernel did not answer).
        Returns once nothing of the sandbox runs, its runsc state removed."""
        state = (await self.status(handle)).state
        host = await self._processes.host_tree(handle)  # before runsc run exits and its sandbox is reparented
        if state in _LIVE:
            if state is ProcessState.STOPPED:
                await self.resume(handle)  # a stopped sandbox kernel cannot take the signal
            if not (await self._kill_inside(handle, "TERM") and await self._ended_within(handle, grace)):
                if await self._kill_inside(handle, "KILL"):
                    await self._ended_within(handle, 5.0)
        await super().terminate(handle, grace=0.0)
        if not await self._processes.finish_off(host):
            log.error("processes of a gVisor sandbox outlived its kill", agent=handle.agent_id)
        await asyncio.to_thread(shutil.rmtree, self._state(handle), True)

    async def cleanup(self, handle: RuntimeHandle) -> None:
        await super().cleanup(handle)
        await asyncio.to_thread(shutil.rmtree, self.sandbox_dir(handle.agent_id), True)

    async def _spawn_exec(self, handle: RuntimeHandle, argv: Sequence[str]) -> asyncio.subprocess.Process:
        """A command in the workspace, in a sandbox of its own (``runsc run`` of a one-off bundle, removed when the
        command ends), with the agent's confinement and without the gateway."""
        if not argv:
            raise ValidationError("empty command", [FieldError("argv", "must not be empty")])
        if shutil.which(argv[0], path=agent_env().get("PATH")) is None:  # absent outside is absent inside
            raise FileNotFoundError(f"no such program: {argv[0]}")
        confinement = await self._confinement(handle, handle.workspace, [], None)
        env = {"GODEL_WORKSPACE": str(handle.workspace), "HOME": str(confinement.home), "TMPDIR": "/tmp"}
        token = secrets.token_hex(4)
        run_dir = self.sandbox_dir(handle.agent_id) / f"exec-{token}"
        run = await self._bundle(run_dir, confinement, entry_argv(argv, None, ""), env)
        # The shell removes the one-off bundle when runsc returns; a timeout's kill of the group leaves it to cleanup.
        cid = container_id(handle.agent_id, f"-exec-{token}")
        return await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", _EXEC, "godel-gvisor-exec", str(run_dir), *run, cid,
            cwd=handle.workspace, env=agent_env(env),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a timeout kills the command's whole group, runsc and its sandbox with it
        )  # fmt: skip


def _fresh_bundle(run_dir: Path, config: dict[str, object], etc: Path) -> None:
    write_etc(etc, gvisor_ids())
    shutil.rmtree(run_dir / "state", ignore_errors=True)  # what a killed run left: its container would clash
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    oci.write_bundle(run_dir / "bundle", config)
