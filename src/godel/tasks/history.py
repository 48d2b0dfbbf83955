"""What Godel keeps about a task besides its columns, in ``Task.metadata`` under reserved keys.

- ``maxAttempts``: how many failed attempts send the task to the dead-letter list;
- ``history``: one entry per attempt, oldest first: ``{"attempt", "agentId", "teamId", "claimed",
  "assignedAt", "startedAt", "endedAt", "outcome" ("completed" | "failed" | "cancelled" | "released" | null
  while it runs), "error"}``, and ``"spawning": true`` on an attempt taken to spawn an agent for the task
  (``tasks.spawning``; "released" closes such an attempt when the agent was never made);
- ``lastError``: the error of the latest failed attempt;
- ``reservedFor``: ``{"agentId", "teamId"}`` as the task was created (or last assigned by hand), where a
  requeue puts it back: a task for anyone goes back to anyone, not to the team that last held it.

Everything else in ``metadata`` is the user's. The helpers return new dicts; a task is never mutated.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from godel.core.models import Task
from godel.core.states import TaskStatus

HISTORY = "history"
MAX_ATTEMPTS = "maxAttempts"
LAST_ERROR = "lastError"
RESERVED_FOR = "reservedFor"
RESERVED = (HISTORY, MAX_ATTEMPTS, LAST_ERROR, RESERVED_FOR)
DEFAULT_MAX_ATTEMPTS = 3


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def history_of(task: Task) -> list[dict[str, Any]]:
    history = task.metadata.get(HISTORY)
    return [dict(entry) for entry in history if isinstance(entry, dict)] if isinstance(history, list) else []


def max_attempts_of(task: Task) -> int:
    value = task.metadata.get(MAX_ATTEMPTS)
    return value if isinstance(value, int) and value >= 1 else DEFAULT_MAX_ATTEMPTS


def last_error_of(task: Task) -> str | None:
    value = task.metadata.get(LAST_ERROR)
    return value if isinstance(value, str) else None


def reservation_of(task: Task) -> tuple[str | None, str | None]:
    """``(agent_id, team_id)`` a requeued task is reserved for again (none: anyone may claim it)."""
    value = task.metadata.get(RESERVED_FOR)
    if not isinstance(value, dict):
        return None, None
    agent, team = value.get("agentId"), value.get("teamId")
    return (agent if isinstance(agent, str) else None), (team if isinstance(team, str) else None)


def user_metadata(task: Task) -> dict[str, Any]:
    return {k: v for k, v in task.metadata.items() if k not in RESERVED}


def open_attempt(task: Task) -> dict[str, Any] | None:
    """The running attempt (assigned and not ended), if any."""
    history = history_of(task)
    if history and history[-1].get("endedAt") is None and history[-1].get("outcome") is None:
        return history[-1]
    return None


def with_history(task: Task, history: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {**task.metadata, HISTORY: history, **extra}


def begin_attempt(
    task: Task, *, agent_id: str | None, team_id: str | None, at: datetime, claimed: bool, **extra: Any
) -> dict[str, Any]:
    """Metadata with a new attempt appended (the task is being assigned)."""
    history = history_of(task)
    entry = {
        "attempt": len(history) + 1,  # counts every attempt ever (``Task.attempts`` restarts on retry)
        "agentId": agent_id,
        "teamId": team_id,
        "claimed": claimed,
        "assignedAt": _iso(at),
        "startedAt": None,
        "endedAt": None,
        "outcome": None,
        "error": None,
        **extra,
    }
    return with_history(task, [*history, entry])


def update_attempt(task: Task, **changes: Any) -> dict[str, Any]:
    """Metadata with the running attempt changed (``startedAt``, ``agentId``…); unchanged if none runs."""
    history = history_of(task)
    if open_attempt(task) is None:
        return dict(task.metadata)
    history[-1] = {**history[-1], **{k: _iso(v) if isinstance(v, datetime) else v for k, v in changes.items()}}
    return with_history(task, history)


def end_attempt(task: Task, *, outcome: str, at: datetime, error: str | None = None) -> dict[str, Any]:
    """Metadata with the running attempt closed (and ``lastError`` set when it failed)."""
    history = history_of(task)
    if open_attempt(task) is not None:
        history[-1] = {**history[-1], "endedAt": _iso(at), "outcome": outcome, "error": error}
    extra = {LAST_ERROR: error} if error is not None else {}
    return with_history(task, history, **extra)


def attempt_outcome(task: Task, attempt: int) -> str:
    """What became of one attempt: ``completed``; ``requeued`` (failed, attempts left); ``dead`` (failed the last
    allowed time); ``failed`` (failed for good with ``retry=false``); ``cancelled``; ``released``; or, while it
    runs, the task's status (``assigned``)."""
    history = history_of(task)
    entry = next((e for e in history if e.get("attempt") == attempt), {})
    outcome = entry.get("outcome")
    if outcome == "failed":
        last = history[-1].get("attempt") == attempt
        if last and task.status in (TaskStatus.DEAD, TaskStatus.FAILED):
            return task.status.value
        return "requeued"
    return str(outcome or task.status.value)
