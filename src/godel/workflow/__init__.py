"""Workflows: DAGs of agent and shell steps, defined in YAML or JSON (see docs/workflows.md).

This package is the definition layer, pure and synchronous: reading and validating a file
(``load_workflow``), the graph (order, readiness), ``when`` conditions (CEL) and ``{{ … }}`` templates.
It imports nothing from the scheduler, store, bus or runtimes, so the CLI can validate a file offline;
running workflows is the engine's job, built on top of it.
"""

from godel.workflow.conditions import Condition, compile_condition, evaluate_condition, from_cel, to_cel
from godel.workflow.context import build_context, step_view
from godel.workflow.definition import (
    Backoff,
    OnError,
    RenderedStep,
    StepDefaults,
    StepDefinition,
    WorkflowDefinition,
)
from godel.workflow.graph import Progress, StepStatus
from godel.workflow.parsing import load_workflow, load_workflow_file, parse_workflow
from godel.workflow.readers import parse_duration
from godel.workflow.templates import Template, referenced_steps, render_template

__all__ = [
    "Backoff",
    "Condition",
    "OnError",
    "Progress",
    "RenderedStep",
    "StepDefaults",
    "StepDefinition",
    "StepStatus",
    "Template",
    "WorkflowDefinition",
    "build_context",
    "compile_condition",
    "evaluate_condition",
    "from_cel",
    "load_workflow",
    "load_workflow_file",
    "parse_duration",
    "parse_workflow",
    "referenced_steps",
    "render_template",
    "step_view",
    "to_cel",
]
