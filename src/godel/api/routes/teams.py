"""``/api/v1/teams``: create, list, inspect, start, pause, resume, scale, complete and delete teams; their agents and
metrics. The service is ``app.state.teams`` (``godel.teams.TeamOrchestrator``); see docs/teams.md."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from godel.api.access import OWNER_KEY, RESERVED_METADATA, TEAM, allow, owned_metadata, visible_owners
from godel.api.schemas import Body, RepoPath, agent_json, ok, page
from godel.auth.principal import Principal
from godel.core.models import Agent, Team
from godel.core.states import TeamStatus
from godel.teams import TeamOrchestrator
from godel.teams.progress import run_state

router = APIRouter(prefix="/teams", tags=["teams"])


def _teams(request: Request) -> TeamOrchestrator:
    teams: TeamOrchestrator = request.app.state.teams
    return teams


Teams = Annotated[TeamOrchestrator, Depends(_teams)]
Reader = Annotated[Principal, allow("team:read", on=TEAM)]
Updater = Annotated[Principal, allow("team:update", on=TEAM)]
Text = Annotated[str, Field(min_length=1, max_length=100_000)]


class Stage(Body):
    role: Annotated[str, Field(min_length=1, max_length=100)] = "worker"
    task: Text
    agent: str | None = None
    model: str | None = None
    command: str | None = None


class RetryPolicy(Body):
    max_retries: int | None = None
    max_rounds: int | None = None


class CreateTeam(Body):
    name: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    description: Annotated[str, Field(max_length=10_000)] | None = None
    strategy: str
    repo: RepoPath
    base_ref: str | None = None
    task: Text | None = None
    tasks: list[str] | None = None
    stages: list[Stage] | None = None
    size: int | None = None
    max_agents: int | None = None
    agent: str | None = None
    model: str | None = None
    command: str | None = None
    config: dict[str, Any] | None = None
    sandbox: dict[str, Any] | None = None  # the default config.sandbox of its agents (runtime, fallback, …)
    roles: dict[str, str] | None = None
    profiles: dict[str, dict[str, Any]] | None = None
    timeout: float | None = None
    agent_timeout: float | None = None
    retry_policy: RetryPolicy | None = None
    depth: int | None = None
    fanout: int | None = None
    reduce_task: Text | None = None
    monitor: bool | None = None
    budget: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    start: bool = False  # start it at once (the CLI does, unless --no-start)


class UpdateTeam(Body):
    name: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    description: Annotated[str, Field(max_length=10_000)] | None = None
    metadata: dict[str, Any] | None = None
    max_agents: Annotated[int, Field(ge=1, le=10_000)] | None = None
    budget: Annotated[float, Field(gt=0, lt=1e9)] | None = None


class Scale(Body):
    size: Annotated[int, Field(strict=True)]


def _t(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def team_json(team: Team, summary: dict[str, Any] | None = None, agents: list[Agent] | None = None) -> dict[str, Any]:
    run = run_state(team)
    out: dict[str, Any] = {
        "id": team.id,
        "name": team.name,
        "description": team.description,
        "strategy": team.execution_strategy,
        "executionStrategy": team.execution_strategy,
        "status": team.status.value,
        "size": team.config.get("size"),
        "maxAgents": team.config.get("maxAgents"),
        "progress": (summary or {}).get("progress", 100 if team.status == TeamStatus.COMPLETED else 0),
        "agents": summary,
        "result": run.get("result"),
        "error": run.get("error"),
        "run": {k: v for k, v in run.items() if k not in ("result", "error")},
        "config": team.config,
        "budgetAllocated": team.budget_allocated,
        "budgetConsumed": team.budget_consumed,
        "metadata": {k: v for k, v in team.metadata.items() if k not in ("run", OWNER_KEY)},
        "owner": team.metadata.get(OWNER_KEY),
        "createdAt": _t(team.created_at),
        "updatedAt": _t(team.updated_at),
        "completedAt": _t(team.completed_at),
    }
    if agents is not None:
        out["agentIds"] = [a.id for a in agents]
    return out


async def _shown(teams: TeamOrchestrator, team_id: str) -> dict[str, Any]:
    team, agents, summary = await teams.state(team_id)
    return team_json(team, summary, agents)


@router.post("", status_code=201)
async def create_team(
    body: CreateTeam, teams: Teams, caller: Annotated[Principal, allow("team:create")]
) -> JSONResponse:
    config = body.model_dump(by_alias=True, exclude_none=True, exclude={"name", "description", "metadata", "start"})
    team = await teams.create(
        config, name=body.name, description=body.description, metadata=owned_metadata(body.metadata, caller),
        start=body.start,
    )  # fmt: skip
    return JSONResponse(ok(await _shown(teams, team.id)), status_code=201)


@router.get("")
async def list_teams(
    teams: Teams,
    request: Request,
    caller: Annotated[Principal, allow("team:read")],
    status: Annotated[list[TeamStatus] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Newest first; each team with its agents' counts and progress."""
    found = await teams.list_teams(status=tuple(status or ()), limit=limit, cursor=cursor)
    items = []
    owners = await visible_owners(request, caller, "team")
    for team in found.items:
        if owners is not None and team.metadata.get(OWNER_KEY) not in owners:
            continue
        _, _, summary = await teams.state(team.id)
        items.append(team_json(team, summary))
    return page(items, limit=limit, cursor=found.cursor, has_more=found.has_more)


