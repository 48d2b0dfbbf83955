"""The agent state machine, exhaustively: every (state, trigger) pair, and the derived spec fields."""

from __future__ import annotations

import itertools

import pytest

from godel.core.states import (
    ACTIVE,
    LIFECYCLE_OF,
    LIVE,
    STATUS_OF,
    TERMINAL,
    AgentState,
    AgentStatus,
    LifecycleState,
    states_with_status,
)
from godel.core.transitions import EVENT_FOR, TABLE, Trigger, can, event_type_for, plan
from godel.errors import InvalidTransitionError

PAIRS = list(itertools.product(AgentState, Trigger))


@pytest.mark.parametrize(("state", "trigger"), PAIRS, ids=[f"{s.value}-{t.value}" for s, t in PAIRS])
def test_every_pair_either_lands_in_the_table_target_or_is_refused(state: AgentState, trigger: Trigger) -> None:
    target = TABLE.get((state, trigger))
    if target is not None:
        move = plan("a1", state, trigger)
        assert (move.from_state, move.to_state, move.trigger) == (state, target, trigger)
        assert can(state, trigger)
        assert event_type_for(move).startswith("agent:")
    else:
        assert not can(state, trigger)
        with pytest.raises(InvalidTransitionError) as info:
            plan("a1", state, trigger)
        err = info.value
        assert err.status_code == 409
        assert err.code == "INVALID_TRANSITION"
        assert err.current == state.value
        assert err.details == {"agentId": "a1", "currentState": state.value, "trigger": trigger.value}
        assert state.value in err.message


def test_terminal_states_accept_only_restart_and_continue() -> None:
    for state in TERMINAL:
        legal = {t for t in Trigger if can(state, t)}
        assert legal == {Trigger.RESTART, Trigger.CONTINUE}


@pytest.mark.parametrize("state", [s for s in AgentState if s not in TERMINAL])
def test_kill_is_legal_from_every_non_terminal_state(state: AgentState) -> None:
    assert plan("a1", state, Trigger.KILL).to_state == AgentState.KILLED


def test_every_state_is_reachable_from_pending() -> None:
    seen, frontier = {AgentState.PENDING}, [AgentState.PENDING]
    while frontier:
        state = frontier.pop()
        for (src, _), dst in TABLE.items():
            if src == state and dst not in seen:
                seen.add(dst)
                frontier.append(dst)
    assert seen == set(AgentState)


def test_event_types() -> None:
    assert set(EVENT_FOR) == set(AgentState)
    assert event_type_for(plan("a", AgentState.PAUSED, Trigger.RESUME)) == "agent:resume"
    assert event_type_for(plan("a", AgentState.WAITING, Trigger.INPUT_RECEIVED)) == "agent:resume"
    assert event_type_for(plan("a", AgentState.FAILED, Trigger.RETRY)) == "agent:retry"
    assert event_type_for(plan("a", AgentState.KILLED, Trigger.RESTART)) == "agent:restart"
    assert event_type_for(plan("a", AgentState.EXECUTING, Trigger.TIMEOUT)) == "agent:error"


def test_status_and_lifecycle_are_derived_for_every_state() -> None:
    assert set(STATUS_OF) == set(AgentState)
    assert set(LIFECYCLE_OF) == set(AgentState)
    assert set(STATUS_OF.values()) == set(AgentStatus)
    assert set(LIFECYCLE_OF.values()) == set(LifecycleState) - {LifecycleState.CLEANING_UP}
    # Every state is selected by exactly the status it maps to.
    for state in AgentState:
        owners = [status for status in AgentStatus if state in states_with_status(status)]
        assert owners == [STATUS_OF[state]]
    assert set(states_with_status(AgentStatus.RUNNING)) == {
        AgentState.EXECUTING,
        AgentState.WAITING,
        AgentState.COMPLETING,
    }


def test_state_sets_are_consistent() -> None:
    assert LIVE <= ACTIVE
    assert not (ACTIVE & TERMINAL)
    assert AgentState.PENDING not in ACTIVE
    assert AgentState.FAILED not in ACTIVE | TERMINAL  # failed may still be retried
