"""Agent processes that outlive the server.

An agent must keep running when the server is killed (``kill -9``, a crash, an upgrade) and be re-adopted by
the next server. So nothing ties the agent to the server's life:

* It is launched through a tiny ``sh`` wrapper (``WRAPPER``) in its own session and process group, with stdin
  on ``/dev/null`` and stdout/stderr opened straight onto ``stdout.log``/``stderr.log`` in its log directory.
  There is no pipe to the server, so a dead server cannot SIGPIPE the agent or lose its output.
* The wrapper waits for the agent and records its exit status in an ``exit`` file (written to a temporary
  name, then renamed, so a reader never sees half of it). The status is therefore known even if the run ended
  while no server was watching. The wrapper catches TERM/INT/HUP with a no-op trap so that a signal sent to
  the group ends the agent but not the wrapper, which still records the agent's status (a caught signal is
  reset to its default in the child, unlike an ignored one, so the agent is unaffected).
* The pid is recorded with the process's start time; a pid is only trusted when both match, which guards
  against the pid having been reused by an unrelated process since.

* With cgroups (``cgroup_runs``; the sandbox runtime has them wherever the machine does), the wrapper joins the
  run's cgroups before it starts the agent: pause is then the freezer, a kill reaches every task of the cgroup (a
  double-forked ``setsid`` daemon included), the run's limits hold, and its accounting is read when it ends.
  Without, pause is SIGSTOP to the process group plus the processes seen to leave it (``trees``).

Children started by this server are kept as ``Popen`` objects so they are reaped (no zombies); processes
adopted after a restart are observed through psutil. When the wrapper itself dies by a signal (SIGKILL), the
supervisor records ``128 + signal`` in the exit file on its behalf, the shell's convention. When a run ends,
whatever it left running in its process group (``dev-server &``) is killed as the wrapper is reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

import psutil
import structlog

from godel.core.ports import RUN_KEY, LaunchSpec, ProcessState, ProcessStatus, RuntimeHandle
from godel.errors import AgentSpawnError
from godel.runtimes.cgroup_runs import RECORD, USAGE, RunCgroups, refuse_unenforceable
from godel.runtimes.cgroups import AgentCgroup, Cgroups
from godel.runtimes.trees import Tree, alive, running, scan, stopped

# $1 is the exit file, $2 the pid file, $3 the launch's id, $4 the record of the agent's cgroups (or "-"); the rest is
# the agent's argv. The wrapper records its own pid with the launch id before anything runs, so a server that dies
# between the fork and its own bookkeeping can still tell, after a restart, that *this* launch started (and not an
# earlier attempt whose files are still there). It then joins each cgroup of the record (one directory a line) before
# it starts the agent, so everything the agent starts is born inside them; if it cannot, the agent is not run at all
# (status 125): an agent never runs outside the limits it was given. `command -p` finds mv even if the agent's PATH
# is odd.
WRAPPER = (
    'f=$1; p=$2; r=$3; g=$4; shift 4; printf "%s %s\\n" "$$" "$r" >"$p.tmp" && command -p mv -f "$p.tmp" "$p"; c=0; '
    'if [ "$g" != - ]; then while IFS= read -r d; do printf "%s\\n" "$$" >"$d/cgroup.procs" || c=125; '
    'done <"$g" || c=125; fi; trap : HUP INT TERM; if [ $c = 0 ]; then "$@"; c=$?; '
    'else echo "godel-run: cannot join the cgroups in $g; not started" >&2; fi; '
    'printf "%s\\n" "$c" >"$f.tmp" && command -p mv -f "$f.tmp" "$f"'
)

log = structlog.get_logger("godel.runtime")

_CLOCK_SLACK = 0.05  # seconds of tolerance when comparing process start times

# The only variables an agent inherits from the server: enough to find programs and a home. Anything else
# (provider API keys above all) must be passed explicitly through LaunchSpec.env.
_INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")


def agent_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    env.setdefault("PATH", os.defpath)
    env.update(extra or {})
    return env


def exit_file(handle: RuntimeHandle) -> Path:
    return handle.log_dir / "exit"


def read_exit(handle: RuntimeHandle) -> int | None:
    try:
        text = exit_file(handle).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return int(text)
    except ValueError:
        return None


def pid_file(handle: RuntimeHandle) -> Path:
    return handle.log_dir / "pid"


def read_pid(handle: RuntimeHandle) -> tuple[int, str] | None:
    """The wrapper's pid and the launch id it was started with, as the wrapper recorded them."""
    try:
        pid, run = pid_file(handle).read_text().split()
        return int(pid), run
    except (OSError, ValueError):
        return None


