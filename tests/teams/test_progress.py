"""Team progress and outcome, derived from its agents."""

from __future__ import annotations

from godel.core.models import Agent, Team
from godel.core.states import AgentState, TeamStatus
from godel.teams.progress import counts, outcome, progress, summary


def agent(n: int, state: AgentState, *, retries: int = 0, max_retries: int = 0) -> Agent:
    error = "boom" if state == AgentState.FAILED else None
    return Agent(id=f"a{n}", task="t", model="", state=state, retry_count=retries, max_retries=max_retries,
                 metadata={"step": f"agent/{n}"}, last_error=error)  # fmt: skip


def team(status: TeamStatus = TeamStatus.ACTIVE, expected: int = 0) -> Team:
    return Team(id="t", name="t", status=status, metadata={"run": {"expectedAgents": expected}})


def test_progress_is_the_share_of_expected_agents_ended() -> None:
    agents = [agent(0, AgentState.COMPLETED), agent(1, AgentState.EXECUTING), agent(2, AgentState.KILLED)]
    assert progress(team(expected=4), agents) == 50
    assert progress(team(expected=0), agents) == 66  # no estimate: the agents there are
    assert progress(team(expected=2), [agent(0, AgentState.COMPLETED), agent(1, AgentState.COMPLETED)]) == 99
    assert progress(team(TeamStatus.COMPLETED), []) == 100
    assert progress(team(), []) == 0
    # a failure with a retry left has not ended
    assert progress(team(expected=1), [agent(0, AgentState.FAILED, max_retries=1)]) == 0
    assert progress(team(expected=1), [agent(0, AgentState.FAILED, retries=1, max_retries=1)]) == 99


def test_outcome_excuses_scaled_down_agents() -> None:
    agents = [agent(0, AgentState.COMPLETED), agent(1, AgentState.KILLED), agent(2, AgentState.FAILED)]
    assert outcome(agents, excused={"a1", "a2"}).ok
    bad = outcome(agents, excused={"a1"})
    assert not bad.ok and [a.id for a in bad.failed] == ["a2"]
    assert bad.reason() == "1 agent(s) did not complete: agent/2 failed: boom"


def test_counts_and_summary() -> None:
    agents = [agent(0, AgentState.COMPLETED), agent(1, AgentState.EXECUTING), agent(2, AgentState.PENDING)]
    assert counts(agents)["completed"] == 1 and counts(agents)["paused"] == 0
    s = summary(team(expected=3), agents)
    assert s == {"total": 3, "byState": {"completed": 1, "executing": 1, "pending": 1}, "running": 1, "ended": 1,
                 "progress": 33}  # fmt: skip
