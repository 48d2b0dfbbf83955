"""Acting on a running gVisor sandbox: ``runsc`` subcommands, and signals to its host processes.

On the host a sandbox is the wrapper, ``runsc run``, its gofer, the sandbox's kernel (the "sentry") and, on the
ptrace platform, one stub process per address space of the guest, each traced by the sentry. A signal to a stub
breaks the sentry: a SIGCONT that reaches a stub the sentry has just cloned (and waits to see stopped) makes it
panic ("error waiting for new clone: expected SIGSTOP, got continued", seen here under load) and the agent dies.
So the host side is signalled only in its untraced processes; the guest is stopped and continued by its own
kernel (``runsc pause``/``resume``), signalled by it (``runsc kill --all``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import psutil

from godel.runtimes.gvisor.oci import runsc_argv

_TIMEOUT = 10.0  # runsc talks to the sandbox over its control socket: milliseconds when the sandbox answers
_SLACK = 0.05  # seconds of tolerance when comparing process start times (as the local runtime does)


async def runsc(state: Path, *args: str) -> bool:
    """``runsc --root state … args``: whether it succeeded within ``_TIMEOUT`` (a stopped sandbox never answers)."""
    proc = await asyncio.create_subprocess_exec(
        *runsc_argv(state), *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        return await asyncio.wait_for(proc.wait(), _TIMEOUT) == 0
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return False


def _traced(proc: psutil.Process) -> bool:
    try:
        with open(f"/proc/{proc.pid}/status") as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return line.split(":", 1)[1].strip() != "0"
    except OSError:
        pass
    return False


def host_side(pid: int, started: float) -> list[psutil.Process]:
    """The untraced host processes of the sandbox whose wrapper is ``pid`` (started at ``started``): the wrapper
    first. Empty when that wrapper is gone (or the pid is someone else's by now)."""
    try:
        leader = psutil.Process(pid)
        if abs(leader.create_time() - started) > _SLACK:
            return []
        members = leader.children(recursive=True)
    except psutil.Error:
        return []
    return [leader, *(p for p in members if not _traced(p))]


def send(procs: list[psutil.Process], sig: signal.Signals) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)  # psutil checks the pid was not reused


async def wait_stopped(procs: list[psutil.Process], within: float = 2.0) -> None:
    """Until none of ``procs`` runs any more (a signal takes effect when its target is next scheduled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if not any(_running(p) for p in procs):
            return
        await asyncio.sleep(0.005)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() not in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False
