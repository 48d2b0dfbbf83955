"""Everything about a team request that can be refused before anything is created.

``TeamSpec.parse`` has checked the shape; here the roles each slot and stage names must exist, a review must
have work before it, and every kind of agent the team would spawn goes through the control plane's own spawn
validation (agent kind, adapter options, the model's route, the CLI's presence), so a team with an unknown
role or agent kind is a 400 and no team, budget or agent exists. Finally the repository and base ref are
resolved: the team records the base commit, and all its agents start from that one commit (or from a branch
the team made).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from godel.agents.roles import RoleProfile, role_named
from godel.errors import FieldError, ValidationError
from godel.runtimes.git import resolve_in_repo
from godel.scheduler.isolation import SANDBOX, choose
from godel.scheduler.plane import ControlPlane
from godel.teams.runner import spawn_request
from godel.teams.spec import SLOTS_OF, StageSpec, TeamSpec

_PLACEHOLDER_ID = "00000000-0000-4000-8000-000000000000"


def _check_spawn(
    plane: ControlPlane, spec: TeamSpec, roles: Mapping[str, RoleProfile], role: str, where: str,
    stage: StageSpec | None = None,
) -> None:  # fmt: skip
    req = spawn_request(
        spec, roles, team_id=_PLACEHOLDER_ID, team_name="check", base_ref=spec.base_ref, step="check",
        role_name=role, task="check", stage=stage,
    )  # fmt: skip
    try:
        plane.validate_spawn(req)
    except ValidationError as exc:
        fields = exc.fields or [FieldError(where, exc.message)]
        raise type(exc)(
            f"{where} (role {role}, agent {req.agent}): {exc.message}",
            [FieldError(f.field if f.field in ("agent", "model", "command") else f"{where}.{f.field}", f.message)
             for f in fields],
        ) from exc  # fmt: skip


async def check_spec(plane: ControlPlane, spec: TeamSpec, roles: Mapping[str, RoleProfile]) -> tuple[Path, str]:
    """Refuse what cannot run; returns the repository's root and the base commit."""
    choose({}, {SANDBOX: dict(spec.sandbox)}, plane.runtimes, [])  # runtimes this server offers, a sound section
    slots = list(SLOTS_OF[spec.strategy]) + (["monitor"] if spec.monitor else [])
    if spec.strategy == "map-reduce" and spec.tasks:
        slots.remove("coordinator")  # an explicit split needs no coordinator
    for slot in slots:
        name = spec.role_of(slot)
        role_named(roles, name, field=f"roles.{slot}")
        _check_spawn(plane, spec, roles, name, f"roles.{slot}")
    if spec.strategy == "pipeline":
        seen_work = False
        for i, stage in enumerate(spec.pipeline_stages()):
            role = role_named(roles, stage.role, field=f"stages.{i}.role")
            if role.gate == "verdict" and not seen_work:
                raise ValidationError(
                    f"stage {i} ({stage.role}) reviews the stage before it, and there is no work before it",
                    [FieldError(f"stages.{i}.role", "a review needs a work stage before it")],
                )
            seen_work = seen_work or role.gate not in ("verdict", "monitor")
            _check_spawn(plane, spec, roles, stage.role, f"stages.{i}", stage)
    return await resolve_in_repo(Path(spec.repo).expanduser(), spec.base_ref, field="baseRef")
