"""From a workflow file (or plain data) to a ``WorkflowDefinition``, or one error listing every problem.

Checking runs in passes that each keep going after a problem, so a file with five mistakes reports five:

1. syntax (YAML or JSON) — the only pass that stops the rest, since nothing after it could be trusted;
2. shape: known keys only (with "did you mean"), types, ranges, durations, ids, agents, and roles when the
   caller says which exist (roles come from configuration: the server passes its own, ``workflow validate``
   the local one -- the same check either way);
3. the graph: duplicate ids, unknown and self dependencies, cycles (with their path);
4. expressions: each ``when`` compiles in CEL and each ``{{ … }}`` parses, and both read only steps that
   are (transitive) dependencies, declared variables and known functions.

Each problem carries the path of the offending field (``steps[2].dependsOn[0]``) and, from a file, its
1-based line and column — inside a ``when`` or a task, the column of the offending token itself.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

from godel.agents import adapter_names
from godel.errors import FieldError, WorkflowValidationError
from godel.workflow import graph
from godel.workflow.definition import (
    DEFAULT_RETRIES_ON_RETRY,
    Backoff,
    OnError,
    StepDefaults,
    StepDefinition,
    WorkflowDefinition,
)
from godel.workflow.expressions import Scope, check_condition, check_template
from godel.workflow.hints import describe, hint
from godel.workflow.loader import Format, Path, Problem, SourceMap, detect_format, read_document
from godel.workflow.queueing import read_queue
from godel.workflow.readers import MISSING, Reader, field_name
from godel.workflow.templates import Template

WORKFLOW_KEYS = (
    "name",
    "description",
    "variables",
    "defaults",
    "steps",
    "timeout",
    "maxConcurrency",
    "onError",
    "retryPolicy",
)
STEP_KEYS = (
    "id",
    "name",
    "task",
    "command",
    "dependsOn",
    "when",
    "agent",
    "agentSelector",
    "model",
    "role",
    "timeout",
    "retries",
    "backoff",
    "onError",
    "env",
    "repo",
    "baseRef",
    "queue",
)
DEFAULTS_KEYS = ("agent", "model", "timeout", "repo", "baseRef")
RETRY_POLICY_KEYS = ("retries", "backoff")
BACKOFF_KEYS = ("initial", "factor", "max")
ON_ERROR = tuple(e.value for e in OnError)

# Ids and variable names are read as ``steps.<id>`` / ``vars.<name>`` in CEL, where ``-`` means minus.
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# CEL's keywords and reserved words: a step named ``in`` could not be written ``steps.in``.
RESERVED = frozenset(
    "true false null in as break const continue else for function if import let loop package namespace "
    "return var void while".split()
)
MAX_ID = 100  # workflow_steps.step_id
MAX_NAME = 255  # workflows.name, workflow_steps.name


# Entry points


def load_workflow(
    text: str, *, filename: str = "<workflow>", fmt: Format | None = None, roles: Collection[str] | None = None
) -> WorkflowDefinition:
    """Parse and validate a workflow file's text (YAML, or JSON when ``fmt`` or a ``.json`` name says so).

    Raises ``WorkflowValidationError`` whose ``fields`` list every problem, each with line and column.
    ``roles``: the role names a step may use (None: any, left for the server to check).
    """
    document = read_document(text, detect_format(filename, fmt))
    if document.problems and document.data is None:
        raise _invalid(filename, document.problems)
    return _Checker(document.source, list(document.problems), roles).workflow(document.data, filename)


def load_workflow_file(
    path: str | FilePath, *, fmt: Format | None = None, roles: Collection[str] | None = None
) -> WorkflowDefinition:
    """``load_workflow`` for a file on disk; a file that is not UTF-8 text is reported as invalid."""
    raw = FilePath(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _invalid(str(path), [Problem((), f"not UTF-8 text (byte {exc.start})", 1, 1)]) from None
    return load_workflow(text, filename=str(path), fmt=fmt, roles=roles)


def parse_workflow(
    data: Any, *, filename: str = "<workflow>", roles: Collection[str] | None = None
) -> WorkflowDefinition:
    """Validate already-parsed data (an API body, a stored definition); problems carry no positions."""
    return _Checker(None, [], roles).workflow(data, filename)


def _invalid(filename: str, problems: Sequence[Problem]) -> WorkflowValidationError:
    ordered = sorted(
        enumerate(problems), key=lambda p: (p[1].line or 0, p[1].column or 0, p[0])
    )  # by position, ties in discovery order
    fields = [FieldError(field_name(p.path), p.message, p.line, p.column) for _, p in ordered]
    count = f"{len(fields)} problem" + ("" if len(fields) == 1 else "s")
    return WorkflowValidationError(f"invalid workflow {filename}: {count}", fields)


# The checker


@dataclass
class _Draft:
    """A step as read, before the graph and expression passes."""

    index: int
    id: str | None
    values: dict[str, Any] = field(default_factory=dict)
    depends_on: list[tuple[str, int]] = field(default_factory=list)  # (id, index in dependsOn)


class _Checker(Reader):
    def __init__(self, source: SourceMap | None, problems: list[Problem], roles: Collection[str] | None) -> None:
        super().__init__(source, problems)
        self.agents = adapter_names()
        self.roles = sorted(roles) if roles is not None else None

    def agent(self, m: Mapping[str, Any], path: Path) -> str | None:
        name = self.text(m, "agent", path)
        if name is not None and name not in self.agents:
            known = ", ".join(self.agents)
            self.error((*path, "agent"), f"unknown agent {name!r}{hint(name, self.agents)}; one of: {known}")
            return None
        return name

    def role(self, m: Mapping[str, Any], path: Path) -> str | None:
        name = self.text(m, "role", path)
        if name is not None and self.roles is not None and name not in self.roles:
            known = ", ".join(self.roles)
            self.error((*path, "role"), f"unknown role {name!r}{hint(name, self.roles)}; one of: {known}")
        return name

    def backoff(self, value: Any, path: Path, default: Backoff) -> Backoff | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):  # a bare duration: a fixed delay
            seconds = self.duration({"backoff": value}, "backoff", path[:-1], positive=False)
            return None if seconds is None else Backoff(seconds, 1.0, seconds)
        m = self.mapping(value, path, BACKOFF_KEYS, "backoff")
        if m is None:
            return None
        initial = self.duration(m, "initial", path, positive=False)
        factor = self.number(m, "factor", path, minimum=1)
        cap = self.duration(m, "max", path, positive=False)
        result = Backoff(
            default.initial if initial is None else initial,
            default.factor if factor is None else factor,
            default.max if cap is None else cap,
        )
        if result.max < result.initial:
            self.error((*path, "max" if "max" in m else "initial"), "max must not be less than initial")
        return result

    # The document

    def workflow(self, data: Any, filename: str) -> WorkflowDefinition:
        root = self.mapping(data, (), WORKFLOW_KEYS, "a workflow")
        if root is None:
            raise _invalid(filename, self.problems)
        name = self.text(root, "name", (), required=True, max_len=MAX_NAME)
        description = root.get("description")
        if description is not None and not isinstance(description, str):
            self.error(("description",), f"must be a string, not {describe(description)}")
            description = None
        variables = self.variables(root.get("variables"))
        timeout = self.duration(root, "timeout", ())
        max_concurrency = self.integer(root, "maxConcurrency", (), minimum=1)
        on_error = OnError(self.choice(root, "onError", (), ON_ERROR) or OnError.FAIL)
        retries, backoff = self.retry_policy(root.get("retryPolicy"))
        defaults = self.defaults(root.get("defaults"))
        drafts = self.steps(root.get("steps", MISSING), defaults, on_error, retries, backoff)
        deps = self.check_graph(drafts)
        steps = [self.finish_step(d, deps, variables) for d in drafts]
        if self.problems:
            raise _invalid(filename, self.problems)
        assert name is not None  # a missing name is a problem, and problems raised above
        return WorkflowDefinition(
            name=name,
            steps=tuple(s for s in steps if s is not None),
            description=description,
            variables=variables,
            timeout=timeout,
            max_concurrency=max_concurrency,
            on_error=on_error,
            retries=retries,
            backoff=backoff,
            defaults=defaults,
        )

    def variables(self, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        m = self.mapping_any(value, ("variables",), "variables")
        if m is None:
            return {}
        out: dict[str, Any] = {}
        for key, item in m.items():
            path = ("variables", key)
            if not IDENTIFIER.fullmatch(key) or key in RESERVED:
                why = "a CEL word" if key in RESERVED else "letters, digits and _ only, not starting with a digit"
                self.error(path, f"variable name {key!r} must be usable as vars.<name> in conditions: {why}", key=True)
            elif self.json_like(item, path, "a variable's value"):
                out[key] = item
        return out

    def retry_policy(self, value: Any) -> tuple[int | None, Backoff]:
        if value is None:
            return None, Backoff()
        m = self.mapping(value, ("retryPolicy",), RETRY_POLICY_KEYS, "retryPolicy")
        if m is None:
            return None, Backoff()
        retries = self.integer(m, "retries", ("retryPolicy",), minimum=0)
        backoff = self.backoff(m.get("backoff"), ("retryPolicy", "backoff"), Backoff())
        return retries, backoff or Backoff()

    def defaults(self, value: Any) -> StepDefaults:
        if value is None:
            return StepDefaults()
        m = self.mapping(value, ("defaults",), DEFAULTS_KEYS, "defaults")
        if m is None:
            return StepDefaults()
        path = ("defaults",)
        return StepDefaults(
            agent=self.agent(m, path),
            model=self.text(m, "model", path),
            timeout=self.duration(m, "timeout", path),
            repo=self.text(m, "repo", path),
            base_ref=self.text(m, "baseRef", path),
        )

    # Steps, pass 2: shape

    def steps(
        self, value: Any, defaults: StepDefaults, on_error: OnError, retries: int | None, backoff: Backoff
    ) -> list[_Draft]:
        if value is MISSING:
            self.error(("steps",), "missing required key 'steps'")
            return []
        if not isinstance(value, list):
            self.error(("steps",), f"must be a list of steps, not {describe(value)}")
            return []
        if not value:
            self.error(("steps",), "a workflow needs at least one step")
            return []
        drafts = []
        for index, raw in enumerate(value):
            draft = self.step(raw, index, defaults, on_error, retries, backoff)
            if draft is not None:
                drafts.append(draft)
        return drafts

    def step(
        self,
        raw: Any,
        index: int,
        defaults: StepDefaults,
        wf_on_error: OnError,
        wf_retries: int | None,
        wf_backoff: Backoff,
    ) -> _Draft | None:
        path: Path = ("steps", index)
        m = self.mapping(raw, path, STEP_KEYS, "a step")
        if m is None:
            return None
        step_id = self.text(m, "id", path, required=True, max_len=MAX_ID)
        if step_id is not None and (not IDENTIFIER.fullmatch(step_id) or step_id in RESERVED):
            why = "a CEL word" if step_id in RESERVED else "letters, digits and _ only, not starting with a digit"
            # Kept as it is (the file is invalid anyway), so steps naming it get no second, misleading error.
            self.error((*path, "id"), f"step id {step_id!r} must be usable as steps.<id> in conditions: {why}")
        draft = _Draft(index, step_id)
        v = draft.values
        command = self.text(m, "command", path)
        task = self.text(m, "task", path)
        v["queue"] = queue = read_queue(self, m, path)
        if "task" not in m and "command" not in m and "queue" not in m:
            self.error((*path, "task"), "missing required key 'task' (or 'command' for a shell step)")
        v["name"] = self.text(m, "name", path, max_len=MAX_NAME)
        v["task"] = task if task is not None else (command or "")
        v["task_given"] = task is not None
        v["command"] = command
        v["when"] = self.when(m, path)
        agent = self.agent(m, path)
        selector = None
        if "agentSelector" in m:
            selector = self.mapping_any(m["agentSelector"], (*path, "agentSelector"), "agentSelector")
            if selector is not None and not self.json_like(dict(selector), (*path, "agentSelector"), "agentSelector"):
                selector = None
            if "agent" in m:
                self.error((*path, "agentSelector"), "give agent or agentSelector, not both", key=True)
        if command is not None and agent not in (None, "command"):
            message = f"a command step runs the 'command' agent, not {agent!r}: drop agent or command"
            self.error((*path, "command"), message)
        if "command" in m:
            agent = "command"
        elif agent is None and selector is None:
            agent = defaults.agent
            if agent is None and "agent" not in m:
                message = "no agent: set agent (e.g. pi) on the step or under defaults, or give a command"
                self.error((*path, "agent"), message)
        v["agent"], v["agent_selector"] = agent, dict(selector) if selector is not None else None
        v["model"] = self.text(m, "model", path) or defaults.model
        v["role"] = self.role(m, path)
        v["repo"] = self.text(m, "repo", path) or defaults.repo
        v["base_ref"] = self.text(m, "baseRef", path) or defaults.base_ref
        v["timeout"] = self.duration(m, "timeout", path) if "timeout" in m else defaults.timeout
        on_error = OnError(self.choice(m, "onError", path, ON_ERROR) or wf_on_error)
        retries = self.integer(m, "retries", path, minimum=0)
        if retries is None:
            retries = wf_retries if wf_retries is not None else 0
            if on_error is OnError.RETRY and wf_retries is None:
                retries = DEFAULT_RETRIES_ON_RETRY
        if queue is not None or "queue" in m:
            retries = 0  # each task has its own attempts
        v["on_error"], v["retries"] = on_error, retries
        v["backoff"] = self.backoff(m.get("backoff"), (*path, "backoff"), wf_backoff) or wf_backoff
        v["env"] = self.env(m.get("env"), (*path, "env"))
        draft.depends_on = self.depends_on(m.get("dependsOn"), (*path, "dependsOn"))
        return draft

    def when(self, m: Mapping[str, Any], path: Path) -> str | None:
        value = m.get("when")
        if value is None:
            return None
        if isinstance(value, bool):  # ``when: false`` switches a step off without quoting
            return "true" if value else "false"
        if not isinstance(value, str) or not value.strip():
            self.error((*path, "when"), f"must be a CEL expression (a string), not {describe(value)}")
            return None
        return value

    def env(self, value: Any, path: Path) -> dict[str, str]:
        if value is None:
            return {}
        m = self.mapping_any(value, path, "env")
        if m is None:
            return {}
        out: dict[str, str] = {}
        for name, item in m.items():
            if not ENV_NAME.fullmatch(name):
                self.error((*path, name), f"{name!r} is not an environment variable name", key=True)
            elif isinstance(item, bool):
                out[name] = "true" if item else "false"
            elif isinstance(item, str | int | float):
                out[name] = str(item)
            else:
                self.error((*path, name), f"must be a string, not {describe(item)}")
        return out

    def depends_on(self, value: Any, path: Path) -> list[tuple[str, int]]:
        if value is None:
            return []
        items = [value] if isinstance(value, str) else value  # ``dependsOn: plan`` for a single step
        if not isinstance(items, list):
            self.error(path, f"must be a list of step ids, not {describe(value)}")
            return []
        out: list[tuple[str, int]] = []
        seen: set[str] = set()
        for j, item in enumerate(items):
            where = path if isinstance(value, str) else (*path, j)
            if not isinstance(item, str) or not item:
                self.error(where, f"must be a step id, not {describe(item)}")
            elif item in seen:
                self.error(where, f"{item!r} is listed twice")
            else:
                seen.add(item)
                out.append((item, j))
        return out

    # Steps, pass 3: the graph

    def check_graph(self, drafts: list[_Draft]) -> dict[str, list[str]]:
        first: dict[str, _Draft] = {}
        for d in drafts:
            if d.id is None:
                continue
            if d.id in first:
                earlier = self._line_of(("steps", first[d.id].index))
                self.error(("steps", d.index, "id"), f"duplicate step id {d.id!r}{earlier}")
            else:
                first[d.id] = d
        ids = list(first)
        deps: dict[str, list[str]] = {i: [] for i in ids}
        for d in drafts:
            for dep, j in d.depends_on:
                where: Path = ("steps", d.index, "dependsOn", j)
                if d.id is not None and dep == d.id:
                    self.error(where, f"step {d.id!r} depends on itself")
                elif dep not in first:
                    self.error(where, f"unknown step {dep!r}{hint(dep, ids)}")
                elif d.id is not None and first.get(d.id) is d:
                    deps[d.id].append(dep)
        for cycle in graph.find_cycles(deps):
            head, nxt = cycle[0], cycle[1 % len(cycle)]
            j = next(j for dep, j in first[head].depends_on if dep == nxt)
            arrow = " → ".join([*cycle, cycle[0]])
            message = f"dependency cycle: {arrow} (each depends on the next)"
            self.error(("steps", first[head].index, "dependsOn", j), message)
        return deps

    def _line_of(self, path: Path) -> str:
        if self.source is None:
            return ""
        line, _ = self.source.value(path)
        return f" (first defined on line {line})"

    # Steps, pass 4: expressions, then the finished step

    def finish_step(self, d: _Draft, deps: dict[str, list[str]], variables: Mapping[str, Any]) -> StepDefinition | None:
        path: Path = ("steps", d.index)
        v = d.values
        before = graph.ancestors(deps, d.id) if d.id in deps else set()
        scope = Scope(d.id, set(deps), before, set(variables))
        condition = None
        if v["when"] is not None:
            condition = check_condition(self, v["when"], (*path, "when"), scope)
        templates: dict[str, Template] = {}
        sources = [("task", v["task"], (*path, "task"))] if v["task_given"] else []
        if v["command"] is not None:
            sources.append(("command", v["command"], (*path, "command")))
        sources += [(f"env.{k}", text, (*path, "env", k)) for k, text in v["env"].items()]
        for key, text, where in sources:
            template = check_template(self, text, where, scope)
            if template is not None:
                templates[key] = template
        if not v["task_given"] and "command" in templates:
            templates["task"] = templates["command"]  # a shell step's task defaults to its command
        if d.id is None:
            return None
        return StepDefinition(
            id=d.id,
            name=v["name"] or d.id,
            task=v["task"],
            depends_on=tuple(dep for dep, _ in d.depends_on),
            when=v["when"],
            timeout=v["timeout"],
            retries=v["retries"],
            backoff=v["backoff"],
            on_error=v["on_error"],
            agent=v["agent"],
            model=v["model"],
            role=v["role"],
            agent_selector=v["agent_selector"],
            command=v["command"],
            env=v["env"],
            repo=v["repo"],
            base_ref=v["base_ref"],
            queue=v["queue"],
            condition=condition,
            templates=templates,
        )
