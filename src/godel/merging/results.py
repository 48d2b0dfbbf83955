"""What a merge queue reports: one result per branch, and the report of a whole run.

The JSON shapes (``as_json``) are the API's and the events' (camelCase); ``from_json`` reads them back, so a
report rebuilt from the event log after a restart is the same object a live run produced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class BranchStatus(StrEnum):
    PENDING = "pending"  # not reached yet (only while a run is live)
    MERGED = "merged"  # a merge commit of it is on the integration branch (and passed the gate)
    CONFLICT = "conflict"  # it conflicts with the integration branch as it stood; nothing was kept
    GATE_FAILED = "gate-failed"  # it merged cleanly but the verify command failed; the merge was undone
    SKIPPED = "skipped"  # nothing to do (already in the integration branch) or the run stopped before it
    ERROR = "error"  # git could not merge it for another reason (unrelated histories, a hook…)


# The outcomes that make `godel merge` exit non-zero: the branch's work is not in the integration branch.
NOT_MERGED = frozenset({BranchStatus.CONFLICT, BranchStatus.GATE_FAILED, BranchStatus.ERROR})


@dataclass
class BranchResult:
    branch: str
    tip: str  # the commit that was merged (the branch's tip when the run was asked for)
    status: BranchStatus = BranchStatus.PENDING
    reason: str | None = None  # one sentence for people: why it did not merge, or what was special
    commit: str | None = None  # merged: the merge commit on the integration branch
    files: list[str] = field(default_factory=list)  # conflict: the conflicting paths
    exit_code: int | None = None  # gate-failed: the verify command's exit status (None: it timed out)
    output: str | None = None  # gate-failed: the tail of its output (stdout and stderr together)
    timed_out: bool = False
    resolution: dict[str, Any] | None = None  # a conflict handed to a resolver: {resolver, branch, commit, error}
    agent_id: str | None = None  # when the branch was found through a team or a workflow
    duration: float = 0.0  # seconds spent on this branch (merge, resolution, gate)

    def as_json(self) -> dict[str, Any]:
        return {
            "branch": self.branch,
            "tip": self.tip,
            "agentId": self.agent_id,
            "status": self.status.value,
            "reason": self.reason,
            "commit": self.commit,
            "files": list(self.files),
            "exitCode": self.exit_code,
            "output": self.output,
            "timedOut": self.timed_out,
            "resolution": self.resolution,
            "durationMs": round(self.duration * 1000),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BranchResult:
        return cls(
            branch=str(data["branch"]),
            tip=str(data.get("tip") or ""),
            status=BranchStatus(data.get("status", BranchStatus.PENDING.value)),
            reason=data.get("reason"),
            commit=data.get("commit"),
            files=list(data.get("files") or []),
            exit_code=data.get("exitCode"),
            output=data.get("output"),
            timed_out=bool(data.get("timedOut", False)),
            resolution=data.get("resolution"),
            agent_id=data.get("agentId"),
            duration=float(data.get("durationMs") or 0) / 1000,
        )


@dataclass
class Bisection:
    """How a failing batch was narrowed down to the branch that broke the gate."""

    branches: list[str]  # the batch that failed the gate, in merge order
    culprit: str | None  # None: the gate fails without any of them (on the integration branch itself)
    steps: list[dict[str, Any]] = field(default_factory=list)  # [{"branches": [...], "passed": bool}]

    def as_json(self) -> dict[str, Any]:
        return {"branches": list(self.branches), "culprit": self.culprit, "steps": list(self.steps)}


def summarize(results: list[BranchResult]) -> dict[str, int]:
    """How many branches ended in each status (camelCase keys, every status present)."""
    counts = {"merged": 0, "conflict": 0, "gateFailed": 0, "skipped": 0, "error": 0, "pending": 0}
    key = {BranchStatus.GATE_FAILED: "gateFailed"}
    for r in results:
        counts[key.get(r.status, r.status.value)] += 1
    return counts
