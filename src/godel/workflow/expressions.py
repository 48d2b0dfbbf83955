"""Checking a step's ``when`` and ``{{ … }}``: they parse, and read only what will exist when the step runs.

A step may read its (transitive) dependencies' data, declared variables and the run's id and name; each
offending token is reported at its own column inside the expression.
"""

from __future__ import annotations

from dataclasses import dataclass

from godel.workflow.conditions import (
    FUNCTIONS,
    ROOTS,
    Condition,
    ConditionSyntaxError,
    Reference,
    compile_condition,
    offset_of,
)
from godel.workflow.hints import hint
from godel.workflow.loader import Path
from godel.workflow.readers import Reader
from godel.workflow.templates import Placeholder, Template, TemplateSyntaxError

STEP_FIELDS = ("status", "output", "result", "error")
WORKFLOW_FIELDS = ("id", "name")


@dataclass
class Scope:
    """What a step's expressions may read: its ancestors' data, declared variables, the run's id and name."""

    step: str | None
    steps: set[str]
    ancestors: set[str]
    variables: set[str]

    def check_step(self, name: str) -> str | None:
        if name not in self.steps:
            return f"unknown step {name!r}{hint(name, sorted(self.steps))}"
        if name == self.step:
            return f"step {name!r} cannot read its own status or output"
        if self.step is not None and name not in self.ancestors:
            return f"step {name!r} is not a dependency of {self.step!r}: add it to dependsOn (directly or indirectly)"
        return None

    def check_variable(self, name: str) -> str | None:
        if name not in self.variables:
            declared = f"{hint(name, sorted(self.variables))}; declare it under variables"
            return f"unknown variable {name!r}{declared}"
        return None

    def check_reference(self, ref: Reference) -> str | None:
        if ref.kind == "function":
            if ref.name in FUNCTIONS:
                return None
            return f"unknown function {ref.name!r}{hint(ref.name, sorted(FUNCTIONS))}"
        if ref.kind == "name":
            return f"unknown name {ref.name!r}{hint(ref.name, ROOTS)}: conditions read steps, vars and workflow"
        if ref.kind == "dynamic":
            return f"{ref.root}[…] needs a literal name in quotes, so it can be checked before the run"
        if ref.kind == "member":
            if ref.root == "steps":
                return self.check_step(ref.name)
            if ref.root == "vars":
                return self.check_variable(ref.name)
            if ref.name not in WORKFLOW_FIELDS:
                return f"workflow has no {ref.name!r}; it has {', '.join(WORKFLOW_FIELDS)}"
        return None

    def check_placeholder(self, p: Placeholder) -> str | None:
        root, rest = p.path[0], p.path[1:]
        if root == "steps":
            if not rest:
                return "name a step and a field, e.g. {{ steps.<id>.output }}"
            problem = self.check_step(rest[0])
            if problem is not None:
                return problem
            if len(rest) < 2:
                return f"name a field of step {rest[0]!r}: {', '.join(STEP_FIELDS)}"
            if rest[1] not in STEP_FIELDS:
                return f"steps have no {rest[1]!r}{hint(rest[1], STEP_FIELDS)}; they have {', '.join(STEP_FIELDS)}"
            if rest[1] != "result" and len(rest) > 2:
                return f"steps.{rest[0]}.{rest[1]} is text; use steps.{rest[0]}.result.… to read JSON fields"
            return None
        if root == "vars":
            return "name a variable, e.g. {{ vars.<name> }}" if not rest else self.check_variable(rest[0])
        if root == "workflow":
            if len(rest) != 1 or rest[0] not in WORKFLOW_FIELDS:
                return f"use {{{{ workflow.id }}}} or {{{{ workflow.name }}}}, not {{{{ {p.expression} }}}}"
            return None
        return f"unknown name {root!r}{hint(root, ROOTS)}: placeholders start with steps., vars. or workflow."


def check_condition(reader: Reader, text: str, path: Path, scope: Scope) -> Condition | None:
    try:
        compiled = compile_condition(text)
    except ConditionSyntaxError as exc:
        index = offset_of(text, exc.line, exc.column)
        reader.error_inside(path, text, index, "", f"invalid condition: {exc.message}")
        return None
    ok = True
    for ref in compiled.references:
        message = scope.check_reference(ref)
        if message is not None:
            ok = False
            index = offset_of(text, ref.line, ref.column)
            reader.error_inside(path, text, index, ref.root or ref.name, message)
    return compiled if ok else None


def check_template(reader: Reader, text: str, path: Path, scope: Scope) -> Template | None:
    try:
        template = Template.parse(text)
    except TemplateSyntaxError as exc:
        reader.error_inside(path, text, exc.offset, "{{", f"invalid template: {exc.message}")
        return None
    ok = True
    for placeholder in template.placeholders:
        message = scope.check_placeholder(placeholder)
        if message is not None:
            ok = False
            reader.error_inside(path, text, placeholder.offset, placeholder.expression, message)
    return template if ok else None
