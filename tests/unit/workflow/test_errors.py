"""Invalid workflows: every kind of problem, each at its exact line and column, all reported at once."""

from __future__ import annotations

import pytest

from godel.errors import ValidationError, WorkflowValidationError
from godel.workflow import load_workflow, parse_workflow
from godel.workflow.parsing import STEP_KEYS

from .helpers import only_problem, problems


def test_yaml_syntax_error_has_its_position() -> None:
    assert only_problem("name: x\nsteps: [a, b\n") == (
        "",
        3,
        1,
        "invalid YAML: while parsing a flow sequence, expected ',' or ']', but got '<stream end>'",
    )


def test_json_syntax_error_has_its_position() -> None:
    field, line, column, message = only_problem('{\n  "name": "x",\n  "steps": [,]\n}', fmt="json")
    assert (field, line, column) == ("", 3, 13)
    assert message.startswith("invalid JSON: Expecting value")


def test_non_mapping_root_and_empty_file() -> None:
    assert only_problem("- a\n- b\n") == ("", 1, 1, "a workflow must be a mapping, not a list")
    assert only_problem("") == ("", 1, 1, "the file is empty: expected a mapping with name and steps")
    assert only_problem("# only a comment\n") == ("", 1, 1, "the file is empty: expected a mapping with name and steps")


def test_missing_or_blank_name_and_no_steps() -> None:
    assert problems("description: d\n") == [
        ("name", 1, 1, "missing required key 'name'"),
        ("steps", 1, 1, "missing required key 'steps'"),
    ]
    assert problems("name: '  '\nsteps: []\n") == [
        ("name", 1, 7, "must not be blank"),
        ("steps", 2, 8, "a workflow needs at least one step"),
    ]
    assert only_problem("name: x\nsteps: {a: 1}\n") == ("steps", 2, 8, "must be a list of steps, not a mapping")


def test_missing_step_id_and_task() -> None:
    text = """\
name: x
defaults: {agent: pi}
steps:
  - name: first
    task: t
  - id: b
    name: no task
"""
    assert problems(text) == [
        ("steps[0].id", 4, 5, "missing required key 'id'"),
        ("steps[1].task", 6, 5, "missing required key 'task' (or 'command' for a shell step)"),
    ]


def test_duplicate_step_ids() -> None:
    text = """\
name: x
defaults: {agent: pi}
steps:
  - id: a
    task: t
  - id: a
    task: u
"""
    assert only_problem(text) == ("steps[1].id", 6, 9, "duplicate step id 'a' (first defined on line 4)")


@pytest.mark.parametrize(
    ("step_id", "why"),
    [
        ("bad-id", "letters, digits and _ only, not starting with a digit"),
        ("1st", "letters, digits and _ only, not starting with a digit"),
        ("in", "a CEL word"),
        ("true", "a CEL word"),
    ],
)
def test_invalid_step_ids(step_id: str, why: str) -> None:
    text = f"name: x\ndefaults: {{agent: pi}}\nsteps:\n  - id: '{step_id}'\n    task: t\n"
    assert only_problem(text) == (
        "steps[0].id",
        4,
        9,
        f"step id {step_id!r} must be usable as steps.<id> in conditions: {why}",
    )


def test_unknown_keys_get_a_hint() -> None:
    text = """\
name: x
max_concurrency: 2
defaults: {agent: pi}
steps:
  - id: a
    task: t
    depends_on: []
    colour: red
"""
    assert problems(text) == [
        ("max_concurrency", 2, 1, "unknown key 'max_concurrency' (did you mean 'maxConcurrency'?)"),
        ("steps[0].depends_on", 7, 5, "unknown key 'depends_on' (did you mean 'dependsOn'?)"),
        (
            "steps[0].colour",
            8,
            5,
            "unknown key 'colour'; a step takes: id, name, task, command, dependsOn, when, agent, agentSelector, "
            "model, role, timeout, retries, backoff, onError, env, repo, baseRef, queue",
        ),
    ]


