"""``TeamRun``: what a strategy drives a team's agents through, and why a restart never spawns one twice.

Every agent a team spawns has a *step key*, unique in the team (``agent/3``, ``map/item/2``, ``stage/1/round/0``,
``tree/0.1/plan``…), in its ``metadata.step``, written in the same transaction that creates the agent. A
strategy is written as if it ran from the beginning every time: ``run_step`` first looks the key up among the
team's agents and only spawns when none has it. So after a restart the strategy replays its steps, agents
that ended return their results at once, agents still running are waited for, and only steps never reached
spawn anything. What a strategy learns on the way (the split items, a tree's nodes, review rounds, results)
is also recorded in the team's ``metadata.run`` for progress and display; the agents remain the truth.

Limits: ``cap`` holds the team's agents at once to ``maxAgents``; ``pool`` is the worker pool a map-reduce
(or a parallel team over a task list) runs its items through, sized by the team's ``size`` and resized live
by a scale. While the team is paused, no agent is spawned (``unpaused``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import structlog

from godel.agents.roles import RoleProfile, role_named, takes_tools
from godel.core.models import Agent, Team
from godel.core.ports import AgentQuery
from godel.core.runs import ended_for_good
from godel.errors import AgentNotFoundError
from godel.scheduler.plane import ControlPlane
from godel.scheduler.requests import SpawnRequest
from godel.store.teams import DecideTeam, TeamChange
from godel.teams.progress import run_state
from godel.teams.spec import StageSpec, TeamSpec

log = structlog.get_logger("godel.teams")
LIST_PAGE = 500


class TeamStorePort(Protocol):
    """What the teams layer needs of the store beyond ``Store`` (``SqlStore`` has it via ``store.teams``)."""

    async def add_team(self, team: Team, *, actor: str) -> Any: ...
    async def read_team(self, team_id: str) -> Team: ...
    async def list_teams(self, *, status: Any = (), limit: int = 50, cursor: str | None = None) -> Any: ...
    async def change_team(self, team_id: str, decide: DecideTeam, *, actor: str) -> Any: ...
    async def remove_team(self, team_id: str, *, allowed: Any, actor: str) -> Any: ...
    async def team_usage(self, team_id: str) -> dict[str, Any]: ...


class Pool:
    """A limit on how many hold a place at once, which may change while others wait for a place."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: self.used < self.limit)
            self.used += 1
        try:
            yield
        finally:
            async with self._cond:
                self.used -= 1
                self._cond.notify_all()

    async def resize(self, limit: int) -> None:
        async with self._cond:
            self.limit = limit
            self._cond.notify_all()


