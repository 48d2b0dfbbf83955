"""The step graph: order, waves, ancestry, cycles and which steps may start."""

from __future__ import annotations

import pytest

from godel.errors import WorkflowValidationError
from godel.workflow import StepStatus, build_context, graph, step_view

from .helpers import load

DIAMOND = """
name: diamond
maxConcurrency: 2
defaults: {agent: pi}
steps:
  - {id: plan, task: t}
  - {id: api, task: t, dependsOn: [plan]}
  - {id: ui, task: t, dependsOn: [plan], onError: continue}
  - {id: docs, task: t, dependsOn: [plan]}
  - {id: review, task: t, dependsOn: [api, ui]}
"""


def test_order_levels_dependents_ancestors() -> None:
    wf = load(DIAMOND)
    assert wf.topological_order() == ["plan", "api", "ui", "docs", "review"]
    assert wf.levels() == [["plan"], ["api", "ui", "docs"], ["review"]]
    assert wf.dependents("plan") == ["api", "ui", "docs"]
    assert wf.dependents("review") == []
    assert wf.ancestors("review") == {"plan", "api", "ui"}
    assert wf.ancestors("plan") == set()


def test_topological_order_follows_dependencies_not_file_order() -> None:
    deps = {"c": ["b"], "b": ["a"], "a": [], "d": []}
    assert graph.topological_order(deps) == ["a", "d", "b", "c"]


def test_find_cycles() -> None:
    assert graph.find_cycles({"a": ["b"], "b": ["c"], "c": ["a"]}) == [["a", "b", "c"]]
    assert graph.find_cycles({"x": ["y"], "y": ["x", "z"], "z": ["z"]}) == [["x", "y"]]  # self-loops apart
    assert graph.find_cycles({"a": [], "b": ["a"]}) == []
    long_chain = {f"s{i}": [f"s{i + 1}"] for i in range(3000)} | {"s3000": ["s0"]}
    (cycle,) = graph.find_cycles(long_chain)  # no recursion limit
    assert len(cycle) == 3001 and cycle[0] == "s0"


def test_ready_steps_follow_dependencies_and_max_concurrency() -> None:
    wf = load(DIAMOND)
    assert wf.ready_steps({}) == ["plan"]
    assert wf.ready_steps({"plan": "running"}) == []
    # Three steps are ready once plan completed, but maxConcurrency is 2.
    assert wf.ready_steps({"plan": "completed"}) == ["api", "ui"]
    assert wf.ready_steps({"plan": "completed", "api": "running"}) == ["ui"]
    assert wf.ready_steps({"plan": "completed", "api": "running", "ui": "retrying"}) == []
    assert wf.ready_steps({"plan": "completed", "api": "completed", "ui": "completed", "docs": "running"}) == ["review"]


def test_skipped_and_tolerated_failures_satisfy_dependents() -> None:
    wf = load(DIAMOND)
    done = {"plan": "completed", "docs": "completed"}
    assert wf.ready_steps(done | {"api": "skipped", "ui": "completed"}) == ["review"]
    # ui has onError: continue, so its failure lets review run (and review may test it in ``when``)
    progress = wf.progress(done | {"api": "completed", "ui": "failed"})
    assert progress.ready == ("review",) and progress.fatal == () and progress.status == "running"


def test_a_fatal_failure_fails_the_run_and_starts_nothing_new() -> None:
    wf = load(DIAMOND)
    progress = wf.progress({"plan": "completed", "api": "failed", "ui": "running"})
    assert progress.fatal == ("api",)
    assert progress.ready == ()
    assert progress.active == ("ui",)
    assert progress.status == "failed" and not progress.finished
    progress = wf.progress({"plan": "completed", "api": "failed", "ui": "completed"})
    assert progress.finished and progress.status == "failed"
    assert set(progress.waiting) == {"docs", "review"}  # the engine cancels these


def test_a_cancelled_dependency_blocks_everything_downstream() -> None:
    wf = load(DIAMOND)
    progress = wf.progress({"plan": "completed", "api": "cancelled", "ui": "completed", "docs": "completed"})
    assert progress.blocked == ("review",)
    assert progress.ready == ()
    assert progress.finished and progress.status == "completed"
    chain = load(
        "name: c\ndefaults: {agent: pi}\nsteps:\n  - {id: a, task: t}\n  - {id: b, task: t, dependsOn: [a]}\n"
        "  - {id: c, task: t, dependsOn: [b]}\n"
    )
    assert chain.progress({"a": "cancelled"}).blocked == ("b", "c")


def test_a_finished_run() -> None:
    wf = load(DIAMOND)
    statuses = dict.fromkeys(wf.step_ids, "completed") | {"docs": "skipped"}
    progress = wf.progress(statuses)
    assert progress.finished and progress.status == "completed"
    assert progress.ready == progress.waiting == progress.active == ()


def test_statuses_must_be_known() -> None:
    with pytest.raises(ValueError):
        load(DIAMOND).progress({"plan": "exploded"})
    assert StepStatus("retrying") is StepStatus.RETRYING


def test_context_fills_every_step_and_checks_variables() -> None:
    wf = load(
        "name: v\nvariables: {env: dev}\nsteps:\n  - {id: a, task: t, agent: pi}\n  - {id: b, task: t, agent: pi}\n"
    )
    ctx = build_context(wf, workflow_id="w", steps={"a": step_view("completed", "[1, 2]")}, variables={"env": "prod"})
    assert ctx == {
        "steps": {
            "a": {"status": "completed", "output": "[1, 2]", "result": [1, 2], "error": ""},
            "b": {"status": "pending", "output": "", "result": {}, "error": ""},
        },
        "vars": {"env": "prod"},
        "workflow": {"id": "w", "name": "v"},
    }
    with pytest.raises(WorkflowValidationError) as info:
        build_context(wf, workflow_id="w", variables={"envv": "prod"})
    assert [f.as_dict() for f in info.value.fields] == [
        {"field": "variables.envv", "message": "not declared by the workflow (declared: env)"}
    ]


def test_step_view_results() -> None:
    assert step_view("completed", '{"a": 1}')["result"] == {"a": 1}
    assert step_view("completed", "42")["result"] == {}
    assert step_view("completed", "{not json")["result"] == {}
    assert step_view("completed", "text", result={"explicit": True})["result"] == {"explicit": True}
    assert step_view("failed", None, error="boom") == {"status": "failed", "output": "", "result": {}, "error": "boom"}
