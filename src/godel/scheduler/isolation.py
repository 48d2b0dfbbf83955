"""Which runtime an agent runs in, and where it goes when that runtime cannot start it.

A spawn may name its runtime and a fallback chain in ``config.sandbox`` (the spec's ``AgentConfig.sandbox``):
``{"runtime": "e2b", "fallback": ["container", "sandbox"]}``. What it leaves out comes from its team's
``config.sandbox``, then from the server (``runtime``, ``runtime_fallback``). The chain is resolved once, at spawn,
and written back into the agent's ``config.sandbox``, so that the agent shows what applies to it and a later change
of the server's settings does not move it. Every runtime of a chain must be one the server offers (``Runtimes``).

A launch whose runtime fails to make the workspace or to start the process because the runtime itself cannot serve
(``RuntimeFailure`` other than a git error: a tool missing, a remote refusing) moves to the next runtime of the
chain, recorded as an ``agent:runtime:fallback`` event; a git error or a bad request fails the spawn as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from godel.core.models import Agent
from godel.errors import FieldError, GitError, GodelError, PermissionDeniedError, RuntimeFailure, ValidationError
from godel.runtimes import strength_of
from godel.runtimes.routing import Runtimes
from godel.scheduler.egress import parse_rules

SANDBOX = "sandbox"  # the key of config (agent or team) that holds the runtime choice
# The keys of ``config.sandbox``; the ones besides runtime and fallback are read by the runtimes that use them.
SANDBOX_KEYS = ("runtime", "fallback", "limits", "image", "egress")
MAX_FALLBACKS = 5


def _section(config: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    value = (config or {}).get(SANDBOX)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(f"{where}.sandbox must be an object", [FieldError(f"{where}.sandbox", "an object")])
    unknown = [key for key in value if key not in SANDBOX_KEYS]
    if unknown:
        raise ValidationError(
            f"unknown key {unknown[0]!r} in {where}.sandbox",
            [FieldError(f"{where}.sandbox.{unknown[0]}", f"unknown; known: {', '.join(SANDBOX_KEYS)}")],
        )
    return value


def _names(section: dict[str, Any], where: str, runtimes: Runtimes) -> tuple[str | None, list[str] | None]:
    runtime = section.get("runtime")
    if runtime is not None:
        if not isinstance(runtime, str):
            raise ValidationError(f"{where}.runtime must be a string", [FieldError(f"{where}.runtime", "a name")])
        runtimes.check(runtime, f"{where}.runtime")
    fallback = section.get("fallback")
    if fallback is not None:
        if not isinstance(fallback, list) or not all(isinstance(n, str) for n in fallback):
            raise ValidationError(
                f"{where}.fallback must be a list of runtime names", [FieldError(f"{where}.fallback", "a list")]
            )
        if len(fallback) > MAX_FALLBACKS:
            raise ValidationError(
                f"{where}.fallback names more than {MAX_FALLBACKS} runtimes",
                [FieldError(f"{where}.fallback", f"at most {MAX_FALLBACKS}")],
            )
        for i, name in enumerate(fallback):
            runtimes.check(name, f"{where}.fallback[{i}]")
    return runtime, fallback


def choose(
    config: Mapping[str, Any], team_config: Mapping[str, Any] | None, runtimes: Runtimes, default_fallback: list[str]
) -> dict[str, Any]:
    """The agent's ``config.sandbox`` with its runtime and fallback chain resolved (the request's, else its team's,
    else the server's). 400 for a malformed section or a runtime this server does not offer."""
    own = _section(config, "config")
    team = _section(team_config, "team.config")
    runtime, fallback = _names(own, "config.sandbox", runtimes)
    team_runtime, team_fallback = _names(team, "team.config.sandbox", runtimes)
    chosen = runtime or team_runtime or runtimes.default.name
    # The chain comes with the runtime it follows: a runtime named without one has none; the server's chain follows
    # the server's runtime only.
    if fallback is None and runtime is None:
        fallback = team_fallback if team_fallback is not None or team_runtime is not None else default_fallback
    chain = [chosen, *[n for n in dict.fromkeys(fallback or []) if n != chosen]]
    parse_rules(own.get("egress"), "config.sandbox.egress")
    parse_rules(team.get("egress"), "team.config.sandbox.egress")
    for section, where in ((own, "config.sandbox.image"), (team, "team.config.sandbox.image")):
        if section.get("image") is not None:
            from godel.runtimes.container.runtime import check_image  # only when an image is named

            if not isinstance(section["image"], str):
                raise ValidationError(f"{where} must be a string", [FieldError(where, "an image reference")])
            check_image(section["image"], where)
    merged = {**{k: v for k, v in team.items() if k not in ("runtime", "fallback")}, **own}
    return {**merged, "runtime": chain[0], "fallback": chain[1:]}


def hold_to_parent(parent: Agent, sandbox: dict[str, Any], repo: str, default: str) -> None:
    """A sub-agent (spawned by an agent's own credential) is held to its parent: its repository, and no runtime of
    its chain weaker than the one the parent runs in. Otherwise a sandboxed agent could spawn its way out (403)."""
    if parent.repo != repo:
        raise PermissionDeniedError(
            "a sub-agent works in its parent's repository",
            details={"repo": repo, "parentRepo": parent.repo, "parent": parent.id},
        )
    floor = parent.runtime_name or default
    for name in [sandbox["runtime"], *sandbox.get("fallback", [])]:
        if strength_of(name) < strength_of(floor):
            raise PermissionDeniedError(
                f"a sub-agent may not run in a weaker runtime ({name}) than its parent's ({floor})",
                details={"runtime": name, "parentRuntime": floor, "parent": parent.id},
            )


def chain_of(agent: Agent, default: str) -> list[str]:
    """The runtimes the agent may run in, in order (its config.sandbox, resolved at spawn)."""
    value = agent.config.get(SANDBOX)
    section: dict[str, Any] = value if isinstance(value, dict) else {}
    first = section.get("runtime") or agent.runtime_name or default
    rest = section.get("fallback") or []
    return [first, *[n for n in rest if isinstance(n, str) and n != first]]


def next_runtime(agent: Agent, current: str, exc: BaseException, default: str) -> str | None:
    """The runtime to try after ``current`` failed with ``exc``, or None (the failure is not the runtime's, or the
    chain is at its end)."""
    if not isinstance(exc, RuntimeFailure) or isinstance(exc, GitError):
        return None
    chain = chain_of(agent, default)
    if current not in chain:
        return None
    at = chain.index(current)
    return chain[at + 1] if at + 1 < len(chain) else None


def fallback_payload(current: str, nxt: str, exc: GodelError) -> dict[str, Any]:
    return {"from": current, "to": nxt, "code": exc.code, "error": exc.message}