class StepFailed(Exception):
    """A step the strategy needed did not complete; the team fails with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def team_agents(plane: ControlPlane, team_id: str) -> list[Agent]:
    """Every agent of the team (all pages), oldest first."""
    out: list[Agent] = []
    cursor: str | None = None
    while True:
        page = await plane.list_agents(AgentQuery(team_id=team_id, limit=LIST_PAGE, cursor=cursor))
        out.extend(page.items)
        if not page.has_more or not page.cursor:
            break
        cursor = page.cursor
    return sorted(out, key=lambda a: (a.spawned_at is None, a.spawned_at, a.id))


def spawn_request(
    spec: TeamSpec,
    roles: Mapping[str, RoleProfile],
    *,
    team_id: str,
    team_name: str,
    base_ref: str,
    step: str,
    role_name: str,
    task: str,
    stage: StageSpec | None = None,
    meta: Mapping[str, Any] | None = None,
) -> SpawnRequest:
    """How a team's step becomes a spawn: the agent kind and model from the stage, else the role, else the team;
    the team's adapter options for agents of the team's own kind; the role's tools (where the CLI takes an
    allowlist) and preamble; ``metadata`` naming the team, role and step."""
    role = role_named(roles, role_name, field="role")
    kind = (stage.agent if stage else None) or role.agent or spec.agent
    model = (stage.model if stage else None) or role.model or spec.model
    config = dict(spec.config) if kind == spec.agent else {}
    metadata: dict[str, Any] = {"teamId": team_id, "role": role.name, "step": step, **(meta or {})}
    tools = role.tools_for(kind)
    if tools is not None:
        if takes_tools(kind):
            config["tools"] = tools
        else:
            metadata["toolsIgnored"] = True  # this CLI takes no allowlist: it keeps every tool it has
    command = (stage.command if stage else None) or spec.command
    return SpawnRequest(
        task=task,
        repo=spec.repo,
        base_ref=base_ref,
        label=f"{team_name}:{step}"[:255],
        team_id=team_id,
        agent=kind,
        command=command if kind == "command" else None,
        model=model,
        timeout=spec.agent_timeout,
        max_retries=spec.max_retries,
        config=config,
        metadata=metadata,
        prompt_context=role.preamble or None,
        team_limits=dict(spec.resource_limits or {}),  # known here: the plane need not look the team up
    )


class TeamRun:
    def __init__(
        self,
        plane: ControlPlane,
        store: TeamStorePort,
        team: Team,
        spec: TeamSpec,
        roles: Mapping[str, RoleProfile],
    ) -> None:
        self.plane = plane
        self.store = store
        self.team = team
        self.team_id = team.id
        self.spec = spec
        self.roles = dict(roles)
        self.actor = f"team:{team.id}"
        self.known: dict[str, Agent] = {}
        self.unpaused = asyncio.Event()
        self.unpaused.set()
        self.cap = Pool(spec.max_agents)
        self.pool = Pool(min(spec.size, spec.max_agents))
        self.scaled = asyncio.Event()  # set by a scale, for strategies that react to one
        self._locks: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------------------------------------- agents

    async def load(self) -> None:
        """Index the team's existing agents by step key (after a restart: what was already spawned)."""
        for agent in await team_agents(self.plane, self.team_id):
            step = agent.metadata.get("step")
            if isinstance(step, str):
                self.known[step] = agent

    def request(
        self,
        step: str,
        role_name: str,
        task: str,
        *,
        stage: StageSpec | None = None,
        base_ref: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> SpawnRequest:
        return spawn_request(
            self.spec, self.roles, team_id=self.team_id, team_name=self.team.name,
            base_ref=base_ref or self.base_commit, step=step, role_name=role_name, task=task, stage=stage, meta=meta,
        )  # fmt: skip

    @property
    def base_commit(self) -> str:
        return str(self.team.config.get("baseCommit") or self.spec.base_ref)

    async def launch(self, step: str, role_name: str, task: str, **kw: Any) -> Agent:
        """The agent of ``step``: the one already spawned for it, or a new one (once the team is not paused)."""
        found = self.known.get(step)
        if found is not None:
            return found
        await self.unpaused.wait()
        lock = self._locks.setdefault(step, asyncio.Lock())
        async with lock:  # two coroutines asking for one step spawn it once
            found = self.known.get(step)
            if found is None:
                found = await self.plane.spawn(self.request(step, role_name, task, **kw), actor=self.actor)
                self.known[step] = found
                if not self.unpaused.is_set():  # paused while it was being spawned: held like the others
                    await self.plane.hold(found.id, by=self.actor, reason="team paused")
        self._locks.pop(step, None)
        return found

    async def wait(self, agent: Agent) -> Agent:
        """The agent once it has ended (completed, killed, or failed with no retry left)."""
        try:
            ended = await self.plane.wait_for_end(agent.id)
        except AgentNotFoundError:
            raise StepFailed(f"agent {agent.id} ({agent.metadata.get('step')}) was deleted") from None
        self.known[str(ended.metadata.get("step", agent.id))] = ended
        return ended

    async def run_step(self, step: str, role_name: str, task: str, *, pooled: bool = False, **kw: Any) -> Agent:
        """Spawn (or find) the step's agent and wait for its end; holds a place in the team's cap meanwhile (and
        in the worker pool when ``pooled``)."""
        found = self.known.get(step)
        if found is not None and ended_for_good(found):
            return found
        async with contextlib.AsyncExitStack() as stack:
            if pooled and found is None:
                await stack.enter_async_context(self.pool.place())
            await stack.enter_async_context(self.cap.place())
            agent = await self.launch(step, role_name, task, **kw)
            return await self.wait(agent)

    # ------------------------------------------------------------------------------------------- record

    async def note(self, **patch: Any) -> None:
        """Merge ``patch`` into the team's ``metadata.run`` (committed; no event)."""

        def decide(team: Team) -> TeamChange:
            return TeamChange(metadata={"run": {**run_state(team), **patch}})

        self.team, _ = await self.store.change_team(self.team_id, decide, actor=self.actor)

    def noted(self, key: str, default: Any = None) -> Any:
        return run_state(self.team).get(key, default)

    async def expect(self, agents: int) -> None:
        if agents != self.noted("expectedAgents"):
            await self.note(expectedAgents=agents)

    def repo_path(self) -> Path:
        return Path(self.spec.repo)