def find_launch(handle: RuntimeHandle) -> tuple[int, float | None] | None:
    """The pid (and start time, if it still runs) of this handle's launch, found from what the wrapper left: its
    pid file when it names this launch, else a wrapper process still running with this launch's arguments (the
    server died between the fork and the wrapper's first line). None: this launch never started."""
    run = str(handle.extra.get(RUN_KEY) or "")
    recorded = read_pid(handle)
    if recorded is not None and (not run or recorded[1] == run):
        pid = recorded[0]
        try:
            proc = psutil.Process(pid)
            if _is_wrapper_of(proc, handle, run):
                return pid, proc.create_time()
        except (psutil.Error, OSError):  # gone (or never ours) by the time we looked
            pass
        return pid, None  # ended (its exit file tells how), or its pid was reused since: not to be trusted
    if not run:
        return None
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error, OSError):
            if _is_wrapper_of(proc, handle, run):
                return proc.pid, proc.create_time()
    return None


def _is_wrapper_of(proc: psutil.Process, handle: RuntimeHandle, run: str) -> bool:
    expected = ["/bin/sh", "-c", WRAPPER, "godel-run", str(exit_file(handle)), str(pid_file(handle)), run or "-"]
    # The wrapper leads its own session and group (``start_new_session``): a look-alike started by something else
    # (an agent imitating it to be adopted in its place) would have to lead a session of its own too.
    return proc.cmdline()[:7] == expected and os.getpgid(proc.pid) == proc.pid == os.getsid(proc.pid)


def record_exit(handle: RuntimeHandle, code: int) -> None:
    """Record an exit status on the wrapper's behalf, unless it recorded one itself."""
    if read_exit(handle) is not None or not handle.log_dir.is_dir():
        return
    tmp = handle.log_dir / "exit.godel.tmp"
    tmp.write_text(f"{code}\n")
    os.replace(tmp, exit_file(handle))


def write_private(path: Path, content: str) -> None:
    """Write a config file readable by its owner only (it may hold a gateway key)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)  # the file may have existed with a wider mode
        f.write(content)


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _retire_previous_run(log_dir: Path) -> None:
    """Move an earlier attempt's logs and exit file into ``run-N/``: a stale ``exit`` would end the new run
    at once, and old output must be kept, not overwritten."""
    names = [n for n in ("stdout.log", "stderr.log", "exit", "pid", RECORD, USAGE) if (log_dir / n).exists()]
    if not names:
        return
    n = 1
    while (log_dir / f"run-{n}").exists():
        n += 1
    (log_dir / f"run-{n}").mkdir()
    for name in names:
        os.replace(log_dir / name, log_dir / f"run-{n}" / name)


def _popen(handle: RuntimeHandle, launch: LaunchSpec, cgroup: AgentCgroup | None) -> subprocess.Popen[bytes]:
    log_dir = handle.log_dir
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # an agent's output may quote its secrets
    _retire_previous_run(log_dir)
    record = str(RunCgroups.record(handle, cgroup)) if cgroup is not None else "-"
    for path, content in launch.files.items():
        write_private(path, content)
    cwd = handle.workspace / launch.cwd if launch.cwd else handle.workspace  # an absolute cwd wins the join
    run = str(handle.extra.get(RUN_KEY) or "-")
    argv = [
        "/bin/sh", "-c", WRAPPER, "godel-run", str(exit_file(handle)), str(pid_file(handle)), run, record, *launch.argv
    ]  # fmt: skip
    with (
        open(log_dir / "stdout.log", "ab", opener=_private) as out,
        open(log_dir / "stderr.log", "ab", opener=_private) as err,
    ):
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=agent_env(launch.env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # own session and group: signals reach the whole tree, not the server
            close_fds=True,
        )


def _reap(child: subprocess.Popen[bytes]) -> int | None:
    """Reap the wrapper if it has ended, first killing what the run left behind in its process group
    (``server &``): the run is over, and its leftovers would otherwise live on unowned. Until the wrapper is
    reaped its pid cannot be reused, so the group id still names this run's group and nothing else."""
    try:
        ended = os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # already reaped (by Popen itself)
        return child.poll()
    if ended is None:
        return None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    return child.wait()


