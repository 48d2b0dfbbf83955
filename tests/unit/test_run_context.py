"""The typed run context reads the rows earlier versions wrote, writes them back the same, and "ended for good"
has one answer for every waiter: a failed agent with a retry or a model fallback to come has not ended."""

from __future__ import annotations

import dataclasses

import pytest

from godel.core.models import Agent
from godel.core.runs import RunContext, ended_for_good
from godel.core.states import AgentState

LEGACY = {
    "route": ["a/one", "b/two"],
    "routeIndex": 1,
    "preamble": "earlier talk",
    "session": "s-1",
    "nativeSession": "n-1",
    "skippedFallbacks": [{"model": "c/three", "why": "wire"}],
    "someFutureKey": {"kept": True},
}


def test_a_legacy_row_round_trips_unchanged() -> None:
    ctx = RunContext.parse(LEGACY)
    assert (ctx.model, ctx.next_fallback, ctx.session, ctx.native_session) == ("b/two", None, "s-1", "n-1")
    assert ctx.to_json() == LEGACY


def test_the_empty_context_writes_nothing() -> None:
    assert RunContext.parse(None).to_json() == {}
    assert RunContext.parse({"depth": 0, "prompt": None}).to_json() == {}


def test_a_restart_starts_the_route_again_without_the_follow_up() -> None:
    ctx = RunContext.parse({**LEGACY, "prompt": "and now?", "resume": "n-1", "depth": 2})
    fresh = ctx.fresh()
    assert (fresh.route_index, fresh.prompt, fresh.resume, fresh.preamble) == (0, None, None, "earlier talk")
    assert fresh.task_for("the task") == "earlier talk\n\nthe task"
    assert ctx.task_for("the task") == "and now?"


def test_the_gateway_key_lists_this_attempts_model_first() -> None:
    ctx = RunContext(route=("a/one", "b/two", "c/three"), route_index=1)
    assert ctx.route_from_current() == ["b/two", "c/three", "a/one"]


def test_garbage_in_a_row_does_not_break_reading_it() -> None:
    ctx = RunContext.parse({"routeIndex": "x", "depth": None, "route": None})
    assert (ctx.route_index, ctx.depth, ctx.route, ctx.model) == (0, 0, (), None)


def _agent(state: AgentState, **kw: object) -> Agent:
    base = Agent(id="a", task="t", state=state)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("agent", "ended"),
    [
        (_agent(AgentState.COMPLETED), True),
        (_agent(AgentState.KILLED), True),
        (_agent(AgentState.EXECUTING), False),
        (_agent(AgentState.PENDING, retry_count=1, max_retries=1), False),
        (_agent(AgentState.FAILED, retry_count=0, max_retries=2), False),  # a retry is coming
        (_agent(AgentState.FAILED, retry_count=2, max_retries=2), True),
        # The provider failed and the route has a next model: the fallback is queued right after this failure.
        (_agent(AgentState.FAILED, outcome={"providerError": True, "fallback": "b/two"}), False),
        (_agent(AgentState.FAILED, outcome={"providerError": True, "fallback": None}), True),
    ],
)
def test_ended_for_good(agent: Agent, ended: bool) -> None:
    assert ended_for_good(agent) is ended