def test_wrong_types_and_ranges() -> None:
    text = """\
name: [x]
maxConcurrency: 0
timeout: -5
onError: retyr
defaults: {agent: pii}
steps:
  - id: a
    task: 5
    retries: -1
    timeout: 0
    backoff: {initial: 10s, max: 1s, factor: 0.5}
    dependsOn: {a: b}
    when: [x]
    env: {A: [1], 2B: x}
"""
    assert problems(text) == [
        ("name", 1, 7, "must be a string, not a list"),
        ("maxConcurrency", 2, 17, "must be at least 1, not 0"),
        ("timeout", 3, 10, "must be more than 0 seconds"),
        ("onError", 4, 10, "must be one of fail, continue, retry, not 'retyr' (did you mean 'retry'?)"),
        (
            "defaults.agent",
            5,
            19,
            "unknown agent 'pii' (did you mean 'pi'?); one of: aider, claude, codex, command, gemini, "
            "mini-swe-agent, pi",
        ),
        ("steps[0].agent", 7, 5, "no agent: set agent (e.g. pi) on the step or under defaults, or give a command"),
        ("steps[0].task", 8, 11, "must be a string, not a number"),
        ("steps[0].retries", 9, 14, "must be at least 0, not -1"),
        ("steps[0].timeout", 10, 14, "must be more than 0 seconds"),
        ("steps[0].backoff.max", 11, 34, "max must not be less than initial"),
        ("steps[0].backoff.factor", 11, 46, "must be at least 1, not 0.5"),
        ("steps[0].dependsOn", 12, 16, "must be a list of step ids, not a mapping"),
        ("steps[0].when", 13, 11, "must be a CEL expression (a string), not a list"),
        ("steps[0].env.A", 14, 14, "must be a string, not a list"),
        ("steps[0].env.2B", 14, 19, "'2B' is not an environment variable name"),
    ]


def test_unknown_dependency_with_a_hint_and_self_dependency() -> None:
    text = """\
name: x
defaults: {agent: pi}
steps:
  - id: test
    task: t
  - id: deploy
    task: t
    dependsOn: [tset, deploy, nothing_like_it]
"""
    assert problems(text) == [
        ("steps[1].dependsOn[0]", 8, 17, "unknown step 'tset' (did you mean 'test'?)"),
        ("steps[1].dependsOn[1]", 8, 23, "step 'deploy' depends on itself"),
        ("steps[1].dependsOn[2]", 8, 31, "unknown step 'nothing_like_it'"),
    ]


def test_cycles_are_reported_with_their_path() -> None:
    text = """\
name: x
defaults: {agent: pi}
steps:
  - id: a
    task: t
    dependsOn: [c]
  - id: b
    task: t
    dependsOn: [a]
  - id: c
    task: t
    dependsOn: [b]
  - id: d
    task: t
    dependsOn: [e]
  - id: e
    task: t
    dependsOn: [d]
"""
    assert problems(text) == [
        ("steps[0].dependsOn[0]", 6, 17, "dependency cycle: a → c → b → a (each depends on the next)"),
        ("steps[3].dependsOn[0]", 15, 17, "dependency cycle: d → e → d (each depends on the next)"),
    ]


def test_bad_conditions_point_into_the_expression() -> None:
    text = """\
name: x
variables: {env: prod}
defaults: {agent: pi}
steps:
  - id: build
    task: t
  - id: lint
    task: t
  - id: deploy
    dependsOn: [build]
    task: t
    when: steps.build.status == "completed" &&
  - id: notify
    dependsOn: [deploy]
    task: t
    when: 'steps.lint.status == "failed" || vars.enviro == "prod" || steps.build.output.lowerAscii() == x'
  - id: dynamic
    dependsOn: [build]
    task: t
    when: |
      steps[vars.env].status == "completed"
      && workflow.owner == "me"
"""
    assert problems(text) == [
        ("steps[2].when", 12, 45, "invalid condition: the expression ends too early"),
        (
            "steps[3].when",
            16,
            12,
            "step 'lint' is not a dependency of 'notify': add it to dependsOn (directly or indirectly)",
        ),
        ("steps[3].when", 16, 45, "unknown variable 'enviro' (did you mean 'env'?); declare it under variables"),
        ("steps[3].when", 16, 89, "unknown function 'lowerAscii'"),
        ("steps[3].when", 16, 105, "unknown name 'x': conditions read steps, vars and workflow"),
        ("steps[4].when", 21, 7, "steps[…] needs a literal name in quotes, so it can be checked before the run"),
        ("steps[4].when", 22, 10, "workflow has no 'owner'; it has id, name"),
    ]


