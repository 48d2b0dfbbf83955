"""``when`` conditions: CEL evaluated against the run's data; failures are clear errors, never crashes."""

from __future__ import annotations

from typing import Any

import pytest

from godel.errors import WorkflowConditionError
from godel.workflow import build_context, compile_condition, evaluate_condition, from_cel, step_view, to_cel
from godel.workflow.conditions import ConditionSyntaxError

from .helpers import load

WORKFLOW = """
name: conditions
variables: {env: prod, threshold: 2}
defaults: {agent: pi}
steps:
  - {id: plan, task: t}
  - {id: split, task: t}
  - {id: build, task: t, dependsOn: [plan]}
  - {id: test, task: t, dependsOn: [build]}
  - id: gate
    task: t
    dependsOn: [test, split]
    when: vars.env == "prod" && steps.build.status == "completed"
"""


def context(**steps: dict[str, Any]) -> dict[str, Any]:
    return build_context(load(WORKFLOW), workflow_id="wf-1", steps=steps)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('steps.test.status == "failed"', True),
        ('steps.test.status == "completed"', False),
        ('steps.plan.output.contains("yes")', True),
        ('steps.plan.output.contains("no way")', False),
        ('vars.env == "prod" && steps.build.status == "completed"', True),
        ("size(steps.split.result.items) > 2", True),
        ("size(steps.split.result.items) > vars.threshold + 5", False),
        ("steps.split.result.items.exists(i, i == 3)", True),
        ("has(steps.plan.result.anything)", False),
        ('steps.split.result.meta.ok && steps.split.result.meta.name.startsWith("sp")', True),
        ('workflow.id == "wf-1" && workflow.name == "conditions"', True),
        ('steps.gate.status == "pending" && steps.gate.output == ""', True),
        ("true", True),
        ("false", False),
    ],
)
def test_typical_conditions(expression: str, expected: bool) -> None:
    ctx = context(
        plan=step_view("completed", "yes, do it"),
        split=step_view("completed", '{"items": [1, 2, 3], "meta": {"ok": true, "name": "split"}}'),
        build=step_view("completed", "built"),
        test=step_view("failed", error="2 tests failed"),
    )
    assert compile_condition(expression).evaluate(ctx, step_id="gate") is expected


def test_evaluate_condition_uses_the_steps_compiled_when() -> None:
    wf = load(WORKFLOW)
    gate = wf.step("gate")
    assert evaluate_condition(gate, context(build=step_view("completed"))) is True
    assert evaluate_condition(gate, context(build=step_view("failed"))) is False
    assert evaluate_condition(wf.step("plan"), context()) is True  # no ``when``: always runs


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("steps.plan.result.x == 1", "no such member in mapping: 'x'"),
        ("steps.plan.output + 1 == 2", "found no matching overload for '+' applied to '(string, int)'"),
        ("steps.plan.output", "it evaluated to 'hello' (a string), not true or false"),
        ("size(steps.plan.result)", "it evaluated to 0 (a number), not true or false"),
        ("1 / 0 == 1", "modulus or divide by zero"),
        ("steps.nope.status == 'x'", "no such member in mapping: 'nope'"),
    ],
)
def test_evaluation_errors_are_workflow_condition_errors(expression: str, reason: str) -> None:
    with pytest.raises(WorkflowConditionError) as info:
        compile_condition(expression).evaluate(context(plan=step_view("completed", "hello")), step_id="gate")
    exc = info.value
    assert (exc.code, exc.status_code, exc.step_id, exc.reason) == ("WORKFLOW_CONDITION_ERROR", 422, "gate", reason)
    assert exc.details == {"stepId": "gate", "expression": expression, "reason": reason}


def test_an_undeclared_name_at_run_time_does_not_dump_the_activation() -> None:
    with pytest.raises(WorkflowConditionError) as info:
        compile_condition('vars.env == "x"').evaluate({"steps": {"a": step_view(output="secret")}}, step_id="s")
    assert info.value.reason == "undeclared reference to 'vars'"
    assert "secret" not in info.value.message


@pytest.mark.parametrize(
    ("expression", "message", "line", "column"),
    [
        ("steps.a.status ==", "the expression ends too early", 1, 16),
        ('steps.a.status == "x', "unterminated string", 1, 19),
        ("steps.a.status @ 1", "unexpected character '@'", 1, 16),
        ("a b", "unexpected 'b'", 1, 3),
        ("a ==\n  (b", "the expression ends too early", 2, 4),
    ],
)
def test_syntax_errors(expression: str, message: str, line: int, column: int) -> None:
    with pytest.raises(ConditionSyntaxError) as info:
        compile_condition(expression)
    assert (info.value.message, info.value.line, info.value.column) == (message, line, column)


def test_references_list_what_an_expression_reads() -> None:
    refs = compile_condition(
        'steps.a.status == "x" && steps["b"].output != "" && vars.env == "p" && [1].all(i, i > 0) && size(steps) > 0'
    ).references
    summary = [(r.kind, r.root, r.name) for r in refs]
    assert ("member", "steps", "a") in summary
    assert ("member", "steps", "b") in summary
    assert ("member", "vars", "env") in summary
    assert ("function", "", "all") in summary and ("function", "", "size") in summary
    assert ("root", "steps", "steps") in summary
    assert not [r for r in refs if r.kind == "name"]  # ``i`` is bound by the macro


def test_python_and_cel_values_convert_both_ways() -> None:
    value = {"s": "x", "i": 3, "f": 1.5, "b": True, "n": None, "l": [1, "two", False], "m": {"k": [{"z": 0}]}}
    assert from_cel(to_cel(value)) == value
    assert type(from_cel(to_cel(True))) is bool
    assert from_cel(to_cel((1, 2))) == [1, 2]
