"""Who is calling: a person (``user:NAME``) or a run of an agent (``agent:ID``), with the grants of its roles."""

from __future__ import annotations

from dataclasses import dataclass, field

from godel.auth.permissions import Owner, Permission, allows, required_scope, widest_scope


@dataclass(frozen=True)
class Principal:
    id: str  # "user:alice" | "agent:<agent id>": what events and audit rows name as the actor
    name: str
    kind: str  # "user" | "agent"
    roles: tuple[str, ...]
    grants: tuple[Permission, ...]
    team: str | None = None  # the team (group) of people this user belongs to, for the ``team`` scope
    method: str = "api_key"  # how it authenticated: api_key | bearer | cookie | local
    credential_id: str | None = None  # the API key, token family or agent credential it used
    agent_id: str | None = None  # for an agent's credential: the agent it speaks for
    claims: dict[str, str] = field(default_factory=dict, compare=False)

    def may(self, resource: str, action: str, owner: Owner | None = None) -> bool:
        """Whether this caller may do ``action`` on ``resource`` owned by ``owner`` (None: the collection)."""
        return allows(self.grants, resource, action, required_scope(self.id, self.team, owner))

    def scope_of(self, resource: str, action: str) -> str | None:
        """The widest scope this caller has for the action (None: none at all): what a listing may show."""
        return widest_scope(self.grants, resource, action)

    @property
    def is_admin(self) -> bool:
        return self.scope_of("*", "*") == "all" or "admin" in self.roles
