"""Agent states.

The spec (§2.1) gives an agent two fields, ``status`` and ``lifecycleState``. Storing both would be two truths
that can disagree, so Godel stores one, ``AgentState``, which is the spec's lifecycle enriched with the two
states it lacks (``pending``: accepted but not yet admitted by the scheduler; ``killed``: stopped by a user),
and derives both spec fields from it with the tables below.
"""

from __future__ import annotations

from enum import StrEnum


class AgentState(StrEnum):
    PENDING = "pending"  # accepted and queued; waits for the scheduler to admit it under the concurrency limit
    INITIALIZING = "initializing"  # admitted; the workspace (worktree, include files, setup) is being created
    SPAWNING = "spawning"  # the workspace exists; the agent process is being launched
    EXECUTING = "executing"  # the agent process runs
    WAITING = "waiting"  # the agent process runs but the agent said it needs input
    PAUSED = "paused"  # the whole process tree is stopped (SIGSTOP); it keeps its concurrency slot
    COMPLETING = "completing"  # the process exited with evidence of success; outcome and cleanup are recorded
    COMPLETED = "completed"  # terminal: done
    FAILED = "failed"  # the process failed, timed out or was lost; may be retried (back to pending)
    KILLED = "killed"  # terminal: stopped on request


class AgentStatus(StrEnum):
    """The spec's coarse ``status`` (derived, never stored)."""

    PENDING = "pending"
    INITIALIZING = "initializing"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    KILLED = "killed"


class LifecycleState(StrEnum):
    """The spec's ``lifecycleState`` (derived, never stored). ``killed`` is in the spec's state diagram."""

    INITIALIZING = "initializing"
    SPAWNING = "spawning"
    EXECUTING = "executing"
    WAITING = "waiting"
    PAUSED = "paused"
    COMPLETING = "completing"
    CLEANING_UP = "cleaning_up"
    COMPLETED = "completed"
    FAILED = "failed"
    KILLED = "killed"


STATUS_OF: dict[AgentState, AgentStatus] = {
    AgentState.PENDING: AgentStatus.PENDING,
    AgentState.INITIALIZING: AgentStatus.INITIALIZING,
    AgentState.SPAWNING: AgentStatus.INITIALIZING,
    AgentState.EXECUTING: AgentStatus.RUNNING,
    AgentState.WAITING: AgentStatus.RUNNING,
    AgentState.PAUSED: AgentStatus.PAUSED,
    AgentState.COMPLETING: AgentStatus.RUNNING,
    AgentState.COMPLETED: AgentStatus.COMPLETED,
    AgentState.FAILED: AgentStatus.FAILED,
    AgentState.KILLED: AgentStatus.KILLED,
}

LIFECYCLE_OF: dict[AgentState, LifecycleState] = {
    AgentState.PENDING: LifecycleState.INITIALIZING,
    AgentState.INITIALIZING: LifecycleState.INITIALIZING,
    AgentState.SPAWNING: LifecycleState.SPAWNING,
    AgentState.EXECUTING: LifecycleState.EXECUTING,
    AgentState.WAITING: LifecycleState.WAITING,
    AgentState.PAUSED: LifecycleState.PAUSED,
    AgentState.COMPLETING: LifecycleState.COMPLETING,
    AgentState.COMPLETED: LifecycleState.COMPLETED,
    AgentState.FAILED: LifecycleState.FAILED,
    AgentState.KILLED: LifecycleState.KILLED,
}


def states_with_status(status: AgentStatus) -> list[AgentState]:
    """The stored states a ``status`` filter selects (``status=running`` → executing, waiting, completing)."""
    return [s for s, st in STATUS_OF.items() if st == status]


TERMINAL: frozenset[AgentState] = frozenset({AgentState.COMPLETED, AgentState.KILLED})
# States in which a process may exist on a node and which hold a concurrency slot.
ACTIVE: frozenset[AgentState] = frozenset(
    {
        AgentState.INITIALIZING,
        AgentState.SPAWNING,
        AgentState.EXECUTING,
        AgentState.WAITING,
        AgentState.PAUSED,
        AgentState.COMPLETING,
    }
)
# States in which the agent's process runs (or is stopped) and must be watched.
LIVE: frozenset[AgentState] = frozenset({AgentState.EXECUTING, AgentState.WAITING, AgentState.PAUSED})


class TeamStatus(StrEnum):
    CREATING = "creating"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    ARCHIVED = "archived"


class SessionStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"


class TaskStatus(StrEnum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD = "dead"  # kept failing; in the dead-letter list


class NodeStatus(StrEnum):
    ONLINE = "online"
    DRAINING = "draining"
    OFFLINE = "offline"
