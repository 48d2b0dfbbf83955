"""``{{ … }}`` placeholders in a step's task, command and env: a path into the run's data, never code.

A placeholder is one dotted path: ``steps.<id>.output``, ``steps.<id>.result.<key>…``, ``vars.<name>…`` or
``workflow.id``. Segments after the first two may be result keys (``-`` allowed) or list indexes
(``steps.split.result.items.0``). There are no filters, calls or defaults: anything fancier belongs in the
step itself. ``\\{{`` writes a literal ``{{``.

Rendering is strict: a path that is not in the data is a ``WorkflowTemplateError``, never an empty string.
Strings render as they are, ``null`` as nothing, everything else (numbers, booleans, lists, mappings) as JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from godel.errors import WorkflowTemplateError
from godel.workflow.hints import describe

_ROOT = r"[A-Za-z_][A-Za-z0-9_]*"
_PATH = re.compile(rf"{_ROOT}(?:\.[A-Za-z0-9_-]+)*")
OPEN, CLOSE, ESCAPED_OPEN = "{{", "}}", "\\{{"


class TemplateSyntaxError(ValueError):
    """A placeholder that does not parse; ``offset`` is its index in the template text."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


@dataclass(frozen=True)
class Placeholder:
    expression: str  # the path as written, without braces and spaces
    path: tuple[str, ...]
    offset: int  # where ``{{`` starts in the template text

    @property
    def text(self) -> str:
        return f"{{{{ {self.expression} }}}}"


@dataclass(frozen=True)
class Template:
    source: str
    parts: tuple[str | Placeholder, ...]

    @classmethod
    def parse(cls, source: str) -> Template:
        parts: list[str | Placeholder] = []
        literal: list[str] = []
        i = 0
        while True:
            start = source.find(OPEN, i)
            if start < 0:
                literal.append(source[i:])
                break
            if start > 0 and source[start - 1] == "\\":
                literal.append(source[i : start - 1] + OPEN)
                i = start + len(OPEN)
                continue
            literal.append(source[i:start])
            end = source.find(CLOSE, start + len(OPEN))
            if end < 0:
                raise TemplateSyntaxError("unclosed '{{' (write \\{{ for a literal '{{')", start)
            expression = source[start + len(OPEN) : end].strip()
            if not expression:
                raise TemplateSyntaxError("empty placeholder '{{ }}'", start)
            if _PATH.fullmatch(expression) is None:
                raise TemplateSyntaxError(
                    f"'{{{{ {expression} }}}}' is not a path such as steps.<id>.output or vars.<name> "
                    "(placeholders hold a dotted path, no code)",
                    start,
                )
            if "".join(literal):
                parts.append("".join(literal))
            literal = []
            parts.append(Placeholder(expression, tuple(expression.split(".")), start))
            i = end + len(CLOSE)
        if "".join(literal):
            parts.append("".join(literal))
        return cls(source, tuple(parts))

    @property
    def placeholders(self) -> tuple[Placeholder, ...]:
        return tuple(p for p in self.parts if isinstance(p, Placeholder))

    def render(self, context: Mapping[str, Any], *, step_id: str | None = None) -> str:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                out.append(format_value(lookup(context, part, step_id=step_id)))
        return "".join(out)


def referenced_steps(template: str | Template) -> set[str]:
    """The step ids a template reads (``{{ steps.<id>.… }}``); the validator checks they are dependencies."""
    parsed = Template.parse(template) if isinstance(template, str) else template
    return {p.path[1] for p in parsed.placeholders if p.path[0] == "steps" and len(p.path) > 1}


def render_template(template: str, context: Mapping[str, Any], *, step_id: str | None = None) -> str:
    try:
        parsed = Template.parse(template)
    except TemplateSyntaxError as exc:
        raise WorkflowTemplateError(template, exc.message, step_id=step_id) from None
    return parsed.render(context, step_id=step_id)


def lookup(context: Mapping[str, Any], placeholder: Placeholder, *, step_id: str | None = None) -> Any:
    value: Any = context
    for depth, segment in enumerate(placeholder.path):
        where = ".".join(placeholder.path[:depth]) or "the run's data"
        if isinstance(value, Mapping):
            if segment not in value:
                raise WorkflowTemplateError(placeholder.expression, f"{where} has no {segment!r}", step_id=step_id)
            value = value[segment]
        elif isinstance(value, Sequence) and not isinstance(value, str):
            if not segment.isdigit() or int(segment) >= len(value):
                reason = f"{where} is a list of {len(value)}; {segment!r} is not an index in it"
                raise WorkflowTemplateError(placeholder.expression, reason, step_id=step_id)
            value = value[int(segment)]
        else:
            reason = f"{where} is {describe(value)}, it has no {segment!r}"
            raise WorkflowTemplateError(placeholder.expression, reason, step_id=step_id)
    return value


def format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)
