"""Control groups for agents: limits, a pause nothing escapes, a kill nothing survives, and accounting.

Each agent gets a cgroup named by its id under a ``godel`` parent: in each hierarchy on cgroup v1 (memory, cpu,
cpuacct, pids and freezer; each mounted alone or co-mounted, as ``cpu,cpuacct``), or once in the unified tree on
v2. Which one the machine has is detected at start (v2 when ``/sys/fs/cgroup/cgroup.controllers`` exists at the
top; a hybrid layout, whose ``unified`` tree carries no controller, is v1), together with the controllers that are
there and writable: a limit that needs a missing controller is refused by the caller, never dropped.

* Where. On v1 the parent sits inside the server's own cgroup of each hierarchy (``/proc/self/cgroup``), so agents
  stay within whatever the server itself was given (on this project's machines a shell starts in a nested memory
  cgroup of its own). On v2 a cgroup that holds processes cannot hand controllers down to children, so the parent
  is made at the top of the tree, which root may do (not verified on this machine: its v2 tree has no controller).
* Joining without a race. The agent's host-side wrapper writes its own pid into each ``cgroup.procs`` listed in a
  record file before it runs anything, so every process of the agent, forked, double-forked or ``setsid``, is born
  inside. The same record lets a restarted server find the cgroups again (``Cgroups.find``): by name under its own
  parents, else at the recorded paths (the server may now run in another cgroup), accepted only where the leaf is
  the agent's id under a ``godel`` parent.
* Pause is the freezer (v1 ``freezer.state``, v2 ``cgroup.freeze``), polled until the kernel reports it frozen:
  every task stops, including one forked meanwhile or one that moved to a session of its own, and no SIGCONT undoes
  it. A frozen task reads as ``D`` in ``/proc``.
* Kill: freeze, SIGKILL every task, thaw (v2: ``cgroup.kill``), repeated until no task is left.
* Accounting (CPU seconds, peak memory, OOM kills, refused forks) is read before the cgroup is removed, which
  happens once it is empty (``rmdir`` is retried while the kernel still counts a dying task: EBUSY).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from godel.core.limits import CPU, MEMORY, PIDS, ResourceLimits, ResourceUsage
from godel.errors import RuntimeFailure

MOUNT = Path("/sys/fs/cgroup")
PARENT = "godel"
FREEZER, CPUACCT = "freezer", "cpuacct"
V1_CONTROLLERS = (MEMORY, CPU, CPUACCT, PIDS, FREEZER)
CFS_PERIOD_US = 100_000
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Layout:
    """What the machine offers: the cgroup version and, per usable controller, the directory in which agents'
    cgroups are made (on v2 every controller maps to the same directory)."""

    version: int
    mount: Path
    parents: Mapping[str, Path]


def _own_paths(text: str) -> dict[str, str]:
    """``/proc/self/cgroup`` as controller -> path (v2's single line under the key "")."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            out[""] = path
        for name in controllers.split(","):
            out[name] = path
            out[f"hierarchy:{name}"] = controllers  # the hierarchy's mount name when co-mounted
    return out


def detect(mount: Path = MOUNT, own: str | None = None) -> Layout | None:
    """The cgroup layout under ``mount`` as seen by a process whose ``/proc/self/cgroup`` reads ``own`` (default:
    this process's). None when there is no cgroup file system there at all."""
    if own is None:
        try:
            own = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None
    paths = _own_paths(own)
    if (mount / "cgroup.controllers").is_file():
        return _detect_v2(mount)
    parents: dict[str, Path] = {}
    for name in V1_CONTROLLERS:
        if name not in paths:
            continue
        hierarchy = next(
            (mount / d for d in (name, paths[f"hierarchy:{name}"]) if (mount / d / "cgroup.procs").is_file()), None
        )
        if hierarchy is None:
            continue
        home = (hierarchy / paths[name].lstrip("/")).resolve()
        if home.is_dir() and os.access(home, os.W_OK):
            parents[name] = home / PARENT
    return Layout(1, mount, parents) if parents else None


def _detect_v2(mount: Path) -> Layout | None:
    if not os.access(mount, os.W_OK):
        return None
    try:
        offered = set((mount / "cgroup.controllers").read_text().split())
    except OSError:
        return None
    parent = mount.resolve() / PARENT
    # The core files (cgroup.freeze, cpu.stat) need no controller: the freezer and CPU accounting are always there.
    names = [n for n in (MEMORY, CPU, PIDS) if n in offered] + [FREEZER, CPUACCT]
    return Layout(2, mount, {n: parent for n in names})


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _field(text: str | None, key: str) -> int:
    """The value of ``key`` in a flat-keyed cgroup file (``oom_kill 3``), 0 when absent."""
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def _number(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


@dataclass(frozen=True)
class AgentCgroup:
    """One agent's cgroup(s): controller -> its directory."""

    agent_id: str
    version: int
    dirs: Mapping[str, Path]

    def paths(self) -> list[Path]:
        """Each directory once (co-mounted controllers, and v2, share one)."""
        return list(dict.fromkeys(self.dirs.values()))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.paths():
            found.update(int(p) for p in (_read(path / "cgroup.procs") or "").split() if p.isdigit())
        return found

    def exists(self) -> bool:
        return any(path.is_dir() for path in self.paths())

    # ------------------------------------------------------------------------------------------- freezer

    @property
    def has_freezer(self) -> bool:
        return FREEZER in self.dirs

    def is_frozen(self) -> bool:
        """Frozen, or freezing: the freezer has been asked to stop every task (a task still freezing runs no code of
        its own any more)."""
        path = self.dirs.get(FREEZER)
        if path is None:
            return False
        if self.version == 1:
            return (_read(path / "freezer.state") or "").strip() in ("FROZEN", "FREEZING")
        return (_read(path / "cgroup.freeze") or "").strip() == "1"

    def _settled_frozen(self) -> bool:
        path = self.dirs[FREEZER]
        if self.version == 1:
            return (_read(path / "freezer.state") or "").strip() == "FROZEN"
        return _field(_read(path / "cgroup.events"), "frozen") == 1

    async def freeze(self, timeout: float = 5.0) -> bool:
        """Freeze every task; True once the kernel reports all of them frozen (a task in an uninterruptible wait
        can keep a v1 cgroup FREEZING for a while: it is asked again until the deadline)."""
        control, value = ("freezer.state", "FROZEN") if self.version == 1 else ("cgroup.freeze", "1")
        deadline = time.monotonic() + timeout
        while True:
            try:
                _write(self.dirs[FREEZER] / control, value)
            except FileNotFoundError:  # removed: its run has ended, nothing is left to freeze
                return False
            if self._settled_frozen():
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.001)

    async def thaw(self) -> None:
        path = self.dirs.get(FREEZER)
        if path is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if self.version == 1:
                _write(path / "freezer.state", "THAWED")
            else:
                _write(path / "cgroup.freeze", "0")

    # --------------------------------------------------------------------------------------------- signals

    async def signal(self, sig: signal.Signals) -> int:
        """Send ``sig`` to every task, with the cgroup frozen meanwhile so no pid read can exit and be reused before
        the signal reaches it and no fork slips between the read and the kill. Returns how many tasks were sent it.
        The cgroup is left thawed (a paused agent that is told to stop must run to act on it)."""
        if self.has_freezer:
            await self.freeze()
        try:
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            return len(pids)
        finally:
            await self.thaw()

    async def kill(self, timeout: float = 5.0) -> bool:
        """SIGKILL every task until none is left; True when the cgroup is empty."""
        deadline = time.monotonic() + timeout
        while self.pids():
            killer = self.dirs[FREEZER] / "cgroup.kill" if self.version == 2 and FREEZER in self.dirs else None
            if killer is not None and killer.exists():
                with contextlib.suppress(OSError):
                    _write(killer, "1")
            else:
                await self.signal(signal.SIGKILL)
            if time.monotonic() >= deadline:
                return not self.pids()
            await asyncio.sleep(0.005)
        return True

    # ------------------------------------------------------------------------------------------ accounting

    def usage(self) -> ResourceUsage:
        cpu: float | None = None
        peak: int | None = None
        if self.version == 1:
            if CPUACCT in self.dirs:
                ns = _number(_read(self.dirs[CPUACCT] / "cpuacct.usage"))
                cpu = ns / 1e9 if ns is not None else None
            if MEMORY in self.dirs:
                peak = _number(_read(self.dirs[MEMORY] / "memory.max_usage_in_bytes"))
            oom = _field(_read(self.dirs[MEMORY] / "memory.oom_control"), "oom_kill") if MEMORY in self.dirs else 0
        else:
            path = self.paths()[0]
            usec = _field(_read(path / "cpu.stat"), "usage_usec")
            cpu = usec / 1e6 if (path / "cpu.stat").exists() else None
            peak = _number(_read(path / "memory.peak")) if MEMORY in self.dirs else None
            oom = _field(_read(path / "memory.events"), "oom_kill") if MEMORY in self.dirs else 0
        refused = _field(_read(self.dirs[PIDS] / "pids.events"), "max") if PIDS in self.dirs else 0
        return ResourceUsage(cpu_seconds=cpu, peak_memory_bytes=peak, oom_kills=oom, pids_refused=refused)

    # ----------------------------------------------------------------------------------------------- removal

    async def remove(self, timeout: float = 2.0) -> bool:
        """Remove the (empty) cgroup, retrying while the kernel still counts a dying task; then the ``godel``
        parent if no other agent uses it. True when gone."""
        deadline = time.monotonic() + timeout
        left = self.paths()
        while left:
            busy = []
            for path in left:
                try:
                    path.rmdir()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                        raise RuntimeFailure(f"cannot remove the cgroup {path}: {exc}") from exc
                    busy.append(path)
                else:
                    with contextlib.suppress(OSError):  # in use by another agent, or made again meanwhile
                        path.parent.rmdir()
            left = busy
            if left:
                if time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(0.01)
        return True


class Cgroups:
    """The cgroups of one machine, as a runtime uses them for its agents."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    @classmethod
    def detect(cls, mount: Path = MOUNT, own: str | None = None) -> Cgroups | None:
        layout = detect(mount, own)
        return cls(layout) if layout is not None else None

    @property
    def version(self) -> int:
        return self.layout.version

    @property
    def controllers(self) -> frozenset[str]:
        return frozenset(self.layout.parents)

    def enforces(self) -> tuple[str, ...]:
        """The limits (``godel.core.limits`` kinds) this machine can enforce."""
        return tuple(kind for kind in (MEMORY, CPU, PIDS) if kind in self.layout.parents)

    def missing(self, limits: ResourceLimits | None) -> list[str]:
        """The controllers ``limits`` need that are not usable here."""
        return [kind for kind in (limits.kinds() if limits else ()) if kind not in self.layout.parents]

    def describe(self) -> str:
        return f"cgroup v{self.version} ({', '.join(sorted(self.controllers))})"

    # -------------------------------------------------------------------------------------------- creating

    def create(self, agent_id: str, limits: ResourceLimits | None) -> AgentCgroup:
        """The agent's cgroups, fresh (one left by an earlier attempt must be removed first), with ``limits``
        written. Raises RuntimeFailure, having removed what it made, when any step fails."""
        _check_name(agent_id)
        dirs = {name: parent / agent_id for name, parent in self.layout.parents.items()}
        cgroup = AgentCgroup(agent_id, self.version, dirs)
        made: list[Path] = []
        try:
            for path in cgroup.paths():
                self._make(path)
                made.append(path)
            if limits:
                self._limit(cgroup, limits)
        except OSError as exc:
            for path in reversed(made):
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise RuntimeFailure(
                f"cannot set up the cgroup of agent {agent_id}: {exc}", details={"cgroup": str(exc.filename or "")}
            ) from exc
        return cgroup

    def _make(self, path: Path) -> None:
        """Make an agent's cgroup, and its parent if needed. The parent goes when its last agent's cgroup goes
        (``AgentCgroup.remove``), possibly between the two ``mkdir``: then it is made again."""
        for attempt in range(5):
            path.parent.mkdir(exist_ok=True)
            if self.version == 2:
                self._delegate(path.parent)
            try:
                path.mkdir()
                return
            except FileNotFoundError:
                if attempt == 4:
                    raise

    def _delegate(self, parent: Path) -> None:
        """v2: hand the controllers down from the top to ``godel``, and from ``godel`` to the agents."""
        wanted = " ".join(f"+{n}" for n in (MEMORY, CPU, PIDS) if n in self.layout.parents)
        if wanted:
            for path in (parent.parent, parent):
                _write(path / "cgroup.subtree_control", wanted)

    def _limit(self, cgroup: AgentCgroup, limits: ResourceLimits) -> None:
        d = cgroup.dirs
        if self.version == 1:
            if limits.memory_mb is not None:
                _write(d[MEMORY] / "memory.limit_in_bytes", str(limits.memory_mb << 20))
                swap = d[MEMORY] / "memory.memsw.limit_in_bytes"  # memory + swap: a hog may not swap its way out
                if swap.exists():
                    _write(swap, str(limits.memory_mb << 20))
            if limits.cpus is not None:
                _write(d[CPU] / "cpu.cfs_period_us", str(CFS_PERIOD_US))
                _write(d[CPU] / "cpu.cfs_quota_us", str(_quota(limits.cpus)))
            if limits.pids is not None:
                _write(d[PIDS] / "pids.max", str(limits.pids))
            return
        path = cgroup.paths()[0]
        if limits.memory_mb is not None:
            _write(path / "memory.max", str(limits.memory_mb << 20))
            if (path / "memory.swap.max").exists():
                _write(path / "memory.swap.max", "0")
        if limits.cpus is not None:
            _write(path / "cpu.max", f"{_quota(limits.cpus)} {CFS_PERIOD_US}")
        if limits.pids is not None:
            _write(path / "pids.max", str(limits.pids))

    # --------------------------------------------------------------------------------------------- finding

    def find(self, agent_id: str, hints: Iterable[Path] = ()) -> AgentCgroup | None:
        """The agent's existing cgroups, by name: under this server's parents, else among ``hints`` (paths a launch
        recorded) where one is named after the agent, sits under a ``godel`` parent and in the same hierarchy.
        None when none is found."""
        if not _SAFE_NAME.fullmatch(agent_id):
            return None
        candidates = [h for h in hints if h.name == agent_id and h.parent.name == PARENT]
        dirs: dict[str, Path] = {}
        for name, parent in self.layout.parents.items():
            here = parent / agent_id
            if here.is_dir():
                dirs[name] = here
                continue
            tree = self._hierarchy(parent)
            for hint in candidates:
                real = hint.resolve()
                if real.is_dir() and tree is not None and self._hierarchy(real) == tree:
                    dirs[name] = real
                    break
        return AgentCgroup(agent_id, self.version, dirs) if dirs else None

    def _hierarchy(self, path: Path) -> str | None:
        """Which hierarchy ``path`` is in (v1: its mount's name; v2: the one tree), None when outside them all."""
        try:
            rel = path.relative_to(self.layout.mount.resolve())
        except ValueError:
            return None
        if self.version == 2:
            return ""
        return rel.parts[0] if rel.parts else None


def _quota(cpus: float) -> int:
    return max(1000, round(cpus * CFS_PERIOD_US))  # the kernel's floor is 1 ms per period


def _check_name(agent_id: str) -> None:
    if not _SAFE_NAME.fullmatch(agent_id):
        raise RuntimeFailure(f"not a usable cgroup name: {agent_id!r}")


# ------------------------------------------------------------------------------------------------- records


def write_record(path: Path, cgroup: AgentCgroup) -> None:
    """The record a launch keeps beside its pid file: one cgroup directory a line, read by the wrapper to join them
    and by a restarted server to find them (``Cgroups.find``)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{p}\n" for p in cgroup.paths()))
    os.replace(tmp, path)


def read_record(path: Path) -> Sequence[Path]:
    text = _read(path)
    return [Path(line) for line in (text or "").splitlines() if line.startswith("/")]
