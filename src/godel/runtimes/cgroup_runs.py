"""The cgroups of the runs of one runtime: made at launch, found again after a restart, settled when a run ends.

A launch that uses cgroups leaves two files beside its pid and exit files (``processes``): ``cgroup``, the record
its wrapper joins and a restarted server finds the cgroups by, and, once the run has ended, ``usage.json``, the
accounting read before the cgroups were removed (they go once empty; the record of what the run used stays with
its logs, so it is known after a restart too).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import structlog

from godel.core.limits import ResourceLimits, ResourceUsage
from godel.core.ports import RuntimeHandle
from godel.errors import AgentSpawnError
from godel.runtimes.cgroups import AgentCgroup, Cgroups, read_record, write_record

log = structlog.get_logger("godel.runtime")

RECORD, USAGE = "cgroup", "usage.json"


def record_file(handle: RuntimeHandle) -> Path:
    return handle.log_dir / RECORD


def usage_file(handle: RuntimeHandle) -> Path:
    return handle.log_dir / USAGE


def read_usage(handle: RuntimeHandle) -> ResourceUsage | None:
    try:
        return ResourceUsage.from_json(json.loads(usage_file(handle).read_text()))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def refuse_unenforceable(cgroups: Cgroups | None, limits: ResourceLimits | None, runtime: str) -> None:
    """Fail closed: limits this runtime cannot enforce here are refused, naming what is missing."""
    if not limits:
        return
    if cgroups is None:
        raise AgentSpawnError(
            f"resource limits ({', '.join(limits.kinds())}) were asked for, but the {runtime} runtime cannot enforce "
            "them here: no writable cgroup hierarchy (cgroups need root, or a delegated cgroup v2 tree)",
            details={"missing": list(limits.kinds()), "runtime": runtime},
        )
    missing = cgroups.missing(limits)
    if missing:
        raise AgentSpawnError(
            f"resource limits need the cgroup controller(s) {', '.join(missing)}, which {cgroups.describe()} lacks "
            "here: not started",
            details={"missing": missing, "runtime": runtime},
        )


class RunCgroups:
    """Tracks the cgroups of the runs of one runtime over ``Cgroups``."""

    def __init__(self, cgroups: Cgroups) -> None:
        self.cgroups = cgroups
        self._known: dict[str, AgentCgroup] = {}  # agent id -> its cgroups, as last found

    async def fresh(self, handle: RuntimeHandle, limits: ResourceLimits | None) -> AgentCgroup:
        """New cgroups for the next run of the agent; what an earlier attempt left under its name is killed and
        removed first (accounting starts from zero with each run)."""
        old = self.of(handle)
        if old is not None:
            await old.kill()
            if not await old.remove():
                raise AgentSpawnError(f"the cgroup of an earlier run of agent {handle.agent_id} cannot be removed")
        self._known.pop(handle.agent_id, None)
        cgroup = self.cgroups.create(handle.agent_id, limits)
        self._known[handle.agent_id] = cgroup
        return cgroup

    @staticmethod
    def record(handle: RuntimeHandle, cgroup: AgentCgroup) -> Path:
        """Write the record the wrapper joins (after the previous run's files were set aside)."""
        path = record_file(handle)
        write_record(path, cgroup)
        return path

    def of(self, handle: RuntimeHandle) -> AgentCgroup | None:
        """The cgroups of the handle's agent, found by name (and the launch's record) the first time."""
        known = self._known.get(handle.agent_id)
        if known is not None:
            return known
        hints = read_record(record_file(handle))
        found = self.cgroups.find(handle.agent_id, hints) if hints else None
        if found is not None:
            self._known[handle.agent_id] = found
        return found

    def frozen(self, handle: RuntimeHandle) -> bool:
        cgroup = self.of(handle)
        return cgroup is not None and cgroup.is_frozen()

    async def discard(self, handle: RuntimeHandle) -> None:
        """Undo ``fresh`` for a launch that never started."""
        cgroup = self._known.pop(handle.agent_id, None)
        if cgroup is not None:
            await cgroup.kill()
            await cgroup.remove()

    async def settle(self, handle: RuntimeHandle, reap: Callable[[], object]) -> ResourceUsage | None:
        """The run has ended with its exit status recorded: kill what it left (a ``setsid`` daemon included), read
        its accounting, keep it in ``usage.json`` and remove its cgroups. ``reap`` collects the server's own dead
        children (a zombie wrapper keeps a v1 cgroup busy). Called again until the cgroups are gone. (A run that
        vanished without an exit status is not settled: tasks in its cgroups, or a wrapper about to join them, are
        not provably that run's, as the handle's pid may be stale; ``release`` tidies up once the workspace goes.)"""
        usage = read_usage(handle)
        cgroup = self.of(handle)
        if cgroup is None:
            return usage
        # Short waits: this runs in the supervisor's watch pass; what does not go now is tried at the next look.
        if not await cgroup.kill(timeout=0.5):
            log.warning("tasks of an ended run survive in its cgroup", agent=handle.agent_id)
        reap()
        if usage is None:
            usage = cgroup.usage()
            tmp = usage_file(handle).with_suffix(".tmp")
            tmp.write_text(json.dumps(usage.to_json()))
            os.replace(tmp, usage_file(handle))
        if await cgroup.remove(timeout=0.5):
            self._known.pop(handle.agent_id, None)
        return usage

    async def release(self, handle: RuntimeHandle) -> None:
        """No run of the agent is live or starting (its workspace is being removed): remove its cgroups if they are
        empty (left by a run that vanished)."""
        cgroup = self.of(handle)
        if cgroup is not None and not cgroup.pids() and await cgroup.remove(timeout=0.2):
            self._known.pop(handle.agent_id, None)
