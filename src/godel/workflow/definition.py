"""What a validated workflow is: frozen dataclasses, every default already applied.

A ``WorkflowDefinition`` only comes out of ``godel.workflow.parsing`` (``load_workflow`` for a file's text,
``parse_workflow`` for data such as an API body), so holding one means the file was valid: step ids are
unique, dependencies exist and form no cycle, every ``when`` compiled and every ``{{ … }}`` names something
that will exist by the time the step runs. ``to_dict`` gives the normalized document (camelCase, defaults
spelled out) that is stored in ``workflows.definition`` and parses back to an equal definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from godel.errors import FieldError, WorkflowValidationError
from godel.workflow import graph
from godel.workflow.conditions import Condition
from godel.workflow.templates import Template


class OnError(StrEnum):
    FAIL = "fail"  # the workflow fails (after the step's retries); nothing new starts
    CONTINUE = "continue"  # the failure is recorded; dependents still run and may test it in ``when``
    RETRY = "retry"  # like fail, but the step is retried (3 times unless ``retries`` says otherwise)


DEFAULT_RETRIES_ON_RETRY = 3


@dataclass(frozen=True)
class Backoff:
    """The delay before retry ``n`` (1-based): ``initial * factor ** (n - 1)``, at most ``max`` seconds."""

    initial: float = 5.0
    factor: float = 2.0
    max: float = 300.0

    def delay(self, attempt: int) -> float:
        if attempt < 1:
            return 0.0
        return float(min(self.max, self.initial * self.factor ** (attempt - 1)))

    def to_dict(self) -> dict[str, float]:
        return {"initial": self.initial, "factor": self.factor, "max": self.max}


@dataclass(frozen=True)
class StepDefaults:
    """The workflow's ``defaults:`` block, already folded into each step; kept for ``to_dict``."""

    agent: str | None = None
    model: str | None = None
    timeout: float | None = None
    repo: str | None = None
    base_ref: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"agent": self.agent, "model": self.model, "timeout": self.timeout}
        out |= {"repo": self.repo, "baseRef": self.base_ref}
        return {k: v for k, v in out.items() if v is not None}


class OnTaskFailure(StrEnum):
    FAIL = "fail"  # a queue step fails when a task it worked ended failed (dead-lettered or failed for good)
    CONTINUE = "continue"  # the step completes; its output counts the failed tasks


@dataclass(frozen=True)
class QueueSpec:
    """A queue step's ``queue:`` block: ``workers`` agents at once take the task queue's pending tasks (those
    reserved for nobody, within the priority band), highest priority first, until none is left."""

    workers: int = 1
    min_priority: int | None = None
    max_priority: int | None = None
    on_task_failure: OnTaskFailure = OnTaskFailure.FAIL

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"workers": self.workers}
        if self.min_priority is not None:
            out["minPriority"] = self.min_priority
        if self.max_priority is not None:
            out["maxPriority"] = self.max_priority
        return {**out, "onTaskFailure": self.on_task_failure.value}


@dataclass(frozen=True)
class RenderedStep:
    """A step's templated fields filled in from the run's data, ready to become an agent spawn."""

    task: str
    command: str | None
    env: dict[str, str]


@dataclass(frozen=True)
class StepDefinition:
    id: str
    name: str
    task: str  # may hold ``{{ … }}`` placeholders; see ``render``
    depends_on: tuple[str, ...] = ()
    when: str | None = None  # a CEL expression; compiled in ``condition``
    timeout: float | None = None  # seconds for one attempt
    retries: int = 0  # further attempts after a failure
    backoff: Backoff = Backoff()
    on_error: OnError = OnError.FAIL
    agent: str | None = None  # adapter short name ("pi", "claude", "command"…); None when agent_selector picks
    model: str | None = None  # "provider/model"
    role: str | None = None  # the part this step plays ("planner", "reviewer"); teams may choose by it
    agent_selector: dict[str, Any] | None = None  # how a team picks the agent at run time (passed through)
    command: str | None = None  # a shell step: run by the ``command`` agent (may hold placeholders)
    env: dict[str, str] = field(default_factory=dict)  # extra environment (values may hold placeholders)
    repo: str | None = None
    base_ref: str | None = None
    queue: QueueSpec | None = None  # a queue step: its agents work the task queue's tasks (see ``QueueSpec``)
    condition: Condition | None = field(default=None, compare=False, repr=False)
    templates: Mapping[str, Template] = field(default_factory=dict, compare=False, repr=False)

    def render(self, context: Mapping[str, Any]) -> RenderedStep:
        """Fill ``task``, ``command`` and ``env`` from ``context`` (see ``godel.workflow.context``);
        raises ``WorkflowTemplateError`` when a placeholder names data the run does not have."""

        def fill(key: str, text: str) -> str:
            template = self.templates.get(key) or Template.parse(text)
            return template.render(context, step_id=self.id)

        command = fill("command", self.command) if self.command is not None else None
        env = {name: fill(f"env.{name}", value) for name, value in self.env.items()}
        return RenderedStep(fill("task", self.task), command, env)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name, "task": self.task}
        optional = {
            "command": self.command,
            "dependsOn": list(self.depends_on) or None,
            "when": self.when,
            "agent": self.agent,
            "agentSelector": self.agent_selector,
            "model": self.model,
            "role": self.role,
            "timeout": self.timeout,
            "env": self.env or None,
            "repo": self.repo,
            "baseRef": self.base_ref,
            "queue": self.queue.to_dict() if self.queue is not None else None,
        }
        out |= {k: v for k, v in optional.items() if v is not None}
        if self.queue is not None:  # its agents' task is each task's text; each task has its own attempts
            del out["task"]
            return {**out, "onError": self.on_error.value}
        out |= {"retries": self.retries, "backoff": self.backoff.to_dict(), "onError": self.on_error.value}
        return out


