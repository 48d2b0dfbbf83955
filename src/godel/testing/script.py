"""The script a ``ScriptedModel`` replays: a list of turns, each found by the tool results it answers.

The server is stateless on purpose: a turn is chosen from the request alone (how many tool results it
carries), never from how many requests came before. So a client's retry of the same request gets the same
turn, and several agents can share one server without stepping on each other's place in the script.

Turn ``i`` answers the requests that carry as many tool results as the turns before it made tool calls.
A turn without tool calls ends the conversation, so a turn after it could never be reached; loading such a
script fails rather than silently ignoring the turn.

A place in the script may hold *alternatives* instead of one turn: a list of turns, each with an optional
``match`` (a substring). The request's text (``request_text``: every message's content, system prompt and tool
results included) picks the first alternative whose ``match`` occurs in it; one without ``match`` is the
default and must come last. Still stateless: the same request always gets the same alternative, and agents
that ask different things (a reviewer's first and second review) get different answers from one server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_MODELS = ("scripted-model",)
DEFAULT_COMMIT_MESSAGE = "Apply the scripted change"


class ScriptError(ValueError):
    """The script is malformed: the message names the turn and what is wrong with it."""


@dataclass(frozen=True)
class ToolCall:
    name: str
    # Kept as the JSON text the wire carries, so a script can also hand in deliberately odd arguments.
    arguments: str

    def parsed_arguments(self) -> Any:
        try:
            return json.loads(self.arguments)
        except ValueError:
            return {}


@dataclass(frozen=True)
class ScriptedError:
    status: int
    message: str


@dataclass(frozen=True)
class Turn:
    """One reply. Exactly one of text, tool calls or error; ``delay`` may go with any of them."""

    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    error: ScriptedError | None = None
    delay: float = 0.0
    output_tokens: int | None = None
    match: str | None = None  # as an alternative: chosen when this substring occurs in the request's text


@dataclass(frozen=True)
class Script:
    turns: tuple[Turn, ...]
    models: tuple[str, ...] = DEFAULT_MODELS
    # Usage is counted, not measured: fixed numbers make metering tests exact across SDK versions.
    input_tokens_per_message: int = 10
    output_tokens: int = 5
    commit_message: str = DEFAULT_COMMIT_MESSAGE
    # Every place's alternatives, in order (``turns[i]`` is the first of ``choices[i]``); empty: one turn each.
    choices: tuple[tuple[Turn, ...], ...] = ()
    _keys: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.choices:
            object.__setattr__(self, "choices", tuple((turn,) for turn in self.turns))
        if len(self.choices) != len(self.turns) or any(
            not c or c[0] != t for c, t in zip(self.choices, self.turns, strict=False)
        ):
            raise ScriptError("`choices` must hold each place's alternatives, the place's turn first")
        for index, alternatives in enumerate(self.choices):
            _check_alternatives(index, alternatives)
        keys: list[int] = []
        seen = 0
        for index, turn in enumerate(self.turns):
            if keys and keys[-1] == seen:
                raise ScriptError(
                    f"turn {index} can never be reached: turn {index - 1} makes no tool calls, "
                    f"so both would answer requests carrying {seen} tool results"
                )
            keys.append(seen)
            seen += len(turn.tool_calls)
        object.__setattr__(self, "_keys", tuple(keys))

    def turn_for(self, tool_results: int) -> int | None:
        """The index of the turn that answers a request carrying ``tool_results`` results, if any."""
        try:
            return self._keys.index(tool_results)
        except ValueError:
            return None

    def needs_text(self, index: int) -> bool:
        """Whether choosing the turn at place ``index`` needs the request's text (some alternative matches)."""
        return any(turn.match is not None for turn in self.choices[index])

    def pick(self, index: int, text: str = "") -> Turn | None:
        """The alternative at place ``index`` that answers a request of this text: the first whose ``match``
        occurs in it, or the default (no ``match``); None when none does."""
        for turn in self.choices[index]:
            if turn.match is None or turn.match in text:
                return turn
        return None

    def output_tokens_for(self, turn: Turn) -> int:
        return self.output_tokens if turn.output_tokens is None else turn.output_tokens


def _check_alternatives(index: int, alternatives: tuple[Turn, ...]) -> None:
    calls = {len(turn.tool_calls) for turn in alternatives}
    if len(calls) > 1:
        raise ScriptError(
            f"turn {index}: its alternatives make different numbers of tool calls ({sorted(calls)}); they must "
            "make as many, because the next turn is found by counting tool results"
        )
    for n, turn in enumerate(alternatives[:-1]):
        if turn.match is None:
            raise ScriptError(
                f"turn {index}, alternative {n}: no `match`, so the alternatives after it could never be chosen "
                "(put the default last)"
            )


_TEXT_KEYS = ("system", "instructions", "systemInstruction", "messages", "input", "contents")


def request_text(body: Any) -> str:
    """The text an alternative's ``match`` is looked for in: every string under the request's messages and
    system prompt (``messages``, ``input``, ``contents``, ``system``, ``instructions``, ``systemInstruction``;
    tool results included, tool definitions and parameters not), joined by newlines, in request order."""
    parts: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    if isinstance(body, Mapping):
        for key in _TEXT_KEYS:
            walk(body.get(key))
    return "\n".join(parts)


