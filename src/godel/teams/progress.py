"""A team's state and progress, derived from its agents.

- ``counts``: the team's agents by state (every state present, zero or not).
- ``progress`` (0 to 100): the share of the team's expected agents that have ended. The strategy records how many
  agents it expects (``run.expectedAgents`` in the team's metadata) as soon as it knows (a map-reduce after its
  split, a tree as it grows, a pipeline after each rejected review); agents it spawned beyond that estimate
  raise it. A team that is not finished never shows 100, a completed one always does, and a failed one shows
  how far it got.
- ``outcome``: whether a set of agents the strategy needed all completed, and if not, which did not.

Agents that a scale-down killed (``run.scaledDown``) count as ended but never as failures.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from godel.core.models import Agent, Team
from godel.core.runs import ended_for_good
from godel.core.states import AgentState, TeamStatus


def run_state(team: Team) -> dict[str, Any]:
    """The orchestrator's own record in the team's metadata (split items, stages, rounds, results)."""
    state = team.metadata.get("run")
    return dict(state) if isinstance(state, dict) else {}


def counts(agents: Iterable[Agent]) -> dict[str, int]:
    out = {s.value: 0 for s in AgentState}
    for agent in agents:
        out[agent.state.value] += 1
    return out


def progress(team: Team, agents: Sequence[Agent]) -> int:
    if team.status == TeamStatus.COMPLETED:
        return 100
    run = run_state(team)
    expected = max(int(run.get("expectedAgents") or 0), len(agents))
    if expected == 0:
        return 0
    ended = sum(1 for a in agents if ended_for_good(a))
    return min(99, (100 * ended) // expected)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    failed: list[Agent]

    def reason(self, what: str = "agent") -> str | None:
        if self.ok:
            return None
        parts = [f"{a.metadata.get('step', a.id)} {a.state.value}: {a.last_error or 'no reason recorded'}"
                 for a in self.failed[:5]]  # fmt: skip
        more = f" (and {len(self.failed) - 5} more)" if len(self.failed) > 5 else ""
        return f"{len(self.failed)} {what}(s) did not complete: " + "; ".join(parts) + more


def outcome(agents: Iterable[Agent], *, excused: Iterable[str] = ()) -> Outcome:
    """Whether every agent (that ended) completed; ``excused`` ids (scaled down) are left out."""
    skip = set(excused)
    failed = [a for a in agents if a.id not in skip and a.state != AgentState.COMPLETED]
    return Outcome(not failed, failed)


def summary(team: Team, agents: Sequence[Agent]) -> dict[str, Any]:
    """What the API shows of a team's agents: counts by state, how many run, progress."""
    by_state = counts(agents)
    running = sum(by_state[s.value] for s in (AgentState.EXECUTING, AgentState.WAITING, AgentState.COMPLETING))
    return {
        "total": len(agents),
        "byState": {k: v for k, v in by_state.items() if v},
        "running": running,
        "ended": sum(1 for a in agents if ended_for_good(a)),
        "progress": progress(team, agents),
    }


def metrics(
    team: Team, agents: list[Agent], summary: dict[str, Any], usage: dict[str, Any], *, now: datetime
) -> dict[str, Any]:
    """A team's numbers: progress, agents by state, requests, tokens and cost at the gateway, time."""
    started = parse_time(run_state(team).get("startedAt"))
    end = team.completed_at or now
    return {
        "teamId": team.id,
        "status": team.status.value,
        "progress": summary["progress"],
        "agents": {k: summary[k] for k in ("total", "byState", "running", "ended")},
        "requests": int(usage.get("requests") or 0),
        "tokens": {
            "input": int(usage.get("input_tokens") or 0),
            "output": int(usage.get("output_tokens") or 0),
            "cached": int(usage.get("cached_tokens") or 0),
        },
        "costUsd": round(float(usage["cost_usd"]), 8) if usage.get("cost_usd") is not None else None,
        "budgetUsd": team.budget_allocated,
        "agentRuntimeSeconds": round(sum(a.runtime or 0.0 for a in agents), 3),
        "elapsedSeconds": round((end - started).total_seconds(), 3) if started else None,
    }


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