class LocalProcesses:
    """Start, observe, signal and adopt agent processes on this machine. With ``cgroups``, each run gets cgroups of its
    own (``cgroup_runs``): its limits, pause by the freezer, a kill of every task, accounting. Without, pause is
    SIGSTOP to the process group plus the processes that left it, and limits are refused."""

    def __init__(self, cgroups: Cgroups | None = None, *, name: str = "local") -> None:
        self.cgroups = cgroups
        self.name = name
        self._runs = RunCgroups(cgroups) if cgroups is not None else None
        # Our own children by pid, with their start time; polled so they are reaped.
        self._children: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
        # Children whose exit file exists but which had not been reaped yet; polled on every status().
        self._exiting: dict[int, RuntimeHandle] = {}
        self._procs: dict[int, psutil.Process] = {}

    async def start(self, handle: RuntimeHandle, launch: LaunchSpec) -> tuple[int, float]:
        if not launch.argv:
            raise AgentSpawnError("nothing to run: empty argv")
        refuse_unenforceable(self.cgroups, launch.limits, self.name)
        cgroup = await self._runs.fresh(handle, launch.limits) if self._runs is not None else None
        try:
            # On the loop, as asyncio starts git: Popen uses vfork (no copy of the server's memory, well under a
            # millisecond), while a hop to a worker thread costs more than that and, on a busy machine, far more.
            child = _popen(handle, launch, cgroup)
        except OSError as exc:
            if self._runs is not None:
                await self._runs.discard(handle)
            raise AgentSpawnError(f"cannot start the agent: {exc}", details={"argv": launch.argv}) from exc
        started = psutil.Process(child.pid).create_time()  # we have not reaped it, so the pid is still ours
        self._children[child.pid] = (child, started)
        return child.pid, started

    def _sweep(self) -> None:
        for handle in list(self._exiting.values()):
            self._live(handle)

    def _live(self, handle: RuntimeHandle) -> psutil.Process | None:
        """The wrapper process if it is alive and is the one recorded in the handle (not a reused pid)."""
        pid, expected = handle.pid, handle.pid_started
        if pid is None:
            return None
        if expected is None:  # a pid without its start time may be anyone's by now (even a child of ours)
            return None
        own = self._children.get(pid)
        if own is not None and abs(own[1] - expected) <= _CLOCK_SLACK:
            child, expected = own
            rc = _reap(child)
            if rc is not None:
                self._children.pop(pid, None)
                self._exiting.pop(pid, None)
                self._procs.pop(pid, None)
                record_exit(handle, rc if rc >= 0 else 128 - rc)
                return None
        proc = self._procs.get(pid)
        if proc is None or abs(proc.create_time() - expected) > _CLOCK_SLACK:
            try:
                proc = psutil.Process(pid)
                started = proc.create_time()
            except psutil.Error:
                return None
            if abs(started - expected) > _CLOCK_SLACK:
                return None
            self._procs[pid] = proc
        if not alive(proc):
            self._procs.pop(pid, None)
            return None
        return proc

    def adopt(self, handle: RuntimeHandle) -> bool:
        return self._live(handle) is not None or read_exit(handle) is not None

    def status(self, handle: RuntimeHandle) -> ProcessStatus:
        """A few syscalls (exit file, waitpid, /proc stat): cheap enough to run on the loop for each agent."""
        if self._exiting:
            self._sweep()
        # A live child of ours needs no look at the exit file: if it has just written one, the next look
        # (after it has exited, milliseconds later) reports the exit.
        fast = self._own_child_state(handle)
        if fast is not None:
            return fast
        code = read_exit(handle)
        if code is not None:
            if handle.pid in self._children and self._live(handle) is not None:
                self._exiting[handle.pid] = handle  # the wrapper is between its rename and its exit
            return ProcessStatus(ProcessState.EXITED, code)
        proc = self._live(handle)
        if proc is not None:
            with contextlib.suppress(psutil.Error):
                return ProcessStatus(ProcessState.STOPPED if self._paused(handle, proc) else ProcessState.RUNNING)
        # Dead: it may have written its exit file between our first look and now.
        code = read_exit(handle)
        if code is not None:
            return ProcessStatus(ProcessState.EXITED, code)
        return ProcessStatus(ProcessState.GONE)

    def _paused(self, handle: RuntimeHandle, proc: psutil.Process) -> bool:
        """Stopped by a signal, or frozen (a frozen task reads as in an uninterruptible wait, ``D``)."""
        if stopped(proc):
            return True
        return self._runs is not None and proc.status() == psutil.STATUS_DISK_SLEEP and self._runs.frozen(handle)

    async def settle(self, handle: RuntimeHandle, status: ProcessStatus) -> ProcessStatus:
        """An ended run's status with its accounting, once its cgroups are settled (``RunCgroups.settle``)."""
        if self._runs is None or status.state is not ProcessState.EXITED:
            return status
        usage = await self._runs.settle(handle, lambda: self._live(handle))  # reaps our own wrapper once it ended
        return dataclasses.replace(status, usage=usage) if usage is not None else status

    async def release(self, handle: RuntimeHandle) -> None:
        """The agent's workspace goes and no run of it is live: tidy up cgroups a vanished run left."""
        if self._runs is not None:
            await self._runs.release(handle)

    def _own_child_state(self, handle: RuntimeHandle) -> ProcessStatus | None:
        """The common case, watched ten times a second for every agent: a child of ours that has not ended.
        An unreaped child's pid cannot be reused, so one ``waitid`` and one read of ``/proc/<pid>/stat``
        settle it without psutil (which costs several times more). None: take the general path."""
        pid = handle.pid
        own = self._children.get(pid) if pid is not None else None
        if pid is None or own is None or handle.pid_started is None:
            return None
        if abs(own[1] - handle.pid_started) > _CLOCK_SLACK:
            return None
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return None  # it has ended: the general path reaps it and records the status
            with open(f"/proc/{pid}/stat", "rb") as f:
                raw = f.read()
        except (ChildProcessError, OSError):
            return None
        state = raw[raw.rindex(b")") + 2 : raw.rindex(b")") + 3]
        if state in (b"T", b"t"):
            return ProcessStatus(ProcessState.STOPPED)
        if state in (b"R", b"S"):
            return ProcessStatus(ProcessState.RUNNING)
        # Zombie, or uninterruptible sleep, which may be a vfork parent with a SIGSTOP pending (then it counts
        # as stopped): the general path tells these apart.
        return None

    # ------------------------------------------------------------------------------------------- signals

    @staticmethod
    def _send(tree: Tree, sig: signal.Signals) -> None:
        if tree.leader is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(tree.leader.pid, sig)
        # killpg misses the strays; SIGKILL also goes to every member one by one, for those left behind
        # when the wrapper is already gone (it cannot be delivered twice in a way anyone notices).
        for proc in tree.members if sig == signal.SIGKILL else tree.strays:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)  # psutil checks the pid was not reused

    async def host_tree(self, handle: RuntimeHandle) -> Tree:
        """The run's processes on this host now (the wrapper and its descendants), for ``finish_off``."""
        return await self._tree(handle)

    @staticmethod
    async def finish_off(tree: Tree, within: float = 5.0) -> bool:
        """KILL what is left of ``tree`` (taken while the run was live) and wait until it is gone; True if it is. For
        runtimes whose own processes can outlive the wrapper: runsc's sandbox, reparented once ``runsc run`` exits,
        is no longer the wrapper's descendant when the wrapper's tree is killed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while left := [p for p in tree.members if alive(p)]:
            if loop.time() >= deadline:
                return False
            for proc in left:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(signal.SIGKILL)  # psutil checks the pid was not reused
            await asyncio.sleep(0.02)
        return True

    async def _tree(self, handle: RuntimeHandle) -> Tree:
        leader = self._live(handle)
        if leader is None:
            return Tree(None)
        # Finding descendants scans /proc: milliseconds with many processes, so in a thread.
        return await asyncio.to_thread(scan, leader)

    def _cgroup(self, handle: RuntimeHandle, *, freezer: bool = False) -> AgentCgroup | None:
        """The run's cgroups (with a freezer, if asked) when its wrapper is the live, recorded one: never act on the
        cgroup of a handle whose pid is stale (the cgroup is named by agent, and a newer run may be in it)."""
        cgroup = self._runs.of(handle) if self._runs is not None else None
        if cgroup is None or (freezer and not cgroup.has_freezer) or self._live(handle) is None:
            return None
        return cgroup

    async def pause(self, handle: RuntimeHandle) -> None:
        cgroup = self._cgroup(handle, freezer=True)
        if cgroup is not None:
            await self._freeze(handle, cgroup)
            return
        await self._stop_tree(handle)

    async def _freeze(self, handle: RuntimeHandle, cgroup: AgentCgroup) -> None:
        """Freeze the run's cgroup: every task stops, those that left the process group or the session included, and
        any forked meanwhile. A wrapper paused in its first instants may not have joined yet: it is waited for, and
        freezes as it joins (a task that enters a frozen cgroup is frozen)."""
        if not await cgroup.freeze():
            log.warning("the freezer did not settle in time", agent=handle.agent_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        while loop.time() < deadline:
            if handle.pid in cgroup.pids() or self._live(handle) is None:
                return
            await asyncio.sleep(0.002)

    async def _stop_tree(self, handle: RuntimeHandle) -> None:
        """SIGSTOP the tree; returns once every process in it has stopped (a signal takes effect when its
        target is next scheduled), so "paused" means nothing runs any more. Each look rescans the tree: a
        child whose fork completed as the signal went out has it pending and is waited for too."""
        tree = await self._tree(handle)
        if tree.leader is None:
            return
        self._send(tree, signal.SIGSTOP)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        while loop.time() < deadline:
            now = await self._tree(handle)
            if now.leader is None:
                return
            known = {p.pid for p in tree.strays}
            self._send(Tree(None, strays=[p for p in now.strays if p.pid not in known]), signal.SIGSTOP)
            tree.add(now)
            if not any(running(p) for p in (now.leader, *now.members)):
                return
            await asyncio.sleep(0.005)

    async def resume(self, handle: RuntimeHandle) -> None:
        cgroup = self._cgroup(handle, freezer=True)
        if cgroup is not None:
            await cgroup.thaw()
            return
        self._send(await self._tree(handle), signal.SIGCONT)

    async def _wait_gone(
        self, handle: RuntimeHandle, tree: Tree, within: float, cgroup: AgentCgroup | None = None
    ) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            if (
                self._live(handle) is None
                and not any(alive(p) for p in tree.members)
                and not (cgroup is not None and cgroup.pids())
            ):
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)

    async def terminate(self, handle: RuntimeHandle, grace: float) -> None:
        """TERM (and CONT, in case it is paused) to the tree; KILL whatever is left after ``grace``. Returns
        once every process seen is dead, so the workspace can be removed safely afterwards.

        One TERM can be lost: if it arrives in the instant the wrapper is between forking the agent and
        exec'ing it (or while a pause holds it there), the wrapper's trap consumes it in the child. The KILL
        after the grace covers that case."""
        tree = await self._tree(handle)
        if tree.leader is None:
            await self.settle(handle, self.status(handle))  # ended already: what it left in its cgroups goes
            return
        cgroup = self._cgroup(handle)
        self._send(tree, signal.SIGTERM)  # with cgroups too: the wrapper may not have joined them yet
        if cgroup is not None:
            await cgroup.signal(signal.SIGTERM)  # every task, setsid daemons included; a frozen run is thawed
        self._send(tree, signal.SIGCONT)  # a stopped process acts on TERM only once continued
        sent = signal.SIGTERM
        if not await self._wait_gone(handle, tree, grace, cgroup):
            tree.add(await self._tree(handle))  # include children forked during the grace period
            self._send(tree, signal.SIGKILL)
            if cgroup is not None:
                await cgroup.kill()
            sent = signal.SIGKILL
            await self._wait_gone(handle, tree, 5.0, cgroup)
        if self._live(handle) is None:
            record_exit(handle, 128 + sent)  # an adopted wrapper killed outright recorded nothing itself
        await self.settle(handle, self.status(handle))