def test_transitive_dependencies_may_be_read_and_macros_bind_names() -> None:
    text = """\
name: x
defaults: {agent: pi}
steps:
  - id: a
    task: t
  - id: b
    task: t
    dependsOn: [a]
  - id: c
    task: "{{ steps.a.output }}"
    dependsOn: [b]
    when: 'steps.a.result.items.exists(i, i > 2) && has(steps["a"].result.x) && workflow.name != ""'
"""
    wf = load_workflow(text)
    assert wf.step("c").condition is not None


def test_bad_templates() -> None:
    text = """\
name: x
variables: {feature: f}
defaults: {agent: pi}
steps:
  - id: plan
    task: "Plan {{ vars.feture }} for {{ workflow.id }}"
  - id: other
    task: t
  - id: build
    dependsOn: [plan]
    task: |
      Build {{ steps.plan.outptu }}
      using {{ steps.other.output }} and {{ steps.build.output }}
      then {{ steps.plan.output.x }} {{ secrets.key }} {{ steps.plan }}
  - id: shell
    dependsOn: [plan]
    command: "echo {{ steps.plan.result.files | join }}"
    env: {A: "{{ steps.plan.output"}
"""
    assert problems(text) == [
        ("steps[0].task", 6, 17, "unknown variable 'feture' (did you mean 'feature'?); declare it under variables"),
        (
            "steps[2].task",
            12,
            13,
            "steps have no 'outptu' (did you mean 'output'?); they have status, output, result, error",
        ),
        (
            "steps[2].task",
            13,
            13,
            "step 'other' is not a dependency of 'build': add it to dependsOn (directly or indirectly)",
        ),
        ("steps[2].task", 13, 42, "step 'build' cannot read its own status or output"),
        ("steps[2].task", 14, 12, "steps.plan.output is text; use steps.plan.result.… to read JSON fields"),
        ("steps[2].task", 14, 38, "unknown name 'secrets': placeholders start with steps., vars. or workflow."),
        ("steps[2].task", 14, 56, "name a field of step 'plan': status, output, result, error"),
        (
            "steps[3].command",
            17,
            20,
            "invalid template: '{{ steps.plan.result.files | join }}' is not a path such as steps.<id>.output or "
            "vars.<name> (placeholders hold a dotted path, no code)",
        ),
        ("steps[3].env.A", 18, 15, "invalid template: unclosed '{{' (write \\{{ for a literal '{{')"),
    ]


def test_a_file_with_five_different_problems_reports_five() -> None:
    text = """\
name: five
maxConcurrency: 0
defaults: {agent: pi}
steps:
  - id: build
    task: t
    onError: explode
  - id: test
    task: t
    dependsOn: [biuld]
    when: steps.build.status ==
  - id: build
    task: t
"""
    found = problems(text)
    assert [(f, line, col) for f, line, col, _ in found] == [
        ("maxConcurrency", 2, 17),
        ("steps[0].onError", 7, 14),
        ("steps[1].dependsOn[0]", 10, 17),
        ("steps[1].when", 11, 30),
        ("steps[2].id", 12, 9),
    ]
    assert [message for *_, message in found] == [
        "must be at least 1, not 0",
        "must be one of fail, continue, retry, not 'explode'",
        "unknown step 'biuld' (did you mean 'build'?)",
        "invalid condition: the expression ends too early",
        "duplicate step id 'build' (first defined on line 5)",
    ]


