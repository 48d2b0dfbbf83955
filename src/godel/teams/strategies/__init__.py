"""The five strategies, each an ``async (TeamRun) -> result`` that raises ``StepFailed`` when the team fails.

``parallel``: N agents on one task, or one agent per task of a list (``parallel.py``); ``map-reduce``: a split,
one worker per item, one reduce (``mapreduce.py``); ``pipeline``: stages in order, reviewer gates
(``pipeline.py``); ``tree``: recursive decomposition, results flowing up (``tree.py``); ``queue``: workers taking
tasks from the durable task queue by priority until it is empty (``queue.py``). See docs/teams.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from godel.teams.runner import TeamRun
from godel.teams.strategies import mapreduce, parallel, pipeline, queue, tree

Strategy = Callable[[TeamRun], Awaitable[Any]]

STRATEGY_RUNNERS: dict[str, Strategy] = {
    "parallel": parallel.run,
    "map-reduce": mapreduce.run,
    "pipeline": pipeline.run,
    "tree": tree.run,
    "queue": queue.run,
}

__all__ = ["STRATEGY_RUNNERS", "Strategy"]
