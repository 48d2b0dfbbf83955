"""Valid workflows: the spec's shape, YAML and JSON, defaults, durations, and the stored form."""

from __future__ import annotations

import json
import textwrap

import pytest

from godel.workflow import Backoff, OnError, load_workflow, parse_duration, parse_workflow

from .helpers import load

# The spec's §4.1 WorkflowDefinition / StepDefinition, written out as a file: every field it names.
SPEC_EXAMPLE = """
name: release
description: Build, test and ship a release.
timeout: 2h
maxConcurrency: 3
onError: fail
retryPolicy:
  retries: 2
  backoff: {initial: 10s, factor: 2, max: 5m}
steps:
  - id: build
    name: Build
    task: Build the project and report the artifacts as JSON.
    agent: pi
    timeout: 30m
  - id: test
    name: Test
    task: Run the test suite against {{ steps.build.output }}
    dependsOn: [build]
    agent: claude
    retries: 3
  - id: docs
    name: Docs
    task: Update the changelog.
    dependsOn: [build]
    agentSelector: {role: writer, labels: {team: docs}}
  - id: deploy
    name: Deploy
    task: Deploy the build.
    dependsOn: [test, docs]
    when: steps.test.status == "completed"
    agent: command
    model: none
    onError: retry
"""


def test_the_spec_example_parses_with_every_field() -> None:
    wf = load(SPEC_EXAMPLE)
    assert wf.name == "release"
    assert wf.description == "Build, test and ship a release."
    assert wf.timeout == 7200.0
    assert wf.max_concurrency == 3
    assert wf.on_error is OnError.FAIL
    assert wf.backoff == Backoff(10.0, 2.0, 300.0)
    assert wf.step_ids == ["build", "test", "docs", "deploy"]
    build, test, docs, deploy = wf.steps
    assert (build.name, build.agent, build.timeout, build.retries) == ("Build", "pi", 1800.0, 2)
    assert (test.depends_on, test.agent, test.retries) == (("build",), "claude", 3)
    assert docs.agent is None and docs.agent_selector == {"role": "writer", "labels": {"team": "docs"}}
    assert deploy.when == 'steps.test.status == "completed"' and deploy.condition is not None
    assert deploy.on_error is OnError.RETRY and deploy.retries == 2  # retryPolicy.retries wins over the default 3
    assert wf.topological_order() == ["build", "test", "docs", "deploy"]
    assert wf.levels() == [["build"], ["test", "docs"], ["deploy"]]


def test_the_same_workflow_as_json_gives_an_equal_definition() -> None:
    import yaml

    data = yaml.safe_load(SPEC_EXAMPLE)
    as_json = json.dumps(data, indent=2)
    assert load_workflow(as_json, filename="release.json") == load(SPEC_EXAMPLE)
    assert load_workflow(as_json, fmt="json") == load(SPEC_EXAMPLE)


def test_json_with_tabs_and_numbers_yaml_would_misread() -> None:
    text = (
        '{\n\t"name": "j",\n\t"timeout": 1e3,\n\t"steps": [{"id": "a", "task": "t", "agent": "pi", "retries": 2.0}]\n}'
    )
    wf = load_workflow(text, fmt="json")
    assert wf.timeout == 1000.0 and wf.steps[0].retries == 2


def test_defaults_and_step_values() -> None:
    wf = load(
        """
        name: d
        defaults: {agent: pi, model: openai/gpt-5, timeout: 90, repo: /src/app, baseRef: main}
        steps:
          - id: a
            task: t
          - id: b
            task: t
            agent: claude
            model: anthropic/claude-sonnet-4-5
            timeout: 1h30m
            repo: /src/other
            baseRef: dev
            role: reviewer
          - id: sh
            command: make test
            env: {CI: true, JOBS: 4, NAME: x}
        """
    )
    a, b, sh = wf.steps
    assert (a.agent, a.model, a.timeout, a.repo, a.base_ref, a.name) == (
        "pi",
        "openai/gpt-5",
        90.0,
        "/src/app",
        "main",
        "a",
    )
    assert (b.agent, b.model, b.timeout, b.repo, b.base_ref, b.role) == (
        "claude",
        "anthropic/claude-sonnet-4-5",
        5400.0,
        "/src/other",
        "dev",
        "reviewer",
    )
    # A command step runs the command agent whatever the default is; its task defaults to the command.
    assert (sh.agent, sh.command, sh.task) == ("command", "make test", "make test")
    assert sh.env == {"CI": "true", "JOBS": "4", "NAME": "x"}
    assert (a.on_error, a.retries, a.backoff) == (OnError.FAIL, 0, Backoff())


def test_retry_defaults() -> None:
    wf = load(
        """
        name: r
        defaults: {agent: pi}
        steps:
          - {id: plain, task: t}
          - {id: retry, task: t, onError: retry}
          - {id: counted, task: t, onError: retry, retries: 1, backoff: 30s}
          - {id: tolerant, task: t, onError: continue, retries: 2, backoff: {factor: 3}}
        """
    )
    plain, retry, counted, tolerant = wf.steps
    assert (plain.retries, retry.retries, counted.retries, tolerant.retries) == (0, 3, 1, 2)
    assert counted.backoff == Backoff(30.0, 1.0, 30.0)
    assert tolerant.backoff == Backoff(5.0, 3.0, 300.0)
    assert [tolerant.backoff.delay(n) for n in (0, 1, 2, 3, 10)] == [0.0, 5.0, 15.0, 45.0, 300.0]


def test_dependson_may_be_a_single_id_and_when_may_be_a_boolean() -> None:
    wf = load(
        """
        name: s
        defaults: {agent: pi}
        steps:
          - {id: a, task: t}
          - {id: b, task: t, dependsOn: a, when: false}
        """
    )
    assert wf.step("b").depends_on == ("a",)
    assert wf.step("b").when == "false"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30.0),
        (2.5, 2.5),
        ("45", 45.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("2d", 172800.0),
        (" 10 s ", 10.0),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "5x", "m5", "1h 30", "-5s", "nan", "inf", "1e3", float("inf"), True, None, [1]])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_to_dict_is_the_normalized_document_and_parses_back_equal() -> None:
    wf = load(SPEC_EXAMPLE)
    stored = wf.to_dict()
    assert stored["steps"][1]["dependsOn"] == ["build"] and stored["maxConcurrency"] == 3
    assert json.loads(json.dumps(stored)) == stored  # plain JSON, fit for workflows.definition
    again = parse_workflow(stored)
    assert again == wf
    assert again.to_dict() == stored


def test_yaml_anchors_and_merge_keys_work() -> None:
    text = textwrap.dedent(
        """
        name: anchors
        defaults: &d {agent: pi, timeout: 10m}
        steps:
          - {<<: *d, id: a, task: t}
        """
    )
    assert load_workflow(text).step("a").timeout == 600.0