def test_json_errors_have_positions_too() -> None:
    text = (
        '{\n  "name": "j",\n  "steps": [\n'
        '    {"id": "a", "agent": "pi", "task": "{{ steps.b.output }}", "retries": -2},\n'
        '    {"id": "b", "agent": "pi", "task": "x", "dependsOn": ["a", "zz"], "colour": 1}\n'
        "  ]\n}\n"
    )
    assert problems(text, fmt="json") == [
        ("steps[0].task", 4, 41, "step 'b' is not a dependency of 'a': add it to dependsOn (directly or indirectly)"),
        ("steps[0].retries", 4, 75, "must be at least 0, not -2"),
        ("steps[1].dependsOn[1]", 5, 64, "unknown step 'zz'"),
        ("steps[1].colour", 5, 71, "unknown key 'colour'; a step takes: " + ", ".join(STEP_KEYS)),
    ]


def test_duplicate_keys_are_reported() -> None:
    assert problems("name: a\nname: b\nsteps: [{id: s, task: t, agent: pi, agent: claude}]\n") == [
        ("name", 2, 1, "duplicate key 'name'"),
        ("steps[0].agent", 3, 37, "duplicate key 'agent'"),
    ]


def test_command_steps_and_agent_conflicts() -> None:
    text = """\
name: x
steps:
  - id: a
    command: make
    agent: pi
  - id: b
    task: t
    agent: pi
    agentSelector: {role: r}
"""
    assert problems(text) == [
        ("steps[0].command", 4, 14, "a command step runs the 'command' agent, not 'pi': drop agent or command"),
        ("steps[1].agentSelector", 9, 5, "give agent or agentSelector, not both"),
    ]


def test_variables_must_be_names_with_json_values() -> None:
    text = """\
name: x
variables:
  ok: 1
  bad-name: 2
  when: 2024-01-01
steps: [{id: a, task: t, agent: pi}]
"""
    assert problems(text) == [
        (
            "variables.bad-name",
            4,
            3,
            "variable name 'bad-name' must be usable as vars.<name> in conditions: "
            "letters, digits and _ only, not starting with a digit",
        ),
        (
            "variables.when",
            5,
            9,
            "a variable's value must be JSON-like (strings, numbers, booleans, lists, mappings), not date; quote it",
        ),
    ]


def test_the_error_is_a_validation_error_with_positions_in_its_details() -> None:
    with pytest.raises(ValidationError) as info:
        load_workflow("name: x\nsteps: []\n", filename="w.yaml")
    exc = info.value
    assert isinstance(exc, WorkflowValidationError) and exc.status_code == 400
    assert exc.message == "invalid workflow w.yaml: 1 problem"
    assert exc.details == {
        "fields": [{"field": "steps", "message": "a workflow needs at least one step", "line": 2, "column": 8}]
    }


def test_parse_workflow_reports_without_positions() -> None:
    with pytest.raises(WorkflowValidationError) as info:
        parse_workflow({"name": "x", "steps": [{"id": "a", "task": "t", "agent": "pi", "dependsOn": ["b"]}]})
    assert [f.as_dict() for f in info.value.fields] == [
        {"field": "steps[0].dependsOn[0]", "message": "unknown step 'b'"}
    ]


def test_alias_bombs_and_recursive_aliases_do_not_hang() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdef", "bcdefg", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    bomb = "\n".join(lines) + "\n"
    found = problems(bomb)
    assert any("more than 100000 values" in message for _, _, _, message in found)
    found = problems("name: x\nsteps: &s [*s]\n")
    assert ("steps[0]", 2, 8, "an alias refers to itself") in found


def test_an_invalid_id_is_reported_once_not_again_where_it_is_used() -> None:
    text = (
        "name: x\ndefaults: {agent: pi}\nsteps:\n  - {id: bad-id, task: t}\n  - {id: b, task: t, dependsOn: [bad-id]}\n"
    )
    assert [(f, line, col) for f, line, col, _ in problems(text)] == [("steps[0].id", 4, 10)]
