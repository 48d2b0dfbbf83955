"""The example workflows shipped in examples/workflows/ stay valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from godel.workflow import load_workflow_file

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "workflows"


def test_both_examples_are_there() -> None:
    assert {p.name for p in EXAMPLES.glob("*.yaml")} >= {"feature.yaml", "shell.yaml"}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.y*ml")), ids=lambda p: p.name)
def test_example_validates(path: Path) -> None:
    wf = load_workflow_file(path)
    assert wf.steps and wf.topological_order() == [s for level in wf.levels() for s in level]


def test_the_feature_example_is_a_plan_implement_review_test_dag() -> None:
    wf = load_workflow_file(EXAMPLES / "feature.yaml")
    assert wf.topological_order()[:4] == ["plan", "implement", "review", "test"]
    assert wf.step("plan").agent == "pi"
    assert wf.step("review").when and "{{ steps.plan.output }}" in wf.step("implement").task


def test_the_shell_example_has_only_command_steps() -> None:
    wf = load_workflow_file(EXAMPLES / "shell.yaml")
    assert {s.agent for s in wf.steps} == {"command"}
    assert wf.levels()[0] == ["lint", "unit"]


DOCS = Path(__file__).resolve().parents[3] / "docs" / "workflows.md"


def test_the_docs_example_validates_and_its_conditions_compile() -> None:
    from godel.workflow import compile_condition, load_workflow

    text = DOCS.read_text()
    blocks = text.split("```yaml\n")[1:]
    first = blocks[0].split("```")[0]
    assert load_workflow(first).step_ids == ["plan", "implement", "review", "test"]
    queue_step = next(b.split("```")[0] for b in blocks if "queue:" in b.split("```")[0])
    assert load_workflow(queue_step).step("work").queue is not None  # the "Queue steps" example is valid
    examples = next(b.split("```")[0] for b in blocks if b.startswith("when:")).splitlines()
    conditions = [line.split("when:", 1)[1].split("  #")[0].strip() for line in examples]
    assert len(conditions) == 8
    for condition in conditions:
        compile_condition(condition)
