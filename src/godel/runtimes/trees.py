"""An agent's process tree on this machine, as a runtime without cgroups sees it: the wrapper, its descendants and
those that left its process group (``setsid``), and whether each runs or is stopped. What SIGSTOP-based pause and
the tree kill of ``processes.LocalProcesses`` work from; a double-forked daemon re-parented away from the tree is
out of their reach (cgroups are not: ``godel.runtimes.cgroups``)."""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass, field

import psutil


@dataclass
class Tree:
    leader: psutil.Process | None  # the wrapper, verified; its pid is the process group id
    members: list[psutil.Process] = field(default_factory=list)  # all its descendants when last looked
    strays: list[psutil.Process] = field(default_factory=list)  # those that left the group (setsid)

    def add(self, other: Tree) -> None:
        known = {p.pid for p in self.members}
        self.leader = other.leader
        self.members += [p for p in other.members if p.pid not in known]
        known = {p.pid for p in self.strays}
        self.strays += [p for p in other.strays if p.pid not in known]


# Linux with CONFIG_PROC_CHILDREN lists each task's children; elsewhere psutil scans all of /proc.
_PROC_CHILDREN = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def descendants(pid: int) -> list[int] | None:
    """Descendant pids from the kernel's per-task ``children`` lists: cost grows with the agent's own tree,
    not with every process on the machine (psutil's ``children`` reads all of /proc, which made killing a
    thousand agents quadratic). None where the kernel does not provide the lists."""
    if not _PROC_CHILDREN:
        return None
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue  # it has just exited
        for tid in tids:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except (OSError, ValueError):
                continue
            found += kids
            todo += kids
    return found


def scan(leader: psutil.Process) -> Tree:
    pids = descendants(leader.pid)
    members: list[psutil.Process] = []
    if pids is None:
        try:
            members = leader.children(recursive=True)
        except psutil.Error:
            members = []
    else:
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                members.append(psutil.Process(pid))
    strays = []
    for proc in members:
        with contextlib.suppress(OSError):
            if os.getpgid(proc.pid) != leader.pid:
                strays.append(proc)
    return Tree(leader, members, strays)


def stop_pending(pid: int) -> bool:
    """Whether SIGSTOP is pending for ``pid`` (Linux; elsewhere False)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        pending = int(fields.get("SigPnd", "0"), 16) | int(fields.get("ShdPnd", "0"), 16)
    except (OSError, ValueError):
        return False
    return bool(pending & (1 << (signal.SIGSTOP - 1)))


def stopped(proc: psutil.Process) -> bool:
    """Stopped, or certain to stop before it runs again. The second case is real: a shell whose vfork child
    was stopped before it could exec waits for that child uninterruptibly ("disk-sleep") with its own
    SIGSTOP pending, and stays so until continued."""
    status = proc.status()
    if status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
        return True
    return status == psutil.STATUS_DISK_SLEEP and stop_pending(proc.pid)


def running(proc: psutil.Process) -> bool:
    """Alive and not (about to be) stopped."""
    try:
        return not stopped(proc) and proc.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
