"""Shared by the workflow tests: load text and return the problems as plain tuples."""

from __future__ import annotations

import textwrap

import pytest

from godel.errors import WorkflowValidationError
from godel.workflow import WorkflowDefinition, load_workflow
from godel.workflow.loader import Format


def load(text: str, *, fmt: Format | None = None) -> WorkflowDefinition:
    return load_workflow(textwrap.dedent(text), fmt=fmt)


def problems(text: str, *, fmt: Format | None = None) -> list[tuple[str, int | None, int | None, str]]:
    """``(field, line, column, message)`` for every problem, in the order they are reported."""
    with pytest.raises(WorkflowValidationError) as info:
        load_workflow(textwrap.dedent(text), filename="wf.yaml", fmt=fmt)
    assert info.value.code == "INVALID_WORKFLOW"
    return [(f.field, f.line, f.column, f.message) for f in info.value.fields]


def only_problem(text: str, *, fmt: Format | None = None) -> tuple[str, int | None, int | None, str]:
    found = problems(text, fmt=fmt)
    assert len(found) == 1, found
    return found[0]
