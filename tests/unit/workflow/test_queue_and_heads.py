"""Queue steps as a definition (parsing, the normalized document), and the starting point that needs no git."""

from __future__ import annotations

from pathlib import Path

import pytest

from godel.errors import WorkflowValidationError
from godel.workflow import load_workflow, parse_workflow
from godel.workflow.combining import Branch, starting_point
from godel.workflow.definition import OnTaskFailure, QueueSpec

QUEUE = """name: q
retryPolicy: {retries: 2}
steps:
  - id: work
    queue: {workers: 3, minPriority: -5, maxPriority: 50, onTaskFailure: continue}
    agent: pi
    model: anthropic/claude-sonnet-4-5
"""


def test_a_queue_step_parses_and_round_trips() -> None:
    definition = load_workflow(QUEUE)
    step = definition.step("work")
    assert step.queue == QueueSpec(workers=3, min_priority=-5, max_priority=50,
                                   on_task_failure=OnTaskFailure.CONTINUE)  # fmt: skip
    assert step.retries == 0  # the workflow's retry policy does not apply: each task has its own attempts
    document = definition.to_dict()
    assert "task" not in document["steps"][0] and "retries" not in document["steps"][0]
    assert parse_workflow(document) == definition


def test_a_queue_block_is_checked_with_every_problem_placed() -> None:
    source = "name: q\nsteps:\n  - id: w\n    command: x\n    backoff: 5s\n"
    source += "    queue: {workers: 101, maxPriority: 2000}\n"
    with pytest.raises(WorkflowValidationError) as caught:
        load_workflow(source)
    problems = {(f.field, f.line): f.message for f in caught.value.fields}
    assert problems == {
        ("steps[0].backoff", 5): "a queue step is not retried: each task has its own attempts (maxAttempts); "
        "drop backoff",
        ("steps[0].queue.workers", 6): "at most 100, not 101",
        ("steps[0].queue.maxPriority", 6): "at most 1000, not 2000",
    }


async def test_dependencies_that_ended_at_one_commit_need_no_git(tmp_path: Path) -> None:
    not_a_repo = tmp_path / "nothing-here"  # git would fail here: the answer must come from the recorded heads
    same = [Branch("a", "godel/a", "c0ffee"), Branch("b", "godel/b", "c0ffee")]
    assert await starting_point(not_a_repo, "HEAD", same, for_step="c") == "godel/a"
    assert await starting_point(not_a_repo, "HEAD", [], for_step="c") == "HEAD"
