"""``when`` conditions: CEL expressions, compiled once when the workflow loads, evaluated per run.

CEL (the Common Expression Language, via ``cel-python``) is small, side-effect free and always terminates,
so a workflow file can hold conditions without ever reaching ``eval``. An expression sees three names:

    steps.<id>.status / .output / .result / .error   what earlier steps did (see ``godel.workflow.context``)
    vars.<name>                                        the workflow's variables, after run-time overrides
    workflow.id / workflow.name                        the run

Compilation also lists what an expression reads (``references``), so the validator can insist that every
``steps.<id>`` it names is a dependency of the step, that every ``vars.<name>`` is declared and that every
function exists — mistakes caught when the file is checked, not hours into a run. What is left for run
time (a ``result`` key an agent did not produce, comparing a string to a number) is a
``WorkflowConditionError`` with a plain message, never a crash.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import celpy
from celpy import celtypes
from celpy.evaluation import CELEvalError, base_functions
from lark import Token, Tree

from godel.errors import WorkflowConditionError
from godel.workflow.hints import describe

ROOTS = ("steps", "vars", "workflow")
# Macros are expanded by the evaluator, not looked up as functions.
MACROS = frozenset({"has", "all", "exists", "exists_one", "map", "filter"})
FUNCTIONS = frozenset(name for name in base_functions if name.isidentifier()) | MACROS
_BINDING_MACROS = MACROS - {"has"}  # ``list.all(x, …)``: the first argument names a bound variable

RefKind = Literal["member", "dynamic", "root", "name", "function"]


class ConditionSyntaxError(ValueError):
    """An expression CEL cannot parse; ``line``/``column`` are 1-based within the expression."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


@dataclass(frozen=True)
class Reference:
    """Something an expression reads, with its position (1-based, within the expression).

    ``member``: ``steps.plan`` / ``vars.env`` / ``workflow.id`` (root and name); ``dynamic``: ``steps[x]``
    with a non-literal index; ``root``: a root used whole (``size(steps)``); ``name``: any other bare name;
    ``function``: a function or method call.
    """

    kind: RefKind
    root: str
    name: str
    line: int
    column: int


@dataclass(frozen=True)
class Condition:
    source: str
    references: tuple[Reference, ...]
    runner: celpy.Runner = field(compare=False, repr=False)

    def evaluate(self, context: Mapping[str, Any], *, step_id: str = "?") -> bool:
        activation = {root: to_cel(context[root]) for root in ROOTS if root in context}
        try:
            result = self.runner.evaluate(activation)
        except CELEvalError as exc:
            raise WorkflowConditionError(step_id, self.source, _eval_reason(exc)) from None
        except Exception as exc:  # cel-python can surface plain Python errors from its built-ins
            raise WorkflowConditionError(step_id, self.source, f"{type(exc).__name__}: {exc}") from None
        if isinstance(result, CELEvalError):
            raise WorkflowConditionError(step_id, self.source, _eval_reason(result))
        if not isinstance(result, celtypes.BoolType):
            plain = from_cel(result)
            reason = f"it evaluated to {plain!r} ({describe(plain)}), not true or false"
            raise WorkflowConditionError(step_id, self.source, reason)
        return bool(result)


@cache
def _environment() -> celpy.Environment:
    # Building one loads the CEL grammar (~80 ms); one per process is enough, compile() keeps no state.
    return celpy.Environment()


def compile_condition(source: str) -> Condition:
    env = _environment()
    try:
        tree = env.compile(source)
    except celpy.CELParseError as exc:
        raise ConditionSyntaxError(_parse_reason(exc), exc.line or 1, exc.column or 1) from None
    return Condition(source, tuple(_References(tree).found), env.program(tree))


def evaluate_condition(step: Any, context: Mapping[str, Any]) -> bool:
    """Whether ``step`` should run: its ``when`` (``True`` when it has none) against the run's data.

    ``step`` is a ``StepDefinition`` (anything with ``id`` and a compiled ``condition``).
    """
    condition: Condition | None = step.condition
    return True if condition is None else condition.evaluate(context, step_id=step.id)


def offset_of(source: str, line: int, column: int) -> int:
    """The index into ``source`` of a 1-based line and column."""
    lines = source.split("\n")
    line = max(1, min(line, len(lines)))
    return sum(len(s) + 1 for s in lines[: line - 1]) + max(column - 1, 0)


# Python <-> CEL values


def to_cel(value: Any) -> Any:
    """A JSON-like Python value (dicts, lists, str, int, float, bool, None) as CEL values."""
    if value is None:
        return None
    if isinstance(value, bool):  # before int: bool is an int in Python
        return celtypes.BoolType(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, bytes):
        return celtypes.BytesType(value)
    if isinstance(value, Mapping):
        return celtypes.MapType({celtypes.StringType(str(k)): to_cel(v) for k, v in value.items()})
    if isinstance(value, Sequence):
        return celtypes.ListType([to_cel(v) for v in value])
    return celtypes.StringType(str(value))


