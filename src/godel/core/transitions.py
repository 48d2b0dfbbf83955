"""The agent state machine as one table.

Spec §2.3 with the deviations a real supervisor needs, each noted:
- ``pending`` precedes ``initializing`` (admission under a concurrency limit);
- ``retry`` goes ``failed → pending`` (a retry is a new attempt through admission and a new process), not
  straight to ``executing``;
- ``kill`` is legal from every non-terminal state (a user must be able to stop a queued or running agent);
- ``timeout`` and ``lost`` are distinct triggers into ``failed`` so the reason is queryable;
- ``restart`` (the API's ``/restart``) re-queues from any non-pending state; the caller stops a live process first.
- ``continue`` re-queues an ended agent with a follow-up message for its CLI session (same workspace, same branch).
- ``requeue`` puts an agent whose launch never started (the server stopped while preparing it) back in the queue;
  nothing ran, so it is no attempt and costs no retry.

The table is one ``core.machine.Machine`` (``AGENTS``); ``plan`` is pure. The only writer of agent state is
``Store.transition_agent``, which calls ``plan`` inside the same database transaction that updates the row, records
the transition and appends its event.
"""

from __future__ import annotations

from enum import StrEnum

from godel.core.machine import Machine, Move
from godel.core.states import AgentState as S
from godel.errors import InvalidTransitionError


class Trigger(StrEnum):
    ADMIT = "admit"  # scheduler admitted the agent; workspace creation begins
    WORKTREE_CREATED = "worktree_created"
    SESSION_STARTED = "session_started"  # the agent process is running
    AWAIT_INPUT = "await_input"
    INPUT_RECEIVED = "input_received"
    PAUSE = "pause"
    RESUME = "resume"
    TASK_COMPLETE = "task_complete"  # the process ended with evidence of success
    CLEANUP_DONE = "cleanup_done"
    CLEANUP_ERROR = "cleanup_error"
    SPAWN_ERROR = "spawn_error"
    ERROR = "error"  # the process ended without evidence of success
    TIMEOUT = "timeout"  # the hard wall-clock limit passed
    LOST = "lost"  # the process vanished (e.g. while the server was down)
    RETRY = "retry"
    KILL = "kill"
    RESTART = "restart"
    CONTINUE = "continue"  # a follow-up message continues the agent's CLI session in the same workspace
    REQUEUE = "requeue"  # the server stopped before the launch started: nothing ran, the agent waits for a slot again


# The moves that end a run: what waiters, dependent workflow steps and the freed slot are held on. Their writes
# go before queued ordinary writes (``core.urgency``). TASK_COMPLETE is not one: COMPLETING still cleans up.
ENDING = frozenset(
    {Trigger.CLEANUP_DONE, Trigger.CLEANUP_ERROR, Trigger.SPAWN_ERROR, Trigger.ERROR, Trigger.TIMEOUT, Trigger.LOST,
     Trigger.KILL}
)  # fmt: skip

_NON_TERMINAL = [s for s in S if s not in (S.COMPLETED, S.KILLED)]
_RUNNING = [S.EXECUTING, S.WAITING, S.PAUSED]

TABLE: dict[tuple[S, Trigger], S] = {
    (S.PENDING, Trigger.ADMIT): S.INITIALIZING,
    (S.INITIALIZING, Trigger.WORKTREE_CREATED): S.SPAWNING,
    (S.INITIALIZING, Trigger.SPAWN_ERROR): S.FAILED,
    (S.SPAWNING, Trigger.SESSION_STARTED): S.EXECUTING,
    (S.SPAWNING, Trigger.SPAWN_ERROR): S.FAILED,
    (S.EXECUTING, Trigger.AWAIT_INPUT): S.WAITING,
    (S.WAITING, Trigger.INPUT_RECEIVED): S.EXECUTING,
    (S.EXECUTING, Trigger.PAUSE): S.PAUSED,
    (S.WAITING, Trigger.PAUSE): S.PAUSED,
    (S.PAUSED, Trigger.RESUME): S.EXECUTING,
    (S.EXECUTING, Trigger.TASK_COMPLETE): S.COMPLETING,
    (S.WAITING, Trigger.TASK_COMPLETE): S.COMPLETING,
    # The process may exit (with success) just as it is paused; its outcome must still be recordable.
    (S.PAUSED, Trigger.TASK_COMPLETE): S.COMPLETING,
    (S.COMPLETING, Trigger.CLEANUP_DONE): S.COMPLETED,
    (S.COMPLETING, Trigger.CLEANUP_ERROR): S.FAILED,
    (S.FAILED, Trigger.RETRY): S.PENDING,
    **{(s, Trigger.ERROR): S.FAILED for s in _RUNNING},
    **{(s, Trigger.TIMEOUT): S.FAILED for s in _RUNNING},
    **{(s, Trigger.LOST): S.FAILED for s in (S.INITIALIZING, S.SPAWNING, *_RUNNING, S.COMPLETING)},
    **{(s, Trigger.REQUEUE): S.PENDING for s in (S.INITIALIZING, S.SPAWNING)},
    **{(s, Trigger.KILL): S.KILLED for s in _NON_TERMINAL},
    **{(s, Trigger.RESTART): S.PENDING for s in S if s != S.PENDING},
    **{(s, Trigger.CONTINUE): S.PENDING for s in (S.COMPLETED, S.FAILED, S.KILLED)},
}


# The event type each arrival state emits (spec §2.2 names where they exist).
EVENT_FOR: dict[S, str] = {
    S.PENDING: "agent:queued",
    S.INITIALIZING: "agent:initializing",
    S.SPAWNING: "agent:spawning",
    S.EXECUTING: "agent:start",
    S.WAITING: "agent:waiting",
    S.PAUSED: "agent:pause",
    S.COMPLETING: "agent:completing",
    S.COMPLETED: "agent:complete",
    S.FAILED: "agent:error",
    S.KILLED: "agent:kill",
}


def _event(from_state: S, to_state: S, trigger: Trigger) -> str:
    if trigger in (Trigger.RESUME, Trigger.INPUT_RECEIVED):
        return "agent:resume"
    if trigger in (Trigger.RETRY, Trigger.RESTART, Trigger.CONTINUE, Trigger.REQUEUE):
        return f"agent:{trigger.value}"
    return EVENT_FOR[to_state]


AGENTS: Machine[S, Trigger] = Machine("agent", TABLE, refuse=InvalidTransitionError, event=_event)
TransitionPlan = Move[S, Trigger]


def plan(agent_id: str, current: S, trigger: Trigger) -> TransitionPlan:
    """Validate a move; raise ``InvalidTransitionError`` (409, names the current state) if illegal."""
    return AGENTS.plan(agent_id, current, trigger)


def can(current: S, trigger: Trigger) -> bool:
    return AGENTS.can(current, trigger)


def event_type_for(plan_: TransitionPlan) -> str:
    return plan_.event