def load_script(source: Script | Sequence[Any] | Mapping[str, Any] | str | Path) -> Script:
    """Build a Script from a Script, a list of turns, a mapping with ``turns``, or a YAML file's path."""
    if isinstance(source, Script):
        return source
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ScriptError(f"cannot read script {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ScriptError(f"script {path} is not valid YAML: {exc}") from exc
        return _script(data)
    return _script(source)


def _script(data: Any) -> Script:
    if isinstance(data, list | tuple):
        data = {"turns": data}
    if not isinstance(data, Mapping):
        raise ScriptError("a script is a list of turns, or a mapping with a `turns` list")
    turns = data.get("turns")
    if not isinstance(turns, list | tuple):
        raise ScriptError("the script has no `turns` list")
    unknown = set(data) - {"turns", "models", "usage", "commit_message"}
    if unknown:
        raise ScriptError(f"unknown script keys: {', '.join(sorted(map(str, unknown)))}")
    usage = data.get("usage") or {}
    models = data.get("models") or list(DEFAULT_MODELS)
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ScriptError("`models` must be a list of model ids")
    choices = tuple(_place(index, raw) for index, raw in enumerate(turns))
    return Script(
        turns=tuple(alternatives[0] for alternatives in choices),
        choices=choices,
        models=tuple(models),
        input_tokens_per_message=_int(usage, "input_tokens_per_message", 10),
        output_tokens=_int(usage, "output_tokens", 5),
        commit_message=str(data.get("commit_message") or DEFAULT_COMMIT_MESSAGE),
    )


def _place(index: int, raw: Any) -> tuple[Turn, ...]:
    """One place of the script: a turn, or a list of alternative turns."""
    if not isinstance(raw, list | tuple):
        return (_turn(f"turn {index}", raw),)
    if not raw:
        raise ScriptError(f"turn {index}: an empty list of alternatives")
    alternatives = []
    for n, alt in enumerate(raw):
        if isinstance(alt, list | tuple):
            raise ScriptError(f"turn {index}, alternative {n}: alternatives do not nest")
        alternatives.append(_turn(f"turn {index}, alternative {n}", alt))
    return tuple(alternatives)


def _turn(where: str, raw: Any) -> Turn:
    if isinstance(raw, str):
        return Turn(text=raw)
    if not isinstance(raw, Mapping):
        raise ScriptError(f"{where}: a turn is a mapping (text, tool_calls, error, delay) or a string")
    unknown = set(raw) - {"text", "tool_call", "tool_calls", "error", "delay", "output_tokens", "match"}
    if unknown:
        raise ScriptError(f"{where}: unknown keys {', '.join(sorted(map(str, unknown)))}")
    calls_raw = list(raw.get("tool_calls") or [])
    if raw.get("tool_call") is not None:
        calls_raw.insert(0, raw["tool_call"])
    calls = tuple(_tool_call(f"{where}, tool call {n}", call) for n, call in enumerate(calls_raw))
    error = _error(where, raw["error"]) if raw.get("error") is not None else None
    text = raw.get("text")
    kinds = [kind for kind, present in (("text", text is not None), ("tool_calls", calls), ("error", error)) if present]
    if len(kinds) > 1:
        raise ScriptError(f"{where}: give one of text, tool_calls or error, not {' and '.join(kinds)}")
    delay = raw.get("delay", 0)
    if not isinstance(delay, int | float) or delay < 0:
        raise ScriptError(f"{where}: `delay` must be a number of seconds >= 0")
    output_tokens = raw.get("output_tokens")
    if output_tokens is not None and (not isinstance(output_tokens, int) or output_tokens < 0):
        raise ScriptError(f"{where}: `output_tokens` must be an integer >= 0")
    match = raw.get("match")
    if match is not None and (not isinstance(match, str) or not match):
        raise ScriptError(f"{where}: `match` must be a non-empty string (a substring of the request's text)")
    # A turn that only waits still has to answer something; an empty text reply is the least surprising.
    if not kinds:
        text = ""
    return Turn(
        text=None if text is None else str(text),
        tool_calls=calls,
        error=error,
        delay=float(delay),
        output_tokens=output_tokens,
        match=match,
    )


def _tool_call(where: str, raw: Any) -> ToolCall:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        raise ScriptError(f"{where}: a tool call needs a `name` and `arguments`")
    arguments = raw.get("arguments", {})
    if isinstance(arguments, str):
        return ToolCall(raw["name"], arguments)
    if not isinstance(arguments, Mapping):
        raise ScriptError(f"{where}: `arguments` must be a mapping or a JSON string")
    return ToolCall(raw["name"], json.dumps(arguments))


def _error(where: str, raw: Any) -> ScriptedError:
    if isinstance(raw, str):
        return ScriptedError(500, raw)
    if not isinstance(raw, Mapping):
        raise ScriptError(f"{where}: `error` is a message or a mapping with `status` and `message`")
    status = raw.get("status", 500)
    if not isinstance(status, int) or not 400 <= status <= 599:
        raise ScriptError(f"{where}: error `status` must be an HTTP error status (400-599)")
    return ScriptedError(status, str(raw.get("message", "scripted error")))


def _int(mapping: Any, key: str, default: int) -> int:
    if not isinstance(mapping, Mapping):
        raise ScriptError("`usage` must be a mapping")
    value = mapping.get(key, default)
    if not isinstance(value, int) or value < 0:
        raise ScriptError(f"usage `{key}` must be an integer >= 0")
    return value
