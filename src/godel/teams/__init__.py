"""Teams: several agents working on one goal under one of four strategies (parallel, map-reduce, pipeline,
tree), with roles as agent profiles. ``TeamOrchestrator`` is the service the API calls; see docs/teams.md."""

from godel.agents.roles import BUILTIN_ROLES, GATES, RoleProfile, load_roles
from godel.teams.orchestrator import TeamOrchestrator
from godel.teams.parsing import FormatError, Verdict, parse_health, parse_subtasks, parse_verdict
from godel.teams.spec import STRATEGIES, StageSpec, TeamSpec

__all__ = [
    "BUILTIN_ROLES",
    "GATES",
    "STRATEGIES",
    "FormatError",
    "RoleProfile",
    "StageSpec",
    "TeamOrchestrator",
    "TeamSpec",
    "Verdict",
    "load_roles",
    "parse_health",
    "parse_subtasks",
    "parse_verdict",
]