@router.get("/{team_id}")
async def get_team(team_id: str, teams: Teams, caller: Reader) -> dict[str, Any]:
    return ok(await _shown(teams, team_id))


@router.patch("/{team_id}")
async def update_team(team_id: str, body: UpdateTeam, teams: Teams, caller: Updater) -> dict[str, Any]:
    metadata = {k: v for k, v in (body.metadata or {}).items() if k not in RESERVED_METADATA} or None
    await teams.update(
        team_id, name=body.name, description=body.description, metadata=metadata,
        max_agents=body.max_agents, budget=body.budget,
    )  # fmt: skip
    return ok(await _shown(teams, team_id))


@router.delete("/{team_id}")
async def delete_team(
    team_id: str, teams: Teams, caller: Annotated[Principal, allow("team:delete", on=TEAM)], force: bool = False
) -> dict[str, Any]:
    await teams.delete(team_id, force=force)
    return ok({"id": team_id, "deleted": True})


@router.post("/{team_id}/start")
async def start_team(team_id: str, teams: Teams, caller: Updater) -> dict[str, Any]:
    await teams.start_team(team_id)
    return ok(await _shown(teams, team_id))


@router.post("/{team_id}/pause")
async def pause_team(team_id: str, teams: Teams, caller: Updater) -> dict[str, Any]:
    await teams.pause_team(team_id)
    return ok(await _shown(teams, team_id))


@router.post("/{team_id}/resume")
async def resume_team(team_id: str, teams: Teams, caller: Updater) -> dict[str, Any]:
    await teams.resume_team(team_id)
    return ok(await _shown(teams, team_id))


@router.post("/{team_id}/complete")
async def complete_team(team_id: str, teams: Teams, caller: Updater) -> dict[str, Any]:
    await teams.complete_team(team_id)
    return ok(await _shown(teams, team_id))


@router.post("/{team_id}/scale")
async def scale_team(team_id: str, body: Scale, teams: Teams, caller: Updater) -> dict[str, Any]:
    _, killed = await teams.scale(team_id, body.size)
    return ok({**await _shown(teams, team_id), "killedAgents": killed})


@router.get("/{team_id}/agents")
async def team_agents(team_id: str, teams: Teams, caller: Reader) -> dict[str, Any]:
    agents = await teams.agents(team_id)
    return ok({"items": [agent_json(a) for a in agents]})


@router.get("/{team_id}/metrics")
async def team_metrics(team_id: str, teams: Teams, caller: Reader) -> dict[str, Any]:
    return ok(await teams.metrics(team_id))
