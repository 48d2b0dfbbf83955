"""``/api/v1/merges``: the merge queue as server-side jobs (see docs/merging.md).

``POST`` validates the whole request (repository, branches, integration branch) before answering 202 with the
job; the merge runs in the background and ``GET /merges/{id}`` follows it. Runs from before a restart are read
back from their ``merge:*`` events.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from godel.api.access import MERGE, allow, auth_of, visible_owners
from godel.api.deps import Merges, Plane
from godel.api.schemas import Body, NonEmpty, RepoPath, ok
from godel.auth.principal import Principal
from godel.core.ids import agent_of_branch
from godel.errors import FieldError, GodelError, PermissionDeniedError, ValidationError
from godel.merging.plan import DEFAULT_VERIFY_TIMEOUT
from godel.merging.refinery import DEFAULT_TIMEOUT, RefineryConfig
from godel.merging.service import MergeRequest
from godel.scheduler.requests import SpawnRequest

router = APIRouter(tags=["merges"])


class StartMerge(Body):
    repo: RepoPath
    into: NonEmpty
    base: NonEmpty | None = None  # where a new integration branch starts (default HEAD); ignored if it exists
    verify: str | None = None  # the gate: a shell command run in the integration worktree after each merge
    verify_timeout: Annotated[float, Field(gt=0, le=7 * 86400)] = DEFAULT_VERIFY_TIMEOUT
    branches: Annotated[list[NonEmpty], Field(max_length=1000)] = Field(default_factory=list)
    team_id: NonEmpty | None = None
    workflow_id: NonEmpty | None = None
    batch: bool = False  # merge all, verify once, bisect on failure
    resolve: str | None = None  # a shell command that resolves a conflict on a godel/refinery/… branch
    refinery: Refinery | None = None  # or a refinery agent that does, on its own branch


class Refinery(Body):
    agent: NonEmpty  # the adapter: pi, claude, …
    model: str = ""  # provider/model
    timeout: Annotated[float, Field(gt=0, le=86400)] = DEFAULT_TIMEOUT


StartMerge.model_rebuild()


@router.post("/merges", status_code=202)
async def start_merge(
    body: StartMerge,
    plane: Plane,
    merges: Merges,
    request: Request,
    caller: Annotated[Principal, allow("merge:create")],
) -> JSONResponse:
    auth = auth_of(request)
    # Merging reads the branches it takes in and writes the one it merges into: an agent's branch (godel/ID) is
    # that agent's, so the caller must be able to read it (or change it, for ``into``).
    wanted = [("team", body.team_id, "read"), ("workflow", body.workflow_id, "read")]
    wanted += [("agent", agent_of_branch(b), "read") for b in body.branches]
    wanted.append(("agent", agent_of_branch(body.into), "update"))
    for kind, ref, action in wanted:
        if ref is not None and not caller.may(kind, action, await auth.owner_of(kind, ref)):
            raise PermissionDeniedError(
                f"{caller.id} may not {action} {kind} {ref}", details={"permission": f"{kind}:{action}"}
            )
    if body.refinery is not None:
        if body.resolve:
            raise ValidationError("give `resolve` (a command) or `refinery` (an agent), not both",
                                  [FieldError("refinery", "not with resolve")])  # fmt: skip
        if body.refinery.agent == "command":
            raise ValidationError("a refinery is an agent CLI (pi, claude, …), not a command: use `resolve` for that",
                                  [FieldError("refinery.agent", "an agent CLI")])  # fmt: skip
        probe = SpawnRequest(task="resolve a conflict", repo=body.repo, agent=body.refinery.agent,
                             model=body.refinery.model)  # fmt: skip
        try:  # everything a refinery agent would be refused for, before the merge starts: kind, model, CLI
            plane.validate_spawn(probe)
        except GodelError as exc:
            raise ValidationError(exc.message, [FieldError("refinery", exc.message)]) from None
    refinery = RefineryConfig(**body.refinery.model_dump()) if body.refinery else None
    merge = MergeRequest(
        repo=Path(body.repo).expanduser(), into=body.into, branches=list(body.branches), team_id=body.team_id,
        workflow_id=body.workflow_id, base=body.base, verify=body.verify, verify_timeout=body.verify_timeout,
        batch=body.batch, resolve=body.resolve or None, refinery=refinery, owner=caller.id,
    )  # fmt: skip
    job = await merges.submit(merge)
    return JSONResponse(ok(job.as_json()), status_code=202)


@router.get("/merges")
async def list_merges(
    plane: Plane,
    merges: Merges,
    request: Request,
    caller: Annotated[Principal, allow("merge:read")],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    owners = await visible_owners(request, caller, "merge")
    items = await merges.list(limit)
    return ok({"items": [m for m in items if owners is None or m.get("owner") in owners]})


@router.get("/merges/{merge_id}")
async def get_merge(
    merge_id: str, merges: Merges, caller: Annotated[Principal, allow("merge:read", on=MERGE)]
) -> dict[str, Any]:
    return ok(await merges.get(merge_id))