def from_cel(value: Any) -> Any:
    """A CEL value as plain Python (the inverse of ``to_cel``)."""
    if value is None:
        return None
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if isinstance(value, celtypes.IntType | celtypes.UintType):
        return int(value)
    if isinstance(value, celtypes.DoubleType):
        return float(value)
    if isinstance(value, celtypes.StringType):
        return str(value)
    if isinstance(value, celtypes.BytesType):
        return bytes(value)
    if isinstance(value, celtypes.MapType):
        return {from_cel(k): from_cel(v) for k, v in value.items()}
    if isinstance(value, celtypes.ListType):
        return [from_cel(v) for v in value]
    return str(value)


# Messages


_OPERATORS = {
    "addition_add": "+",
    "addition_sub": "-",
    "multiplication_mul": "*",
    "multiplication_div": "/",
    "multiplication_mod": "%",
    "relation_lt": "<",
    "relation_le": "<=",
    "relation_gt": ">",
    "relation_ge": ">=",
    "relation_eq": "==",
    "relation_ne": "!=",
    "relation_in": "in",
    "unary_neg": "-",
    "unary_not": "!",
}


def _eval_reason(exc: CELEvalError) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    # cel-python appends the whole activation to "undeclared reference" messages: long, and may hold outputs.
    text = text.split(" (in activation", 1)[0]
    text = re.sub(r"Token\('RULE', '(\w+)'\)", lambda m: repr(_OPERATORS.get(m.group(1), m.group(1))), text)
    text = re.sub(r"<class 'celpy\.celtypes\.(\w+?)(?:Type)?'>", lambda m: m.group(1).lower(), text)
    return text


def _parse_reason(exc: celpy.CELParseError) -> str:
    cause = exc.__context__
    token = getattr(cause, "token", None)
    if token is not None:
        if token.type == "$END":
            return "the expression ends too early"
        return f"unexpected {str(token)!r}"
    char = getattr(cause, "char", None)
    if char is not None:
        if char in "\"'":
            return "unterminated string"
        return f"unexpected character {char!r}"
    return "not a valid CEL expression"


# What an expression reads


class _References:
    def __init__(self, tree: Tree[Any]) -> None:
        self.found: list[Reference] = []
        self.bound: set[str] = set()
        for node in tree.iter_subtrees_topdown():
            if node.data == "member_dot_arg" and _token(node.children[1]) in _BINDING_MACROS:
                args = node.children[2] if len(node.children) > 2 else None
                first = _single_ident(args.children[0]) if isinstance(args, Tree) and args.children else None
                if first is not None:
                    self.bound.add(first)
        self._visit(tree)

    def _visit(self, tree: Tree[Any]) -> None:
        claimed: set[int] = set()  # ``primary`` nodes already read as the start of ``steps.x``
        for node in tree.iter_subtrees_topdown():
            kind = node.data
            if kind in ("member_dot", "member_index"):
                root_tok = _root_ident(node.children[0])
                if root_tok is None or str(root_tok) not in ROOTS or str(root_tok) in self.bound:
                    continue
                claimed.add(id(_primary_of(node.children[0])))
                if kind == "member_dot":
                    name = _token(node.children[1]) or ""
                    self._add("member", str(root_tok), name, root_tok)
                else:
                    literal = _string_literal(node.children[1])
                    self._add("member" if literal is not None else "dynamic", str(root_tok), literal or "", root_tok)
            elif kind == "ident_arg":
                self._add("function", "", _token(node.children[0]) or "", node.children[0])
            elif kind == "member_dot_arg":
                self._add("function", "", _token(node.children[1]) or "", node.children[1])
            elif kind == "primary" and id(node) not in claimed and node.children:
                child = node.children[0]
                if isinstance(child, Tree) and child.data == "ident" and child.children:
                    ident = child.children[0]
                    name = str(ident)
                    if name in self.bound:
                        continue
                    self._add("root" if name in ROOTS else "name", name if name in ROOTS else "", name, ident)

    def _add(self, kind: RefKind, root: str, name: str, where: Any) -> None:
        line = getattr(where, "line", None) or 1
        column = getattr(where, "column", None) or 1
        self.found.append(Reference(kind, root, name, line, column))


def _token(node: Any) -> str | None:
    return str(node) if isinstance(node, Token) else None


def _primary_of(member: Any) -> Any:
    # member -> primary (the start of a member chain)
    if isinstance(member, Tree) and member.data == "member" and member.children:
        return member.children[0]
    return None


def _root_ident(member: Any) -> Token | None:
    """The ``steps`` in ``steps.x`` / ``steps["x"]``: the member is a bare identifier."""
    primary = _primary_of(member)
    if isinstance(primary, Tree) and primary.data == "primary" and primary.children:
        ident = primary.children[0]
        if isinstance(ident, Tree) and ident.data == "ident" and ident.children:
            token = ident.children[0]
            return token if isinstance(token, Token) else None
    return None


def _single_ident(expr: Any) -> str | None:
    tokens = list(expr.scan_values(lambda v: isinstance(v, Token))) if isinstance(expr, Tree) else []
    if len(tokens) == 1 and tokens[0].type == "IDENT":
        return str(tokens[0])
    return None


def _string_literal(expr: Any) -> str | None:
    tokens = list(expr.scan_values(lambda v: isinstance(v, Token))) if isinstance(expr, Tree) else []
    if len(tokens) != 1 or tokens[0].type != "STRING_LIT":
        return None
    text = str(tokens[0])
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" and "\\" not in text and text[:3] != text[0] * 3:
        return text[1:-1]
    return None
