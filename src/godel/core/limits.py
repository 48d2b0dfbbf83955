"""Resource limits an agent runs under, and the accounting read back once it has run.

Limits come from three places, the first that sets a key wins: the spawn's ``config.sandbox.limits`` (the spec's
AgentConfig.sandbox), its team's ``resourceLimits`` (TeamConfig.resourceLimits), the server's ``agent_*`` settings.
All three use the same JSON keys: ``{"memoryMb": int, "cpus": float, "pids": int}``. ``parse`` is the one reader;
it names every bad value with its field path, so a bad request is refused (400) before anything is created.

Each key is enforced by one kernel controller (``CONTROLLER``); a runtime advertises the keys it can enforce in
``RuntimeCapabilities.resource_limits``, and a limit asked of a runtime that cannot enforce it is refused, never
silently dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from godel.errors import FieldError

MEMORY, CPU, PIDS = "memory", "cpu", "pids"
# JSON key -> (the limit's kind, which is also the name of the cgroup controller enforcing it).
CONTROLLER = {"memoryMb": MEMORY, "cpus": CPU, "pids": PIDS}
MEMORY_MB_RANGE = (8, 4 * 1024 * 1024)  # 8 MiB (below that even a shell is killed) to 4 TiB
CPUS_RANGE = (0.01, 1024.0)  # one hundredth of a core (the CFS quota's floor is 1 ms per 100 ms) to 1024 cores
PIDS_RANGE = (1, 4_194_304)  # the kernel's pid_max ceiling


@dataclass(frozen=True)
class ResourceLimits:
    memory_mb: int | None = None  # memory (RSS and page cache, swap included where accounted), MiB
    cpus: float | None = None  # CPU time per wall-clock time: 0.5 is half a core, 2 is two cores
    pids: int | None = None  # tasks (processes and threads) at once

    def kinds(self) -> tuple[str, ...]:
        """The controllers these limits need, in a fixed order."""
        return tuple(
            kind for kind, value in ((MEMORY, self.memory_mb), (CPU, self.cpus), (PIDS, self.pids)) if value is not None
        )

    def __bool__(self) -> bool:
        return bool(self.kinds())

    def over(self, defaults: ResourceLimits | None) -> ResourceLimits:
        """These limits, with what they leave unset taken from ``defaults``."""
        if defaults is None:
            return self
        return ResourceLimits(
            memory_mb=self.memory_mb if self.memory_mb is not None else defaults.memory_mb,
            cpus=self.cpus if self.cpus is not None else defaults.cpus,
            pids=self.pids if self.pids is not None else defaults.pids,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.memory_mb is not None:
            out["memoryMb"] = self.memory_mb
        if self.cpus is not None:
            out["cpus"] = self.cpus
        if self.pids is not None:
            out["pids"] = self.pids
        return out

    @classmethod
    def parse(cls, raw: object, where: str) -> tuple[ResourceLimits, list[FieldError]]:
        """Limits from their JSON form; ``where`` is the field path of ``raw`` for the errors (every one at once)."""
        if raw is None:
            return cls(), []
        if not isinstance(raw, Mapping):
            return cls(), [FieldError(where, 'an object such as {"memoryMb": 512, "cpus": 1.5, "pids": 256}')]
        errors = [FieldError(f"{where}.{key}", f"unknown limit; known: {', '.join(CONTROLLER)}") for key in raw
                  if key not in CONTROLLER]  # fmt: skip
        memory = _whole(raw, "memoryMb", MEMORY_MB_RANGE, where, errors)
        pids = _whole(raw, "pids", PIDS_RANGE, where, errors)
        cpus: float | None = None
        value = raw.get("cpus")
        if value is not None:
            low, high = CPUS_RANGE
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                errors.append(FieldError(f"{where}.cpus", "must be a number of cores, such as 0.5 or 2"))
            elif not low <= value <= high:
                errors.append(FieldError(f"{where}.cpus", f"must be between {low:g} and {high:g}"))
            else:
                cpus = float(value)
        return cls(memory_mb=memory, cpus=cpus, pids=pids), errors


def _whole(
    raw: Mapping[str, Any], key: str, bounds: tuple[int, int], where: str, errors: list[FieldError]
) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append(FieldError(f"{where}.{key}", "must be a whole number"))
        return None
    if not low <= value <= high:
        errors.append(FieldError(f"{where}.{key}", f"must be between {low} and {high}"))
        return None
    return value


@dataclass(frozen=True)
class ResourceUsage:
    """What an agent's processes used, all of them together (those that ended before it included), as the kernel
    accounted it. None where the runtime cannot tell."""

    cpu_seconds: float | None = None
    peak_memory_bytes: int | None = None
    oom_kills: int = 0  # processes the kernel killed for the memory limit
    pids_refused: int = 0  # forks refused by the pids limit

    @property
    def memory_limit_hit(self) -> bool:
        return self.oom_kills > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "cpuSeconds": self.cpu_seconds,
            "peakMemoryBytes": self.peak_memory_bytes,
            "oomKills": self.oom_kills,
            "pidsRefused": self.pids_refused,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ResourceUsage:
        cpu, peak = raw.get("cpuSeconds"), raw.get("peakMemoryBytes")
        return cls(
            cpu_seconds=float(cpu) if isinstance(cpu, (int, float)) else None,
            peak_memory_bytes=int(peak) if isinstance(peak, int) else None,
            oom_kills=int(raw.get("oomKills") or 0),
            pids_refused=int(raw.get("pidsRefused") or 0),
        )


MEMORY_LIMIT_REASON = "memory limit"  # the end reason of a run the kernel killed for its memory limit
