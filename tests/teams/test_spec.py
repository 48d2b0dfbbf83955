"""``TeamSpec.parse``: every problem of a team request at once, defaults filled in, a stable stored form."""

from __future__ import annotations

import dataclasses

import pytest

from godel.errors import UnknownStrategyError, ValidationError
from godel.teams.spec import TeamSpec


def fields_of(raw: dict) -> list[str]:
    with pytest.raises(ValidationError) as info:
        TeamSpec.parse(raw)
    return [f.field for f in info.value.fields]


def test_defaults_and_round_trip() -> None:
    spec = TeamSpec.parse({"strategy": "map-reduce", "repo": "/r", "task": "t"})
    assert (spec.size, spec.max_agents, spec.agent, spec.max_rounds, spec.max_retries) == (4, 10, "pi", 3, 0)
    again = TeamSpec.parse({k: v for k, v in spec.as_config().items() if v not in (None, [], {})})
    assert again.roles == {"coordinator": "coordinator", "worker": "worker", "reduce": "worker"}
    assert dataclasses.replace(again, roles={}) == spec
    parallel = TeamSpec.parse({"strategy": "parallel", "repo": "/r", "tasks": ["a", "b", "c"]})
    assert parallel.size == 3 and parallel.scalable
    tree = TeamSpec.parse({"strategy": "tree", "repo": "/r", "task": "t"})
    assert (tree.depth, tree.fanout, tree.scalable) == (2, 2, False)


def test_pipeline_stages() -> None:
    one = TeamSpec.parse({"strategy": "pipeline", "repo": "/r", "task": "build it"})
    assert [(s.role, s.task) for s in one.pipeline_stages()] == [
        ("worker", "build it"), ("reviewer", "Review the work done for this task: build it"),
    ]  # fmt: skip
    listed = TeamSpec.parse({"strategy": "pipeline", "repo": "/r", "tasks": ["a", "b"]})
    assert [s.role for s in listed.pipeline_stages()] == ["worker", "worker"]
    staged = TeamSpec.parse(
        {"strategy": "pipeline", "repo": "/r", "stages": [{"task": "x", "agent": "claude"}, {"role": "reviewer",
                                                                                            "task": "y"}]}
    )  # fmt: skip
    assert staged.stages[0].agent == "claude" and staged.stages[0].role == "worker"


def test_unknown_strategy() -> None:
    with pytest.raises(UnknownStrategyError, match="valid strategies: parallel, map-reduce, pipeline, tree"):
        TeamSpec.parse({"strategy": "swarm", "repo": "/r", "task": "t"})


def test_every_problem_at_once() -> None:
    got = fields_of(
        {"strategy": "parallel", "size": -1, "maxAgents": "x", "timeout": -1, "retryPolicy": {"maxRounds": 0},
         "roles": {"boss": "worker"}, "stages": [], "colour": 1}
    )  # fmt: skip
    assert set(got) >= {"repo", "task", "size", "maxAgents", "timeout", "retryPolicy.maxRounds", "roles.boss",
                        "colour"}  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"strategy": "tree"}, "task"),
        ({"strategy": "pipeline"}, "stages"),
        ({"strategy": "parallel", "task": "t", "tasks": ["u"]}, "tasks"),
        ({"strategy": "parallel", "task": "t", "stages": [{"task": "x"}]}, "stages"),
        ({"strategy": "pipeline", "stages": [{"role": "worker"}]}, "stages.0.task"),
        ({"strategy": "pipeline", "stages": [{"task": "x", "colour": 1}]}, "stages.0"),
        ({"strategy": "parallel", "task": "t", "size": 20}, "size"),  # above maxAgents (5, below)
        ({"strategy": "parallel", "task": "t", "budget": 0}, "budget"),
        ({"strategy": "tree", "task": "t", "depth": 9}, "depth"),
    ],
)
def test_field_errors(raw: dict, field: str) -> None:
    raw = {"repo": "/r", **raw}
    if field == "size":
        raw["maxAgents"] = 5
    assert field in fields_of(raw)
