"""The merge job's state machine as one table (a ``core.machine.Machine``).

    queued ──start──▶ running ──complete──▶ completed      (every branch has a result, merged or not)
    queued/running ──fail──▶ failed                         (the run itself stopped: git failed, the server stopped)

Both ends are announced by one ``merge:completed`` event whose payload carries the status.
"""

from __future__ import annotations

from enum import StrEnum

from godel.core.machine import Machine
from godel.errors import ConflictError


class JobStatus(StrEnum):
    QUEUED = "queued"  # waiting for another run into the same branch to finish
    RUNNING = "running"
    COMPLETED = "completed"  # every branch has a result (merged or not: see the results)
    FAILED = "failed"  # the run itself stopped: git failed, the server stopped, the branch moved under it


class JobTrigger(StrEnum):
    START = "start"
    COMPLETE = "complete"
    FAIL = "fail"


TABLE: dict[tuple[JobStatus, JobTrigger], JobStatus] = {
    (JobStatus.QUEUED, JobTrigger.START): JobStatus.RUNNING,
    (JobStatus.RUNNING, JobTrigger.COMPLETE): JobStatus.COMPLETED,
    (JobStatus.QUEUED, JobTrigger.FAIL): JobStatus.FAILED,
    (JobStatus.RUNNING, JobTrigger.FAIL): JobStatus.FAILED,
}


def _refuse(job_id: str, current: str, trigger: str) -> ConflictError:
    return ConflictError(f"cannot {trigger} merge {job_id}: it is {current}", details={"mergeId": job_id})


MERGES: Machine[JobStatus, JobTrigger] = Machine(
    "merge", TABLE, refuse=_refuse,
    event=lambda _from, to, _trigger: "merge:started" if to == JobStatus.RUNNING else "merge:completed",
)  # fmt: skip
