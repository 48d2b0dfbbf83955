"""What a spawn asks for, and how a fork derives its request from the agent it forks.

``problems`` is the one check of a request's values that every spawn goes through (the API's, a team's, a
workflow step's, a fork's), before anything is created: finite numbers within bounds, valid environment names, and
no NUL byte in any string that reaches a process (the kernel cannot pass one; it would fail only at launch).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from godel.core.limits import ResourceLimits
from godel.core.models import Agent, CleanupPolicy
from godel.errors import FieldError, ValidationError

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TEXT_LIMIT = 100_000  # characters of a task, command or setup script: each travels as one argv string (128 KiB)
MAX_SECONDS = 365 * 86400.0
MAX_PRIORITY = 1_000_000
MAX_USD = 1e9


@dataclass
class SpawnRequest:
    task: str
    repo: str
    base_ref: str = "HEAD"
    label: str | None = None
    team_id: str | None = None
    agent: str = "command"
    command: str | None = None
    model: str = ""
    priority: int = 0
    timeout: float | None = None
    max_retries: int = 0
    cleanup: CleanupPolicy = CleanupPolicy.MANUAL
    cleanup_delay: float = 0.0
    setup: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    budget_limit: float | None = None
    snapshot_from: str | None = None  # set by fork
    prompt_context: str | None = None  # set by fork from a session point: the earlier conversation, as text
    owner: str | None = None  # the principal spawning it ("user:alice", "agent:<id>"): its scope in RBAC
    allow_subagents: bool = False  # the run's own credential may spawn agents (owned by it)
    team_limits: dict[str, Any] | None = None  # the team's resourceLimits: defaults for what config.sandbox leaves out

    def limits(self) -> tuple[ResourceLimits, dict[str, str], list[FieldError]]:
        """The resource limits asked for (``config.sandbox.limits`` over the team's ``resourceLimits``), the field
        path each came from (by limit kind, for errors), and what is wrong with them."""
        own, errors = ResourceLimits(), []
        sandbox = self.config.get("sandbox")
        if isinstance(sandbox, Mapping):  # the spec's SandboxConfig; its other keys: scheduler.isolation
            own, more = ResourceLimits.parse(sandbox.get("limits"), "config.sandbox.limits")
            errors += more
        team, more = ResourceLimits.parse(self.team_limits, "resourceLimits")
        errors += more
        sources = {kind: "resourceLimits" for kind in team.kinds()}
        sources.update({kind: "config.sandbox.limits" for kind in own.kinds()})
        return own.over(team), sources, errors

    def problems(self) -> list[FieldError]:
        """What is wrong with the request's values (empty when nothing is)."""
        out: list[FieldError] = []
        for name in ("task", "repo", "base_ref", "label", "team_id", "agent", "command", "model", "setup",
                     "prompt_context"):  # fmt: skip
            text = getattr(self, name)
            if text is not None and "\0" in text:
                out.append(FieldError(_camel(name), "must not contain a NUL byte"))
        if len(self.task) > TEXT_LIMIT:
            out.append(FieldError("task", f"at most {TEXT_LIMIT} characters"))
        for name in ("command", "setup"):
            if len(getattr(self, name) or "") > TEXT_LIMIT:
                out.append(FieldError(name, f"at most {TEXT_LIMIT} characters"))
        for key, value in self.env.items():
            if not isinstance(key, str) or not ENV_NAME.fullmatch(key):
                out.append(
                    FieldError(f"env.{key}", "a variable name: letters, digits and '_', not starting with a digit")
                )
            elif not isinstance(value, str) or "\0" in value:
                out.append(FieldError(f"env.{key}", "must be a string without NUL bytes"))
        numbers: list[tuple[str, float | None, float, float]] = [
            ("timeout", self.timeout, 0.0, MAX_SECONDS),
            ("cleanupDelay", self.cleanup_delay, 0.0, MAX_SECONDS),
            ("budgetLimit", self.budget_limit, 0.0, MAX_USD),
            ("priority", self.priority, -MAX_PRIORITY, MAX_PRIORITY),
            ("maxRetries", self.max_retries, 0, 100),
        ]
        for name, number, low, high in numbers:
            if number is None:
                continue
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
                out.append(FieldError(name, "must be a finite number"))
            elif not low <= number <= high or (name == "timeout" and number <= 0):
                out.append(FieldError(name, f"must be between {low:g} and {high:g}"))
        out += self.limits()[2]
        return out


LIMITS_KEY = "resourceLimits"  # in an agent's metadata: the limits every run of it is held to (set by Godel alone)
LIMIT_KEYS = {"memory": "memoryMb", "cpu": "cpus", "pids": "pids"}
SETTING_OF = {"memory": "agent_memory_mb", "cpu": "agent_cpus", "pids": "agent_pids"}


def effective_limits(
    req: SpawnRequest, defaults: ResourceLimits, enforced: tuple[str, ...], runtime: str
) -> ResourceLimits:
    """The limits the agent will run under: the request's, then its team's, then the server's ``defaults``. Fails
    closed: a limit the runtime cannot enforce here (``enforced``: its capabilities) refuses the spawn (400, naming
    the field or setting it came from and what is missing) instead of running the agent without it."""
    asked, sources, _ = req.limits()
    limits = asked.over(defaults)
    missing = [kind for kind in limits.kinds() if kind not in enforced]
    if not missing:
        return limits
    can = f"it enforces only {', '.join(enforced)}" if enforced else "it enforces none"
    why = f'the {runtime} runtime cannot enforce a {{}} limit here ({can}; limits need cgroups: runtime = "sandbox", '
    why += "as root or in a delegated cgroup v2 tree)"
    errors = [
        FieldError(
            f"{sources[kind]}.{LIMIT_KEYS[kind]}" if kind in sources else f"settings.{SETTING_OF[kind]}",
            why.format(kind),
        )
        for kind in missing
    ]
    raise ValidationError(f"resource limits refused: {errors[0].message}", errors)


def adapter_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """An agent's config as its CLI adapter sees it: without the spec's ``sandbox`` object, which is Godel's (its
    limits are enforced by the runtime), not an option of the CLI."""
    return {k: v for k, v in config.items() if not (k == "sandbox" and isinstance(v, Mapping))}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def fork_request(source: Agent, snapshot_id: str, overrides: dict[str, Any]) -> SpawnRequest:
    """A new agent like ``source`` (same repo, base, adapter and policies), starting from a snapshot of its
    working tree; ``overrides`` (task, label, command, agent, model, priority, timeout) win when given."""
    o = {k: v for k, v in overrides.items() if v is not None}
    config = {k: v for k, v in source.config.items() if k not in ("command", "env")}
    same_kind = o.get("agent", source.kind) == source.kind
    if not same_kind:  # options (a binary, extra args, a tool list) belong to the source's CLI, not to another
        config = {k: v for k, v in config.items() if k == "sandbox"}  # where it runs is not the CLI's: it stays
    if o.get("runtime"):  # the fork in another runtime (one the server offers: checked at its spawn), no chain
        sandbox = config.get("sandbox")
        config["sandbox"] = {**(sandbox if isinstance(sandbox, dict) else {}), "runtime": o["runtime"], "fallback": []}
    req = SpawnRequest(
        task=o.get("task", source.task),
        repo=source.repo or ".",
        base_ref=source.base_commit or source.base_ref,
        label=o.get("label", f"{source.label or source.id[:8]}-fork"),
        team_id=source.team_id,
        agent=o.get("agent", source.kind),
        command=o.get("command", source.config.get("command") if same_kind else None),
        model=o.get("model", source.model),
        priority=o.get("priority", source.priority),
        timeout=o.get("timeout", source.timeout),
        max_retries=source.max_retries,
        cleanup=source.cleanup,
        cleanup_delay=source.cleanup_delay,
        setup=source.setup,
        env=dict(source.config.get("env", {})),
        config=config,
        metadata={"forkedFrom": source.id, "snapshotId": snapshot_id},
        snapshot_from=snapshot_id,
    )
    return req
