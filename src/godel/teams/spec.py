"""What a team is asked to do: ``TeamSpec``, read from (and written back as) the ``config`` of the teams table.

The stored form is the API's camelCase JSON, so what ``GET /teams/{id}`` shows as ``config`` is what was
asked for, with the defaults filled in. ``TeamSpec.parse`` is the only reader and says everything that is
wrong with a request at once (one ``FieldError`` each); what needs the control plane (agent kinds, models,
roles, the repository) is checked by ``checks.check_spec`` before anything is created.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from godel.core.models import Team
from godel.errors import FieldError, UnknownStrategyError, ValidationError

STRATEGIES = ("parallel", "map-reduce", "pipeline", "tree", "queue")
# Which role fills each slot unless the team's ``roles`` says otherwise.
DEFAULT_SLOTS = {"coordinator": "coordinator", "worker": "worker", "reduce": "worker", "monitor": "monitor"}
SLOTS_OF = {
    "parallel": ("worker",),
    "map-reduce": ("coordinator", "worker", "reduce"),
    "pipeline": (),
    "tree": ("coordinator", "worker", "reduce"),
    "queue": ("worker",),
}
DEFAULT_AGENT = "pi"
MAX_AGENTS_LIMIT = 10_000
MAX_TASK_CHARS = 100_000


@dataclass(frozen=True)
class StageSpec:
    role: str
    task: str
    agent: str | None = None
    model: str | None = None
    command: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "task": self.task}
        for key in ("agent", "model", "command"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class TeamSpec:
    strategy: str
    repo: str
    task: str | None = None
    tasks: tuple[str, ...] = ()
    stages: tuple[StageSpec, ...] = ()
    size: int = 1
    max_agents: int = 10
    base_ref: str = "HEAD"
    agent: str = DEFAULT_AGENT
    model: str = ""
    command: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)  # adapter options for agents of the team's kind
    roles: Mapping[str, str] = field(default_factory=dict)  # slot -> role name
    profiles: Mapping[str, Any] = field(default_factory=dict)  # role name -> profile keys, this team only
    timeout: float | None = None  # the team's wall-clock limit (s), pauses included
    agent_timeout: float | None = None  # each agent attempt's limit (s)
    max_retries: int = 0  # attempts beyond the first, per agent
    max_rounds: int = 3  # reviews of one gated stage at most (rejections allowed: max_rounds - 1)
    depth: int = 2  # tree: levels below the root
    fanout: int = 2  # tree: subtasks per node at most
    reduce_task: str | None = None
    monitor: bool = False
    budget: float | None = None
    sandbox: Mapping[str, Any] = field(default_factory=dict)  # its agents' default config.sandbox (runtime, …)

    @property
    def room(self) -> int:
        """The most agents the team's size may ask for: maxAgents, less the monitor's place."""
        return self.max_agents - (1 if self.monitor else 0)

    # ------------------------------------------------------------------------------------------ reading

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> TeamSpec:
        errors: list[FieldError] = []
        strategy = raw.get("strategy")
        if strategy not in STRATEGIES:
            valid = ", ".join(STRATEGIES)
            raise UnknownStrategyError(
                f"unknown strategy {strategy!r}; valid strategies: {valid}",
                [FieldError("strategy", f"one of: {valid}")],
            )
        known = set(_FIELDS)
        for key in raw:
            if key not in known:
                errors.append(FieldError(key, "unknown field"))
        repo = _text(raw, "repo", errors, required=True)
        task = _text(raw, "task", errors)
        tasks = tuple(_texts(raw, "tasks", errors))
        stages = tuple(_stages(raw.get("stages"), errors))
        if strategy in ("parallel", "map-reduce") and not (task or tasks):
            errors.append(FieldError("task", f"a {strategy} team needs a task or a list of tasks"))
        if strategy == "tree" and not task:
            errors.append(FieldError("task", "a tree team needs the task to decompose"))
        if strategy == "pipeline" and not (stages or tasks or task):
            errors.append(FieldError("stages", "a pipeline needs stages (or tasks, or a task)"))
        if task and tasks and strategy != "map-reduce":
            errors.append(FieldError("tasks", "give a task or a list of tasks, not both"))
        if strategy == "queue" and (task or tasks):
            errors.append(FieldError("task", "a queue team takes its tasks from the task queue; give none here"))
        if stages and strategy != "pipeline":
            errors.append(FieldError("stages", "only a pipeline has stages"))
        default_size = len(tasks) if tasks and strategy == "parallel" else (4 if strategy == "map-reduce" else 1)
        # 0 only by a scale (a stored team may be at 0); a new team needs at least one (``TeamOrchestrator.create``)
        size = _int(raw, "size", errors, default=default_size, low=0, high=MAX_AGENTS_LIMIT)
        watched = 1 if raw.get("monitor") else 0  # the monitor is one of the team's agents under maxAgents
        max_agents = _int(raw, "maxAgents", errors, default=max(size + watched, 10), low=1, high=MAX_AGENTS_LIMIT)
        if size + watched > max_agents:
            where = " (one place is the monitor's)" if watched else ""
            errors.append(FieldError("size", f"above maxAgents ({max_agents}){where}"))
        retry = raw.get("retryPolicy") or {}
        if not isinstance(retry, Mapping) or set(retry) - {"maxRetries", "maxRounds"}:
            errors.append(FieldError("retryPolicy", "a mapping with maxRetries and maxRounds"))
            retry = {}
        roles = raw.get("roles") or {}
        if not isinstance(roles, Mapping) or not all(isinstance(v, str) and v for v in roles.values()):
            errors.append(FieldError("roles", "a mapping of slot to role name"))
            roles = {}
        for slot in roles:
            if slot not in DEFAULT_SLOTS:
                errors.append(FieldError(f"roles.{slot}", f"unknown slot; slots: {', '.join(DEFAULT_SLOTS)}"))
        profiles = raw.get("profiles") or {}
        if not isinstance(profiles, Mapping):
            errors.append(FieldError("profiles", "a mapping of role name to profile keys"))
            profiles = {}
        config = raw.get("config") or {}
        if not isinstance(config, Mapping):
            errors.append(FieldError("config", "a mapping of adapter options"))
            config = {}
        sandbox = raw.get("sandbox") or {}
        if not isinstance(sandbox, Mapping):
            errors.append(FieldError("sandbox", "a mapping: runtime, fallback, limits, image, egress"))
            sandbox = {}
        spec = cls(
            strategy=strategy,
            repo=repo or "",
            task=task,
            tasks=tasks,
            stages=stages,
            size=size,
            max_agents=max_agents,
            base_ref=_text(raw, "baseRef", errors) or "HEAD",
            agent=_text(raw, "agent", errors) or DEFAULT_AGENT,
            model=_text(raw, "model", errors, empty=True) or "",
            command=_text(raw, "command", errors),
            config=dict(config),
            roles=dict(roles),
            profiles=dict(profiles),
            timeout=_seconds(raw, "timeout", errors),
            agent_timeout=_seconds(raw, "agentTimeout", errors),
            max_retries=_int(retry, "maxRetries", errors, default=0, low=0, high=100, where="retryPolicy.maxRetries"),
            max_rounds=_int(retry, "maxRounds", errors, default=3, low=1, high=20, where="retryPolicy.maxRounds"),
            depth=_int(raw, "depth", errors, default=2, low=0, high=5),
            fanout=_int(raw, "fanout", errors, default=2, low=1, high=10),
            reduce_task=_text(raw, "reduceTask", errors),
            monitor=bool(raw.get("monitor", False)),
            budget=_budget(raw, errors),
            sandbox=dict(sandbox),
        )
        if errors:
            raise ValidationError(f"invalid team: {'; '.join(f'{e.field}: {e.message}' for e in errors[:5])}", errors)
        return spec

    # ------------------------------------------------------------------------------------------ writing

    def as_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "strategy": self.strategy,
            "repo": self.repo,
            "baseRef": self.base_ref,
            "task": self.task,
            "tasks": list(self.tasks),
            "stages": [s.as_dict() for s in self.pipeline_stages()] if self.strategy == "pipeline" else [],
            "size": self.size,
            "maxAgents": self.max_agents,
            "agent": self.agent,
            "model": self.model,
            "command": self.command,
            "config": dict(self.config),
            "roles": {**{s: self.role_of(s) for s in SLOTS_OF[self.strategy]}, **self.roles},
            "profiles": dict(self.profiles),
            "timeout": self.timeout,
            "agentTimeout": self.agent_timeout,
            "retryPolicy": {"maxRetries": self.max_retries, "maxRounds": self.max_rounds},
            "reduceTask": self.reduce_task,
            "monitor": self.monitor,
            "budget": self.budget,
            "sandbox": dict(self.sandbox),
        }
        if self.strategy == "tree":
            out |= {"depth": self.depth, "fanout": self.fanout}
        return out

    def with_size(self, size: int) -> TeamSpec:
        return _replace(self, size=size)

    def with_max_agents(self, max_agents: int) -> TeamSpec:
        return _replace(self, max_agents=max_agents)

    def with_budget(self, budget: float | None) -> TeamSpec:
        return _replace(self, budget=budget)

    # ------------------------------------------------------------------------------------------ asking

    def role_of(self, slot: str) -> str:
        return self.roles.get(slot) or DEFAULT_SLOTS[slot]

    def pipeline_stages(self) -> tuple[StageSpec, ...]:
        """The stages as given; or one worker stage per task; or, for one task, the work and then its review."""
        if self.stages:
            return self.stages
        if self.tasks:
            return tuple(StageSpec(role="worker", task=t) for t in self.tasks)
        task = self.task or ""
        return (
            StageSpec(role="worker", task=task),
            StageSpec(role="reviewer", task=f"Review the work done for this task: {task}"),
        )

    @property
    def scalable(self) -> bool:
        return self.strategy in ("parallel", "map-reduce")


_FIELDS = (
    "strategy", "repo", "baseRef", "task", "tasks", "stages", "size", "maxAgents", "agent", "model", "command",
    "config", "roles", "profiles", "timeout", "agentTimeout", "retryPolicy", "depth", "fanout", "reduceTask",
    "monitor", "budget", "sandbox",
)  # fmt: skip


def _replace(spec: TeamSpec, **changes: Any) -> TeamSpec:
    return replace(spec, **changes)


def _text(
    raw: Mapping[str, Any], key: str, errors: list[FieldError], *, required: bool = False, empty: bool = False
) -> str | None:
    value = raw.get(key)
    if value is None or (value == "" and empty):
        if required:
            errors.append(FieldError(key, "required"))
        return None
    if not isinstance(value, str) or (not value.strip() and not empty):
        errors.append(FieldError(key, "a non-empty string"))
        return None
    if len(value) > MAX_TASK_CHARS:
        errors.append(FieldError(key, f"at most {MAX_TASK_CHARS} characters"))
        return None
    return value


def _texts(raw: Mapping[str, Any], key: str, errors: list[FieldError]) -> list[str]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v.strip() for v in value):
        errors.append(FieldError(key, "a list of non-empty strings"))
        return []
    if len(value) > MAX_AGENTS_LIMIT:
        errors.append(FieldError(key, f"at most {MAX_AGENTS_LIMIT} items"))
        return []
    return list(value)


def _stages(value: Any, errors: list[FieldError]) -> list[StageSpec]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        errors.append(FieldError("stages", "a list of {role, task} objects"))
        return []
    out = []
    for n, raw in enumerate(value):
        where = f"stages.{n}"
        if not isinstance(raw, Mapping):
            errors.append(FieldError(where, "an object with role and task"))
            continue
        unknown = set(raw) - {"role", "task", "agent", "model", "command"}
        if unknown:
            errors.append(FieldError(where, f"unknown keys: {', '.join(sorted(map(str, unknown)))}"))
        task = raw.get("task")
        role = raw.get("role", "worker")
        if not isinstance(task, str) or not task.strip() or len(task) > MAX_TASK_CHARS:
            errors.append(FieldError(f"{where}.task", f"required: a non-empty string (at most {MAX_TASK_CHARS})"))
            continue
        if not isinstance(role, str) or not role:
            errors.append(FieldError(f"{where}.role", "a role name"))
            continue
        opt = {k: raw.get(k) for k in ("agent", "model", "command")}
        for k, v in opt.items():
            if v is not None and (not isinstance(v, str) or not v):
                errors.append(FieldError(f"{where}.{k}", "a non-empty string"))
        out.append(StageSpec(role=role, task=task, **{k: v for k, v in opt.items() if isinstance(v, str) and v}))
    return out


def _int(
    raw: Mapping[str, Any], key: str, errors: list[FieldError], *, default: int, low: int, high: int,
    where: str | None = None,
) -> int:  # fmt: skip
    value = raw.get(key)
    if value is None:
        return default
    if type(value) is not int or not low <= value <= high:
        errors.append(FieldError(where or key, f"an integer from {low} to {high}"))
        return default
    return value


def _seconds(raw: Mapping[str, Any], key: str, errors: list[FieldError]) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        errors.append(FieldError(key, "a number of seconds > 0"))
        return None
    return float(value)


def _budget(raw: Mapping[str, Any], errors: list[FieldError]) -> float | None:
    value = raw.get("budget")
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value < 1e9:
        errors.append(FieldError("budget", "USD, > 0"))
        return None
    return float(value)


def stored_config(team: Team) -> dict[str, Any]:
    """The stored config as ``TeamSpec.parse`` reads it (the keys the orchestrator added left out)."""
    return {k: v for k, v in team.config.items() if k != "baseCommit" and v is not None and v != [] and v != {}}


def first_estimate(spec: TeamSpec) -> int:
    """How many agents the team is expected to run, before it has run any (for progress)."""
    if spec.strategy == "parallel":
        return len(spec.tasks) or spec.size
    if spec.strategy == "map-reduce":
        return (len(spec.tasks) if spec.tasks else 1 + spec.size) + 1
    if spec.strategy == "pipeline":
        return len(spec.pipeline_stages())
    if spec.strategy == "queue":
        return spec.size  # one task per worker at least; each claim raises it
    return 1 + 2 * spec.fanout if spec.depth else 1
