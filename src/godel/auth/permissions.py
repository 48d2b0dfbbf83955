"""Permissions as ``resource:action:scope`` (spec §3.4, §6.2), the built-in roles, and the one check.

A grant such as ``agent:*:team`` allows an action on a resource within a scope. Scopes nest: ``all`` ⊃ ``team`` ⊃
``own``. Whether a call needs ``own``, ``team`` or ``all`` depends on whose resource it touches, which only the
caller knows (``Owner``): the caller's own (``own``), one owned by a member of the caller's team (``team``), or
anyone's (``all``). A resource with no recorded owner needs ``all``, so a resource the system made without an owner
is visible only to administrators: unknown ownership fails closed.

Resources: agent, team, workflow, task, merge, event, key (the gateway's virtual keys), budget, usage, user, role,
apikey (users' API keys), audit, webhook. Actions: create, read, update, delete (agent commands such as pause or
kill are ``update``). ``*`` matches any resource, action or scope.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SCOPES = ("own", "team", "all")
_RANK = {"own": 0, "team": 1, "all": 2, "*": 2}
RESOURCES = (
    "agent", "team", "workflow", "task", "merge", "event", "key", "budget", "usage", "user", "role", "apikey",
    "audit", "webhook",
)  # fmt: skip
ACTIONS = ("create", "read", "update", "delete")


@dataclass(frozen=True)
class Permission:
    resource: str
    action: str
    scope: str = "all"

    @classmethod
    def parse(cls, text: str) -> Permission:
        """``"agent:read:team"`` → Permission; ``ValueError`` naming what is wrong."""
        parts = text.strip().split(":")
        if len(parts) == 2:
            parts.append("all")
        if len(parts) != 3:
            raise ValueError(f"{text!r} is not resource:action:scope")
        resource, action, scope = parts
        if resource != "*" and resource not in RESOURCES:
            raise ValueError(f"unknown resource {resource!r} in {text!r} (one of {', '.join(RESOURCES)} or *)")
        if action != "*" and action not in ACTIONS:
            raise ValueError(f"unknown action {action!r} in {text!r} (one of {', '.join(ACTIONS)} or *)")
        if scope not in _RANK:
            raise ValueError(f"unknown scope {scope!r} in {text!r} (one of {', '.join(SCOPES)} or *)")
        return cls(resource, action, "all" if scope == "*" else scope)

    def __str__(self) -> str:
        return f"{self.resource}:{self.action}:{self.scope}"

    def covers(self, resource: str, action: str, scope: str) -> bool:
        return self.resource in ("*", resource) and self.action in ("*", action) and _RANK[self.scope] >= _RANK[scope]


def parse_all(texts: Iterable[str]) -> tuple[Permission, ...]:
    return tuple(Permission.parse(t) for t in texts)


# The spec's four roles (§3.4), completed with the resources Godel has beyond the spec's three, and ``agent``: the
# role of the credential each run gets, which never belongs to a person.
BUILTIN_ROLES: Mapping[str, tuple[str, ...]] = {
    "admin": ("*:*:all",),
    "operator": (
        "agent:*:team", "team:*:team", "workflow:*:team", "task:*:team", "merge:*:team", "event:*:team",
        "key:*:team", "usage:read:team", "budget:read:team", "webhook:*:own", "apikey:*:own",
    ),
    "developer": (
        "agent:*:own", "agent:read:team", "team:*:own", "team:read:team", "workflow:*:own", "workflow:read:team",
        "task:*:own", "task:read:team", "merge:*:own", "event:read:team", "event:create:own", "key:*:own",
        "usage:read:own", "budget:read:own", "webhook:*:own", "apikey:*:own",
    ),
    "viewer": (
        "agent:read:team", "team:read:team", "workflow:read:team", "task:read:team", "merge:read:team",
        "event:read:team", "apikey:*:own",
    ),
    "agent": ("agent:read:own", "event:read:own", "event:create:own"),
}  # fmt: skip
ASSIGNABLE_BUILTINS = ("admin", "operator", "developer", "viewer")
AGENT_SPAWN_GRANT = "agent:create:own"  # added to an agent's credential when its spawn allows sub-agents


@dataclass(frozen=True)
class Owner:
    """Who a resource belongs to: a principal id (``user:alice``, ``agent:<id>``) and that principal's team.
    ``also``: other principals for whom it is their own, e.g. an agent's own credential for the agent itself and
    for the sub-agents it spawned."""

    id: str | None
    team: str | None = None
    also: tuple[str, ...] = ()


NOBODY = Owner(None)


def required_scope(caller_id: str, caller_team: str | None, owner: Owner | None) -> str:
    """The narrowest scope that reaches ``owner``'s resource from this caller (None: a collection, ``own``)."""
    if owner is None:
        return "own"
    if (owner.id is not None and owner.id == caller_id) or caller_id in owner.also:
        return "own"
    if caller_team is not None and owner.team == caller_team:
        return "team"
    return "all"


def allows(grants: Iterable[Permission], resource: str, action: str, scope: str) -> bool:
    return any(g.covers(resource, action, scope) for g in grants)


def widest_scope(grants: Iterable[Permission], resource: str, action: str) -> str | None:
    """The widest scope at which ``grants`` allow the action on the resource, or None."""
    best: str | None = None
    for g in grants:
        if g.resource in ("*", resource) and g.action in ("*", action):
            if best is None or _RANK[g.scope] > _RANK[best]:
                best = g.scope
    return best
