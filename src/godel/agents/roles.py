"""Roles: agent profiles a team's agents are spawned with.

A role names the prompt preamble put before an agent's task, the tool allowlist passed to the agent CLI (as
``config.tools``, for the CLIs whose adapter takes one: pi, claude, gemini; other CLIs get no allowlist and the
agent's ``metadata.toolsIgnored`` says so), the default agent kind and model, and the gate the team applies to
the agent's result:

- ``none``: the result is passed on as it is;
- ``verdict``: the result must end in a verdict (``parsing.parse_verdict``); a pipeline continues only on
  ``approve``;
- ``merge``: the agent merges the branches it is given into its own; the team checks that its branch contains
  every one of them (``git merge-base --is-ancestor``) and fails the step otherwise;
- ``monitor``: the agent runs beside the team (``monitor: true``), reports on its health and never blocks it.

Five roles are built in; ``[roles.NAME]`` in godel.toml (``Settings.roles``) overrides a built-in key by key
or adds a role, and a team's own ``profiles`` override those for that team only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from godel.agents import get_adapter
from godel.errors import FieldError, UnknownRoleError, ValidationError

GATES = ("none", "verdict", "merge", "monitor")
_KEYS = {"preamble", "tools", "agent", "model", "gate", "description"}


@dataclass(frozen=True)
class RoleProfile:
    name: str
    preamble: str = ""
    # A generic allowlist (None: every tool the CLI has), or one per agent kind (``tools_by_agent``).
    tools: tuple[str, ...] | None = None
    tools_by_agent: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    agent: str | None = None  # default agent kind (the team's when None)
    model: str | None = None  # default "provider/model" (the team's when None)
    gate: str = "none"
    description: str = ""

    def tools_for(self, kind: str) -> list[str] | None:
        """The allowlist for an agent of ``kind``: its own list when the role has one, else the generic one."""
        if kind in self.tools_by_agent:
            return list(self.tools_by_agent[kind])
        if self.tools_by_agent and self.tools is None:
            return None  # lists for other CLIs only: this one gets every tool it has
        return list(self.tools) if self.tools is not None else None

    def as_dict(self) -> dict[str, Any]:
        tools: Any = list(self.tools) if self.tools is not None else None
        if self.tools_by_agent:
            tools = {k: list(v) for k, v in self.tools_by_agent.items()} | ({"*": tools} if tools else {})
        return {
            "name": self.name,
            "description": self.description,
            "preamble": self.preamble,
            "tools": tools,
            "agent": self.agent,
            "model": self.model,
            "gate": self.gate,
        }


_READ_ONLY = {"pi": ("read", "grep", "find", "ls"), "claude": ("Read", "Grep", "Glob")}
_READ_AND_RUN = {"pi": ("read", "grep", "find", "ls", "bash"), "claude": ("Read", "Grep", "Glob", "Bash")}

BUILTIN_ROLES: dict[str, RoleProfile] = {
    "coordinator": RoleProfile(
        name="coordinator",
        description="splits a task into subtasks (map-reduce, tree); changes no file",
        preamble=(
            "You are the coordinator of a team of coding agents. Do not change any file. Split the task below "
            "into independent subtasks that separate agents can do at the same time, each one sentence an agent "
            "can act on alone. Answer with a JSON list of strings, one per subtask, in a ```json fenced block "
            "(or as the bare list), and nothing after it. Answer [] when the task is small enough to do in one "
            "piece."
        ),
        tools_by_agent=_READ_ONLY,
    ),
    "worker": RoleProfile(
        name="worker",
        description="does one piece of the work in its own branch",
        preamble=(
            "You are a worker in a team of coding agents; your workspace is your own git branch. Do the task "
            "below in this repository, then end with a short summary of what you changed."
        ),
    ),
    "reviewer": RoleProfile(
        name="reviewer",
        description="reviews the previous stage's work and gives a verdict (a pipeline gate)",
        preamble=(
            "You are a reviewer in a team of coding agents. Your workspace holds the work to review. Review it "
            "against the task below; do not change files. When it must change, say exactly what. End your answer "
            "with one line, exactly `VERDICT: approve` or `VERDICT: reject`."
        ),
        tools_by_agent=_READ_AND_RUN,
        gate="verdict",
    ),
    "refinery": RoleProfile(
        name="refinery",
        description="merges the branches it is given into its own and makes the result whole",
        preamble=(
            "You are the refinery of a team of coding agents. Merge every branch listed below into your current "
            "branch (`git merge --no-edit BRANCH`), resolve any conflict, make the result consistent, commit, "
            "and summarise what you merged."
        ),
        gate="merge",
    ),
    "monitor": RoleProfile(
        name="monitor",
        description="watches the team's health beside it; never blocks it",
        preamble=(
            "You are the monitor of a team of coding agents. Look at the repository and the team's task below "
            "and report risks to the team's health (conflicting work, broken builds, wasted effort). Do not "
            "change files. End with one line, exactly `HEALTH: ok` or `HEALTH: alert`."
        ),
        tools_by_agent=_READ_ONLY,
        gate="monitor",
    ),
}


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ValidationError(f"{where} must be a list of tool names", [FieldError(where, "a list of tool names")])
    return tuple(value)


def profile_from(name: str, raw: Mapping[str, Any], *, base: RoleProfile | None = None, where: str) -> RoleProfile:
    """A profile from a mapping of the keys of ``RoleProfile`` (as in godel.toml), over ``base`` when given."""
    if not isinstance(raw, Mapping):
        raise ValidationError(f"{where} must be a table of role keys", [FieldError(where, "a table")])
    unknown = set(raw) - _KEYS
    if unknown:
        raise ValidationError(
            f"{where}: unknown keys {', '.join(sorted(map(str, unknown)))}",
            [FieldError(f"{where}.{k}", f"unknown; a role has: {', '.join(sorted(_KEYS))}") for k in sorted(unknown)],
        )
    profile = base or RoleProfile(name=name)
    changes: dict[str, Any] = {"name": name}
    for key in ("preamble", "agent", "model", "description"):
        if key in raw:
            value = raw[key]
            if value is not None and not isinstance(value, str):
                raise ValidationError(f"{where}.{key} must be a string", [FieldError(f"{where}.{key}", "a string")])
            changes[key] = value if key in ("agent", "model") else (value or "")
    if "gate" in raw:
        if raw["gate"] not in GATES:
            raise ValidationError(
                f"{where}.gate must be one of {', '.join(GATES)}", [FieldError(f"{where}.gate", f"one of {GATES}")]
            )
        changes["gate"] = raw["gate"]
    if changes.get("agent"):
        get_adapter(changes["agent"])  # an unknown kind is refused here, with the valid ones
    if "tools" in raw:
        tools = raw["tools"]
        if tools is None:
            changes |= {"tools": None, "tools_by_agent": {}}
        elif isinstance(tools, Mapping):
            per = {str(k): _strings(v, f"{where}.tools.{k}") for k, v in tools.items() if k != "*"}
            generic = _strings(tools["*"], f"{where}.tools.*") if "*" in tools else None
            changes |= {"tools": generic, "tools_by_agent": per}
        else:
            changes |= {"tools": _strings(tools, f"{where}.tools"), "tools_by_agent": {}}
    return replace(profile, **changes)


def load_roles(configured: Mapping[str, Any] | None = None) -> dict[str, RoleProfile]:
    """The built-in roles with ``[roles.NAME]`` from the settings laid over them (key by key)."""
    roles = dict(BUILTIN_ROLES)
    for name, raw in (configured or {}).items():
        roles[name] = profile_from(name, raw, base=roles.get(name), where=f"roles.{name}")
    return roles


def with_overrides(roles: Mapping[str, RoleProfile], overrides: Mapping[str, Any] | None) -> dict[str, RoleProfile]:
    """A team's ``profiles`` laid over the configured roles, for that team only."""
    out = dict(roles)
    for name, raw in (overrides or {}).items():
        out[name] = profile_from(name, raw, base=out.get(name), where=f"profiles.{name}")
    return out


def role_named(roles: Mapping[str, RoleProfile], name: str, *, field: str) -> RoleProfile:
    try:
        return roles[name]
    except KeyError:
        known = ", ".join(sorted(roles))
        raise UnknownRoleError(
            f"unknown role {name!r}; known roles: {known}", [FieldError(field, f"one of: {known}")]
        ) from None


def takes_tools(kind: str) -> bool:
    """Whether the adapter of ``kind`` passes a ``tools`` allowlist to its CLI."""
    return "tools" in (getattr(get_adapter(kind), "extra_options", None) or {})
