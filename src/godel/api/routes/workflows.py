"""``/api/v1/workflows``: submit a workflow (YAML or JSON text, or a definition object), follow it, steer it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from godel.api.access import WORKFLOW, allow, may_steer, visible_owners
from godel.api.schemas import Body, NonEmpty, RepoPath, ok
from godel.auth.principal import Principal
from godel.core.models import Workflow, WorkflowStep
from godel.errors import FieldError, ValidationError
from godel.workflow import load_workflow, parse_workflow
from godel.workflow.definition import WorkflowDefinition
from godel.workflow.engine import WorkflowEngine
from godel.workflow.graph import TERMINAL

router = APIRouter(tags=["workflows"])
Reader = Annotated[Principal, allow("workflow:read", on=WORKFLOW)]
Updater = Annotated[Principal, allow("workflow:update", on=WORKFLOW)]


class SubmitWorkflow(Body):
    source: str | None = None  # the file's text (YAML or JSON): errors come with line and column
    format: Literal["yaml", "json"] | None = None
    filename: Annotated[str, Field(max_length=255)] = "<workflow>"
    definition: dict[str, Any] | None = None  # or the document as an object
    repo: RepoPath
    base_ref: NonEmpty = "HEAD"
    variables: dict[str, Any] = Field(default_factory=dict)
    team_id: str | None = None
    start: bool = True


def _engine(request: Request) -> WorkflowEngine:
    engine: WorkflowEngine = request.app.state.workflows
    return engine


def _definition(body: SubmitWorkflow) -> WorkflowDefinition:
    if (body.source is None) == (body.definition is None):
        raise ValidationError(
            "give the workflow as `source` (its text) or as `definition` (an object), not both",
            [FieldError("source", "exactly one of source and definition")],
        )
    if body.source is not None:
        return load_workflow(body.source, filename=body.filename, fmt=body.format)
    return parse_workflow(body.definition, filename=body.filename)


def step_json(step: WorkflowStep) -> dict[str, Any]:
    result = step.result or {}
    return {
        "id": step.step_id,
        "name": step.name,
        "status": step.status,
        "dependsOn": step.dependencies or [],
        "agentId": step.agent_id,
        "attempts": result.get("attempts", []),
        "retryCount": step.retry_count,
        "output": result.get("output"),
        "branch": result.get("branch"),
        "error": step.error,
        "nextAttemptAt": result.get("nextAttemptAt"),
        "startedAt": step.started_at.isoformat() if step.started_at else None,
        "completedAt": step.completed_at.isoformat() if step.completed_at else None,
    }


def workflow_json(wf: Workflow, steps: list[WorkflowStep] | None = None) -> dict[str, Any]:
    ctx = wf.context or {}
    out: dict[str, Any] = {
        "id": wf.id,
        "name": wf.name,
        "description": wf.description,
        "status": wf.status,
        "currentStepId": wf.current_step_id,
        "repo": ctx.get("repo"),
        "baseRef": ctx.get("baseRef"),
        "variables": ctx.get("variables") or {},
        "teamId": wf.team_id,
        "createdBy": wf.created_by,
        "createdAt": wf.created_at.isoformat() if wf.created_at else None,
        "startedAt": wf.started_at.isoformat() if wf.started_at else None,
        "completedAt": wf.completed_at.isoformat() if wf.completed_at else None,
    }
    if steps is not None:
        done = sum(1 for s in steps if s.status in TERMINAL)
        out["progress"] = round(100 * done / len(steps)) if steps else 100
        out["steps"] = [step_json(s) for s in sorted(steps, key=_order(wf))]
    return out


def _order(wf: Workflow) -> Any:
    ids = [s["id"] for s in wf.definition.get("steps", [])]
    return lambda s: ids.index(s.step_id) if s.step_id in ids else len(ids)


@router.post("/workflows", status_code=201)
async def submit(
    body: SubmitWorkflow, request: Request, caller: Annotated[Principal, allow("workflow:create")]
) -> JSONResponse:
    await may_steer(request, caller, team_id=body.team_id)
    engine = _engine(request)
    wf = await engine.submit(
        _definition(body), repo=body.repo, base_ref=body.base_ref, variables=body.variables, team_id=body.team_id,
        start=body.start, created_by=caller.id,
    )  # fmt: skip
    wf, steps = await engine.get(wf.id)
    return JSONResponse(ok(workflow_json(wf, steps)), status_code=201)


@router.get("/workflows")
async def list_workflows(
    request: Request,
    caller: Annotated[Principal, allow("workflow:read")],
    status: Annotated[list[str] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    page = await _engine(request).list_workflows(statuses=status or (), limit=limit, cursor=cursor)
    owners = await visible_owners(request, caller, "workflow")
    items = [workflow_json(w) for w in page.items if owners is None or w.created_by in owners]
    return ok({"items": items, "pagination": {"limit": limit, "cursor": page.cursor, "hasMore": page.has_more}})


@router.get("/workflows/{workflow_id}")
async def get_workflow(workflow_id: str, request: Request, caller: Reader) -> dict[str, Any]:
    wf, steps = await _engine(request).get(workflow_id)
    return ok(workflow_json(wf, steps))


@router.get("/workflows/{workflow_id}/steps")
async def get_steps(workflow_id: str, request: Request, caller: Reader) -> dict[str, Any]:
    wf, steps = await _engine(request).get(workflow_id)
    return ok({"items": [step_json(s) for s in sorted(steps, key=_order(wf))]})


class UpdateWorkflow(Body):
    name: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    description: str | None = None
    variables: dict[str, Any] | None = None  # only before the run starts


@router.patch("/workflows/{workflow_id}")
async def update_workflow(workflow_id: str, body: UpdateWorkflow, request: Request, caller: Updater) -> dict[str, Any]:
    engine = _engine(request)
    await engine.update(workflow_id, name=body.name, description=body.description, variables=body.variables)
    wf, steps = await engine.get(workflow_id)
    return ok(workflow_json(wf, steps))


@router.delete("/workflows/{workflow_id}")
async def delete_workflow(
    workflow_id: str,
    request: Request,
    caller: Annotated[Principal, allow("workflow:delete", on=WORKFLOW)],
    force: bool = False,
) -> dict[str, Any]:
    await _engine(request).delete(workflow_id, force=force)
    return ok({"id": workflow_id, "deleted": True})


@router.post("/workflows/{workflow_id}/{action}")
async def act(
    workflow_id: str, action: Literal["start", "cancel", "pause", "resume"], request: Request, caller: Updater
) -> Any:
    engine = _engine(request)
    do = {"start": engine.start_workflow, "cancel": engine.cancel, "pause": engine.pause, "resume": engine.resume}
    await do[action](workflow_id)
    wf, steps = await engine.get(workflow_id)
    return ok(workflow_json(wf, steps))
