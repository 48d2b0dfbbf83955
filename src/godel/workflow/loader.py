"""Reading a workflow file: YAML or JSON text into plain data plus a map of where every value came from.

Values are built from PyYAML's composed node tree (not ``yaml.safe_load``) so each one keeps its marks; a
``SourceMap`` answers "which line and column is ``steps[2].dependsOn[0]``?" and "which column is character
17 inside that string?" (for errors inside a ``when`` expression or a ``{{ … }}`` placeholder).

JSON is parsed by the ``json`` module (its strict grammar, its numbers, its error positions), and positions
come from composing the same text as YAML, which JSON nearly is. Tabs, which JSON allows between tokens and
YAML does not, are replaced by spaces first; a valid JSON string cannot hold a raw tab, so only whitespace
changes and every offset stays put. If the composer still disagrees, errors simply carry no position.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Literal

import yaml

from godel.workflow.hints import describe

Format = Literal["yaml", "json"]
Path = tuple[str | int, ...]

# Alias expansion can blow a small file up exponentially ("billion laughs"); a workflow never needs this many.
MAX_NODES = 100_000


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the file, before it becomes a ``FieldError``."""

    path: Path
    message: str
    line: int | None = None
    column: int | None = None


@dataclass
class _Span:
    start: int  # character offsets into the source text
    end: int
    style: str | None  # the scalar's style: None (plain), "'", '"', "|", ">"


@dataclass
class SourceMap:
    """Where each value and each mapping key of one document sits in its text (1-based line and column)."""

    text: str
    values: dict[Path, _Span] = field(default_factory=dict)
    keys: dict[Path, int] = field(default_factory=dict)
    _line_starts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._line_starts = [0] + [i + 1 for i, ch in enumerate(self.text) if ch == "\n"]

    def position(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self._line_starts, offset) - 1
        return line + 1, offset - self._line_starts[line] + 1

    def value(self, path: Path) -> tuple[int, int]:
        """The value at ``path``, or its nearest ancestor that exists (a missing key points at its mapping)."""
        for n in range(len(path), -1, -1):
            span = self.values.get(path[:n])
            if span is not None:
                return self.position(span.start)
        return 1, 1

    def key(self, path: Path) -> tuple[int, int]:
        """The key (not the value) of the mapping entry at ``path``: where an unknown key is reported."""
        offset = self.keys.get(path)
        return self.position(offset) if offset is not None else self.value(path)

    def inside(self, path: Path, value: str, index: int, needle: str = "") -> tuple[int, int]:
        """The position of character ``index`` of the string ``value`` found at ``path``.

        Exact for single-line plain and quoted scalars without escapes, JSON strings without escapes and
        literal blocks (``|``); otherwise the first occurrence of ``needle`` inside the scalar's source;
        otherwise the scalar's start.
        """
        span = self.values.get(path)
        if span is None:
            return self.value(path)
        raw = self.text[span.start : span.end]
        if "\n" not in value:
            for quote in (0, 1):
                if raw[quote : quote + len(value)] == value:
                    return self.position(span.start + quote + index)
        if span.style == "|":
            mapped = self._inside_literal(span, value, index)
            if mapped is not None:
                return mapped
        if needle and (found := raw.find(needle)) >= 0:
            return self.position(span.start + found)
        return self.position(span.start)

    def _inside_literal(self, span: _Span, value: str, index: int) -> tuple[int, int] | None:
        # A literal block keeps the source's line breaks: line k of the value is source line k after the
        # header, shifted right by the block's indentation.
        header_line, _ = self.position(span.start)
        lines = self.text.split("\n")
        body = lines[header_line:]
        indent = next((len(s) - len(s.lstrip(" ")) for s in body if s.strip()), None)
        if indent is None:
            return None
        k = value.count("\n", 0, index)
        column = index - (value.rfind("\n", 0, index) + 1)
        if k >= len(body):
            return None
        return header_line + k + 1, indent + column + 1


@dataclass
class Document:
    data: Any
    source: SourceMap | None
    problems: list[Problem]


def detect_format(filename: str, fmt: Format | None) -> Format:
    if fmt is not None:
        return fmt
    return "json" if PurePath(filename).suffix.lower() == ".json" else "yaml"


def read_document(text: str, fmt: Format) -> Document:
    """Parse ``text``; a syntax error becomes the document's only problem (nothing else can be trusted)."""
    if fmt == "json":
        return _read_json(text)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        return Document(None, None, [_syntax_problem(exc)])
    except yaml.YAMLError as exc:  # unmarked: a reader error such as a control character
        return Document(None, None, [Problem((), f"invalid YAML: {exc}", 1, 1)])
    if node is None:
        return Document(None, None, [Problem((), "the file is empty: expected a mapping with name and steps", 1, 1)])
    builder = _Builder(SourceMap(text))
    data = builder.build(node, ())
    return Document(data, builder.source, builder.problems)


def _read_json(text: str) -> Document:
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        data = json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        return Document(None, None, [Problem((), f"invalid JSON: {exc.msg}", exc.lineno, exc.colno)])
    except ValueError as exc:
        return Document(None, None, [Problem((), f"invalid JSON: {exc}", 1, 1)])
    try:
        node = yaml.compose(text.replace("\t", " "), Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return Document(data, None, [])
    if node is None:
        return Document(data, None, [])
    builder = _Builder(SourceMap(text))
    builder.build(node, ())
    # Values come from ``json`` (YAML 1.1 would read 1e5 as a string); only marks and duplicate keys from YAML.
    return Document(data, builder.source, builder.problems)


def _syntax_problem(exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    message = exc.problem or "invalid YAML"
    if exc.context:  # "while scanning a simple key", "expected a single document in the stream"
        message = f"{exc.context}, {message}"
    if mark is None:
        return Problem((), f"invalid YAML: {message}", 1, 1)
    return Problem((), f"invalid YAML: {message}", mark.line + 1, mark.column + 1)


class _Builder:
    """Turns composed nodes into plain values, recording each one's span and each key's position."""

    def __init__(self, source: SourceMap) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self._constructor = yaml.SafeLoader("")
        self._active: set[int] = set()  # nodes being built right now: an alias back to one is a loop
        self._count = 0

    def build(self, node: yaml.Node, path: Path) -> Any:
        self._count += 1
        if self._count > MAX_NODES:
            if self._count == MAX_NODES + 1:
                where = self.source.position(node.start_mark.index)
                self.problems.append(Problem(path, f"more than {MAX_NODES} values (alias expansion?)", *where))
            return None
        self.source.values[path] = _Span(node.start_mark.index, node.end_mark.index, getattr(node, "style", None))
        if id(node) in self._active:
            self.problems.append(Problem(path, "an alias refers to itself", *self.source.value(path)))
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            self._active.add(id(node))
            try:
                return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
            finally:
                self._active.discard(id(node))
        return self._constructor.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        self._active.add(id(node))
        try:
            self._constructor.flatten_mapping(node)  # resolves ``<<`` merge keys in place
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self._constructor.construct_object(key_node, deep=True)
                where = self.source.position(key_node.start_mark.index)
                if not isinstance(key, str):
                    self.problems.append(Problem(path, f"keys must be strings, not {describe(key)}", *where))
                    continue
                child = (*path, key)
                if key in out:
                    self.problems.append(Problem(child, f"duplicate key {key!r}", *where))
                    continue
                self.source.keys[child] = key_node.start_mark.index
                out[key] = self.build(value_node, child)
            return out
        finally:
            self._active.discard(id(node))
