"""``{{ … }}`` placeholders: parsing, what they reference, and strict rendering."""

from __future__ import annotations

import pytest

from godel.errors import WorkflowTemplateError
from godel.workflow import Template, build_context, referenced_steps, render_template, step_view
from godel.workflow.templates import TemplateSyntaxError

from .helpers import load

CONTEXT = {
    "steps": {
        "plan": step_view("completed", "the plan"),
        "split": step_view("completed", '{"items": ["a", "b"], "n": 2, "ok": true, "meta": {"k": null}}'),
    },
    "vars": {"feature": "dark mode", "tags": ["ui", "css"], "retries": 3},
    "workflow": {"id": "wf-9", "name": "demo"},
}


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ("Implement {{ vars.feature }}: {{steps.plan.output}}", "Implement dark mode: the plan"),
        ("{{ steps.split.result.items.1 }}", "b"),
        ("{{ steps.split.result.items }}", '["a", "b"]'),
        ("{{ steps.split.result.n }} {{ steps.split.result.ok }} [{{ steps.split.result.meta.k }}]", "2 true []"),
        ("{{ steps.split.result.meta }}", '{"k": null}'),
        ("{{ vars.tags }} x{{ vars.retries }}", '["ui", "css"] x3'),
        ("run {{ workflow.id }} of {{ workflow.name }}", "run wf-9 of demo"),
        ("{{ steps.plan.status }}/{{ steps.plan.error }}", "completed/"),
        ("no placeholders, a {single} brace and }} alone", "no placeholders, a {single} brace and }} alone"),
        ("literal \\{{ not a template }} here", "literal {{ not a template }} here"),
        ("", ""),
    ],
)
def test_rendering(template: str, rendered: str) -> None:
    assert render_template(template, CONTEXT) == rendered


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ steps.plan.result.files }}", "steps.plan.result has no 'files'"),
        ("{{ steps.nope.output }}", "steps has no 'nope'"),
        ("{{ steps.split.result.items.5 }}", "steps.split.result.items is a list of 2; '5' is not an index in it"),
        ("{{ steps.split.result.items.x }}", "steps.split.result.items is a list of 2; 'x' is not an index in it"),
        ("{{ steps.split.result.n.more }}", "steps.split.result.n is a number, it has no 'more'"),
        ("{{ vars.missing }}", "vars has no 'missing'"),
    ],
)
def test_unknown_paths_fail_clearly(template: str, reason: str) -> None:
    with pytest.raises(WorkflowTemplateError) as info:
        render_template(template, CONTEXT, step_id="build")
    exc = info.value
    assert (exc.code, exc.status_code, exc.reason, exc.step_id) == ("WORKFLOW_TEMPLATE_ERROR", 422, reason, "build")
    assert exc.message == f"step 'build': template {template} failed: {reason}"


@pytest.mark.parametrize(
    ("template", "message", "offset"),
    [
        ("a {{ steps.plan.output", "unclosed '{{' (write \\{{ for a literal '{{')", 2),
        ("{{ }}", "empty placeholder '{{ }}'", 0),
        (
            "x {{ vars.a | upper }}",
            "'{{ vars.a | upper }}' is not a path such as steps.<id>.output or vars.<name> "
            "(placeholders hold a dotted path, no code)",
            2,
        ),
        (
            "{{ __import__('os') }}",
            "'{{ __import__('os') }}' is not a path such as steps.<id>.output or "
            "vars.<name> (placeholders hold a dotted path, no code)",
            0,
        ),
    ],
)
def test_syntax_errors(template: str, message: str, offset: int) -> None:
    with pytest.raises(TemplateSyntaxError) as info:
        Template.parse(template)
    assert (info.value.message, info.value.offset) == (message, offset)
    with pytest.raises(WorkflowTemplateError):
        render_template(template, CONTEXT)


def test_referenced_steps() -> None:
    assert referenced_steps("{{ steps.a.output }} {{ steps.b.result.x }} {{ vars.c }} {{ steps.a.status }}") == {
        "a",
        "b",
    }
    assert referenced_steps("plain text") == set()


def test_a_step_renders_its_task_command_and_env() -> None:
    wf = load(
        """
        name: r
        variables: {target: prod}
        steps:
          - {id: plan, task: t, agent: pi}
          - id: ship
            dependsOn: [plan]
            command: deploy --to {{ vars.target }}
            env: {PLAN: "{{ steps.plan.output }}", RUN: "{{ workflow.id }}"}
        """
    )
    ctx = build_context(wf, workflow_id="wf-1", steps={"plan": step_view("completed", "step one")})
    rendered = wf.step("ship").render(ctx)
    assert rendered.task == rendered.command == "deploy --to prod"
    assert rendered.env == {"PLAN": "step one", "RUN": "wf-1"}
    ctx = build_context(wf, workflow_id="wf-1", variables={"target": "staging"})
    assert wf.step("ship").render(ctx).command == "deploy --to staging"