@dataclass(frozen=True)
class WorkflowDefinition:
    name: str
    steps: tuple[StepDefinition, ...]
    description: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)  # defaults; a run may override declared ones
    timeout: float | None = None  # seconds for the whole run
    max_concurrency: int | None = None  # steps running at once; None: only the scheduler's limits apply
    on_error: OnError = OnError.FAIL  # the default for steps
    retries: int | None = None  # ``retryPolicy.retries``: the default for steps
    backoff: Backoff = Backoff()  # ``retryPolicy.backoff``: the default for steps
    defaults: StepDefaults = StepDefaults()

    # The graph

    def step(self, step_id: str) -> StepDefinition:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    @property
    def step_ids(self) -> list[str]:
        return [s.id for s in self.steps]

    @property
    def dependencies(self) -> dict[str, tuple[str, ...]]:
        return {s.id: s.depends_on for s in self.steps}

    def topological_order(self) -> list[str]:
        """Step ids, each after all of its dependencies; ties in file order."""
        return graph.topological_order(self.dependencies)

    def levels(self) -> list[list[str]]:
        """Waves of steps that may run side by side."""
        return graph.levels(self.dependencies)

    def dependents(self, step_id: str) -> list[str]:
        """The steps that list ``step_id`` in their ``dependsOn``."""
        return graph.dependents_map(self.dependencies)[step_id]

    def ancestors(self, step_id: str) -> set[str]:
        return graph.ancestors(self.dependencies, step_id)

    def progress(self, statuses: Mapping[str, str]) -> graph.Progress:
        """Which steps may start, which must wait or be cancelled, and the run's status (``graph.progress``)."""
        tolerant = [s.id for s in self.steps if s.on_error is OnError.CONTINUE]
        return graph.progress(
            self.dependencies, statuses, continue_on_error=tolerant, max_concurrency=self.max_concurrency
        )

    def ready_steps(self, statuses: Mapping[str, str]) -> list[str]:
        """Pending steps that may start now (their ``when`` still to be evaluated), within maxConcurrency."""
        return list(self.progress(statuses).ready)

    # Variables

    def resolve_variables(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The declared variables with a run's overrides applied; an undeclared name is an error."""
        unknown = sorted(set(overrides or {}) - set(self.variables))
        if unknown:
            declared = ", ".join(sorted(self.variables)) or "none"
            message = f"not declared by the workflow (declared: {declared})"
            fields = [FieldError(f"variables.{name}", message) for name in unknown]
            raise WorkflowValidationError(f"unknown workflow variable(s): {', '.join(unknown)}", fields)
        return {**self.variables, **(overrides or {})}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            out["description"] = self.description
        if self.variables:
            out["variables"] = dict(self.variables)
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.max_concurrency is not None:
            out["maxConcurrency"] = self.max_concurrency
        out["onError"] = self.on_error.value
        policy: dict[str, Any] = {"backoff": self.backoff.to_dict()}
        if self.retries is not None:
            policy = {"retries": self.retries, **policy}
        out["retryPolicy"] = policy
        if defaults := self.defaults.to_dict():
            out["defaults"] = defaults
        out["steps"] = [s.to_dict() for s in self.steps]
        return out
