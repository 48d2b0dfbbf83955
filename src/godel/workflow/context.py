"""The run's data as conditions and templates see it: one plain JSON-like mapping.

    {
      "steps":    {"plan": {"status": "completed", "output": "…", "result": {…}, "error": ""}, …},
      "vars":     {"env": "prod", …},
      "workflow": {"id": "…", "name": "…"},
    }

Every step of the workflow appears under ``steps`` with all four keys, whatever it did (a step that has not
run is ``pending`` with empty output), so ``steps.plan.output`` never fails for lack of a key; only keys
*inside* ``result`` depend on what the agent produced. The mapping is plain JSON, so the engine may store it
in ``workflows.context`` as it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from godel.workflow.definition import WorkflowDefinition
from godel.workflow.graph import StepStatus


def step_view(
    status: str = StepStatus.PENDING, output: str | None = None, *, result: Any = None, error: str | None = None
) -> dict[str, Any]:
    """One step's entry. ``result`` defaults to ``output`` parsed as JSON when that is an object or a list
    (agents that answer in JSON can be read field by field), else an empty mapping."""
    if result is None:
        result = _json_container(output) if output else None
    return {
        "status": str(StepStatus(status)),
        "output": output or "",
        "result": {} if result is None else result,
        "error": error or "",
    }


def build_context(
    definition: WorkflowDefinition,
    *,
    workflow_id: str,
    steps: Mapping[str, Mapping[str, Any]] | None = None,
    variables: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The activation for ``when`` and the data for ``{{ … }}``. ``steps`` holds the entries known so far
    (from ``step_view``); the others are filled in as pending. ``variables`` are the run's overrides."""
    known = steps or {}
    return {
        "steps": {s.id: dict(known[s.id]) if s.id in known else step_view() for s in definition.steps},
        "vars": definition.resolve_variables(variables),
        "workflow": {"id": workflow_id, "name": definition.name},
    }


def _json_container(text: str) -> Any:
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        return None
    return value if isinstance(value, dict | list) else None
