"""Reading a queue step's ``queue:`` block (docs/workflows.md, "Queue steps").

A queue step has no ``task`` of its own: its agents each take one task of the durable task queue
(docs/tasks.md), and the task's title and description are what that agent is asked to do. It is not retried
either: every task has its own attempts (``maxAttempts``) and dead-letter list. So ``task``, ``retries`` and
``backoff`` on a queue step are problems, reported with the rest by ``workflow validate`` and ``workflow run``
alike (both run this checker).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from godel.workflow.definition import OnTaskFailure, QueueSpec
from godel.workflow.loader import Path
from godel.workflow.readers import Reader

QUEUE_KEYS = ("workers", "minPriority", "maxPriority", "onTaskFailure")
MAX_WORKERS = 100
PRIORITY_RANGE = (-1000, 1000)  # the task queue's own (godel.tasks.queue)
NOT_ON_A_QUEUE_STEP = {
    "task": "a queue step's agents are each given their task's title and description; drop task",
    "retries": "a queue step is not retried: each task has its own attempts (maxAttempts); drop retries",
    "backoff": "a queue step is not retried: each task has its own attempts (maxAttempts); drop backoff",
}


def read_queue(reader: Reader, step: Mapping[str, Any], path: Path) -> QueueSpec | None:
    """The step's ``queue:`` block (None when the step has none, or when it is wrong: reported)."""
    if "queue" not in step:
        return None
    where: Path = (*path, "queue")
    m = reader.mapping(step["queue"], where, QUEUE_KEYS, "queue")
    for key, message in NOT_ON_A_QUEUE_STEP.items():
        if key in step:
            reader.error((*path, key), message, key=True)
    if m is None:
        return None
    workers = reader.integer(m, "workers", where, minimum=1)
    if workers is not None and workers > MAX_WORKERS:
        reader.error((*where, "workers"), f"at most {MAX_WORKERS}, not {workers}")
    low, high = (_priority(reader, m, key, where) for key in ("minPriority", "maxPriority"))
    if low is not None and high is not None and low > high:
        reader.error((*where, "maxPriority"), f"must not be less than minPriority ({low})")
    policy = reader.choice(m, "onTaskFailure", where, tuple(p.value for p in OnTaskFailure))
    return QueueSpec(
        workers=workers or 1,
        min_priority=low,
        max_priority=high,
        on_task_failure=OnTaskFailure(policy or OnTaskFailure.FAIL),
    )


def _priority(reader: Reader, m: Mapping[str, Any], key: str, where: Path) -> int | None:
    value = reader.integer(m, key, where, minimum=PRIORITY_RANGE[0])
    if value is not None and value > PRIORITY_RANGE[1]:
        reader.error((*where, key), f"at most {PRIORITY_RANGE[1]}, not {value}")
        return None
    return value
