"""The one state-machine layer: planning is pure, an illegal move is the entity's own 409, and every lifecycle's table
(agents, tasks, teams) is a Machine whose moves each name their event."""

from __future__ import annotations

import pytest

from godel.core.machine import Machine
from godel.core.states import AgentState, TaskStatus, TeamStatus
from godel.core.transitions import AGENTS, Trigger
from godel.errors import ConflictError, InvalidTransitionError, TaskTransitionError, TeamTransitionError
from godel.merging.lifecycle import MERGES, JobStatus, JobTrigger
from godel.tasks.transitions import TASKS, TaskTrigger
from godel.teams.lifecycle import TEAMS, TeamTrigger
from godel.workflow.graph import StepStatus
from godel.workflow.lifecycle import DELETABLE, STEPS, WORKFLOWS, StepTrigger, WorkflowStatus, WorkflowTrigger


def test_a_team_starts_only_from_creating_and_says_so() -> None:
    move = TEAMS.plan("t1", TeamStatus.CREATING, TeamTrigger.START)
    assert (move.to_state, move.event) == (TeamStatus.ACTIVE, "team:started")
    with pytest.raises(TeamTransitionError) as refused:
        TEAMS.plan("t1", TeamStatus.ACTIVE, TeamTrigger.START)
    assert refused.value.status_code == 409 and "active" in refused.value.message


@pytest.mark.parametrize("ended", [TeamStatus.COMPLETED, TeamStatus.FAILED, TeamStatus.ARCHIVED])
def test_an_ended_team_moves_no_more(ended: TeamStatus) -> None:
    for trigger in TeamTrigger:
        assert not TEAMS.can(ended, trigger)


def test_scaling_keeps_the_status_and_is_recorded() -> None:
    for status in (TeamStatus.CREATING, TeamStatus.ACTIVE, TeamStatus.PAUSED):
        move = TEAMS.plan("t", status, TeamTrigger.SCALE)
        assert (move.to_state, move.event) == (status, "team:scaled")


def test_a_task_failure_goes_where_the_data_says_and_names_it() -> None:
    assert TASKS.plan("k", TaskStatus.ASSIGNED, TaskTrigger.FAIL, TaskStatus.DEAD).event == "task:dead"
    assert TASKS.plan("k", TaskStatus.ASSIGNED, TaskTrigger.FAIL, TaskStatus.PENDING).event == "task:failed"
    with pytest.raises(TaskTransitionError):
        TASKS.plan("k", TaskStatus.ASSIGNED, TaskTrigger.FAIL)  # several targets: the caller must choose
    with pytest.raises(TaskTransitionError):
        TASKS.plan("k", TaskStatus.ASSIGNED, TaskTrigger.FAIL, TaskStatus.COMPLETED)  # not one of them


def test_the_agent_table_is_a_machine_too() -> None:
    move = AGENTS.plan("a", AgentState.SPAWNING, Trigger.REQUEUE)
    assert (move.to_state, move.event) == (AgentState.PENDING, "agent:requeue")
    with pytest.raises(InvalidTransitionError):
        AGENTS.plan("a", AgentState.EXECUTING, Trigger.REQUEUE)


@pytest.mark.parametrize(
    "machine",
    [AGENTS, TASKS, TEAMS, WORKFLOWS, STEPS, MERGES],
    ids=["agent", "task", "team", "workflow", "step", "merge"],
)
def test_every_move_names_an_event_of_its_entity(machine: Machine) -> None:  # type: ignore[type-arg]
    for state, trigger, targets in machine.moves():
        for target in targets or {state}:
            event = machine.plan("x", state, trigger, target if len(targets) > 1 else None).event
            assert event.startswith(f"{machine.entity}:"), (state, trigger, event)


def test_a_workflow_store_guard_is_the_tables_own() -> None:
    assert set(WORKFLOWS.sources(WorkflowTrigger.CANCEL)) == {
        WorkflowStatus.PENDING,
        WorkflowStatus.RUNNING,
        WorkflowStatus.PAUSED,
    }
    assert WORKFLOWS.sources(WorkflowTrigger.START) == (WorkflowStatus.PENDING,)
    with pytest.raises(ConflictError) as refused:
        WORKFLOWS.plan("w", WorkflowStatus.COMPLETED, WorkflowTrigger.PAUSE)
    assert refused.value.details["currentStatus"] == "completed"
    assert WorkflowStatus.RUNNING not in DELETABLE


def test_a_finished_step_moves_no_more_and_a_relaunch_is_a_start() -> None:
    for done in (StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED):
        assert not any(STEPS.can(done, t) for t in StepTrigger)
    assert STEPS.plan("s", StepStatus.RUNNING, StepTrigger.START).event == "workflow:step:start"
    assert STEPS.plan("s", StepStatus.RUNNING, StepTrigger.FAIL).event == "workflow:step:error"
    assert StepStatus.PENDING not in STEPS.sources(StepTrigger.COMPLETE)


def test_a_merge_job_ends_once() -> None:
    assert MERGES.plan("m", JobStatus.QUEUED, JobTrigger.START).event == "merge:started"
    assert MERGES.plan("m", JobStatus.RUNNING, JobTrigger.FAIL).to_state == JobStatus.FAILED
    with pytest.raises(ConflictError):
        MERGES.plan("m", JobStatus.COMPLETED, JobTrigger.FAIL)
