"""``TeamOrchestrator``: teams' lifecycle, and one asyncio task per running team driving its strategy.

Status: ``creating`` (created, not started) → ``active`` ⇄ ``paused`` → ``completed`` | ``failed``. Every
change is one store transaction with its ``team:*`` event (``store.teams``): ``team:created``,
``team:started``, ``team:paused``, ``team:resumed``, ``team:scaled``, ``team:completed``, ``team:failed``,
``team:deleted``. The final status is decided from the agents: completed when every agent the strategy
needed completed, failed otherwise (with the reason in ``run.error``).

Restart: ``start()`` picks up every team left ``active`` or ``paused`` and runs its strategy again; the
strategy finds the agents already spawned by their step keys (``runner``), so none is spawned twice and the
team goes on where it was. ``stop()`` cancels the tasks and leaves the status as it is, for the next start.

Pause stops the team from spawning and pauses its running agents (as ``team:ID``); agents admitted while it
is paused are paused as they start. Resume resumes the agents the team paused (not those a budget paused).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import structlog

from godel.agents.roles import RoleProfile, load_roles, with_overrides
from godel.core.ids import new_id
from godel.core.models import Agent, Team
from godel.core.ports import Page
from godel.core.runs import ended_for_good
from godel.core.states import AgentState, TeamStatus
from godel.errors import (
    ConflictError,
    FieldError,
    GodelError,
    TeamNotFoundError,
    TeamTransitionError,
    ValidationError,
)
from godel.scheduler.plane import ControlPlane
from godel.store.teams import TeamChange
from godel.teams import progress, prompts
from godel.teams.checks import check_spec
from godel.teams.lifecycle import TEAMS, TeamTrigger
from godel.teams.parsing import parse_health
from godel.teams.progress import run_state
from godel.teams.runner import StepFailed, TeamRun, TeamStorePort, team_agents
from godel.teams.spec import TeamSpec, first_estimate, stored_config
from godel.teams.strategies import STRATEGY_RUNNERS
from godel.teams.strategies import parallel as parallel_strategy

log = structlog.get_logger("godel.teams")
LIVE_TEAM = (TeamStatus.ACTIVE, TeamStatus.PAUSED)
ENDED_TEAM = (TeamStatus.COMPLETED, TeamStatus.FAILED, TeamStatus.ARCHIVED)
_RUNNING = (AgentState.EXECUTING, AgentState.WAITING)


class TeamOrchestrator:
    def __init__(self, plane: ControlPlane, *, roles: Mapping[str, Any] | None = None) -> None:
        self.plane = plane
        self.store: TeamStorePort = plane.store  # the SQL store's team methods, checked by mypy against the port
        # Refused at start-up, with the offending key, when godel.toml's [roles] are malformed.
        self.roles: dict[str, RoleProfile] = load_roles(plane.settings.roles if roles is None else roles)
        self._runs: dict[str, TeamRun] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._ending: set[asyncio.Task[Any]] = set()  # drives past their strategy, recording how the team ended

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Resume every team left active or paused (after a restart)."""
        cursor: str | None = None
        while True:
            page = await self.store.list_teams(status=LIVE_TEAM, limit=200, cursor=cursor)
            for team in page.items:
                if team.id not in self._tasks:
                    log.info("resuming team", team=team.id, status=team.status.value)
                    try:
                        self._launch(team)
                    except GodelError as exc:  # e.g. a stored config this version cannot read: fail it, go on
                        log.error("cannot resume team", team=team.id, error=exc.message)
                        await self._finish(team.id, TeamStatus.FAILED, {"error": f"not resumed: {exc.message}"},
                                           actor="teams")  # fmt: skip
            if not page.has_more or not page.cursor:
                break
            cursor = page.cursor

    async def stop(self) -> None:
        """Stop driving teams; their status stays as it is, for the next start to pick up."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.gather(*self._ending, return_exceptions=True)  # teams recording how they ended
        self._tasks.clear()
        self._runs.clear()

    def running(self, team_id: str) -> TeamRun | None:
        return self._runs.get(team_id)

    # ----------------------------------------------------------------------------------------- commands

    async def create(
        self,
        config: Mapping[str, Any],
        *,
        name: str | None = None,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        start: bool = False,
        actor: str = "api",
    ) -> Team:
        """Validate everything (strategy, roles, agent kinds, models, repository) before anything exists, then
        create the team (``creating``), its budget, and start it when asked."""
        spec = TeamSpec.parse(config)
        if spec.size < 1:
            raise ValidationError("a team starts with a size of at least 1", [FieldError("size", "at least 1")])
        if metadata and "run" in metadata:
            raise ValidationError("metadata.run is the orchestrator's own", [FieldError("metadata.run", "reserved")])
        roles = with_overrides(self.roles, spec.profiles)
        root, commit = await check_spec(self.plane, spec, roles)
        team_id = new_id()
        team = Team(
            id=team_id,
            name=name or f"{spec.strategy}-{team_id[:8]}",
            description=description,
            config={**spec.as_config(), "repo": str(root), "baseCommit": commit},
            execution_strategy=spec.strategy,
            status=TeamStatus.CREATING,
            budget_allocated=spec.budget,
            metadata={**(metadata or {}), "run": {"expectedAgents": first_estimate(spec)}},
        )
        team, _ = await self.store.add_team(team, actor=actor)
        if spec.budget:
            await self.plane.budgets.set("team", team.id, spec.budget, "total")
        if start:
            team = await self.start_team(team.id, actor=actor)
        return team

    async def start_team(self, team_id: str, *, actor: str = "api") -> Team:
        now = self.plane.clock.now()

        def decide(team: Team) -> TeamChange:
            move = TEAMS.plan(team.id, team.status, TeamTrigger.START)
            return TeamChange(
                changes={"status": move.to_state},
                metadata={"run": {**run_state(team), "startedAt": now.isoformat()}},
                event=move.event,
                payload={"strategy": team.execution_strategy, "size": team.config.get("size")},
            )

        team, _ = await self.store.change_team(team_id, decide, actor=actor)
        self._launch(team)
        return team

    async def pause_team(self, team_id: str, *, actor: str = "api") -> Team:
        def decide(team: Team) -> TeamChange:
            move = TEAMS.plan(team.id, team.status, TeamTrigger.PAUSE)
            return TeamChange(changes={"status": move.to_state}, event=move.event)

        team, _ = await self.store.change_team(team_id, decide, actor=actor)
        run = self._runs.get(team_id)
        if run is not None:
            run.unpaused.clear()
            run.team = team
        # Desired state on each agent, applied by the supervisor now or the moment a queued one starts.
        for agent in await team_agents(self.plane, team_id):
            if not ended_for_good(agent):
                with contextlib.suppress(GodelError):  # deleted meanwhile
                    await self.plane.hold(agent.id, by=_team_actor(team_id), reason="team paused")
        return team

    async def resume_team(self, team_id: str, *, actor: str = "api") -> Team:
        def decide(team: Team) -> TeamChange:
            move = TEAMS.plan(team.id, team.status, TeamTrigger.RESUME)
            return TeamChange(changes={"status": move.to_state}, event=move.event)

        team, _ = await self.store.change_team(team_id, decide, actor=actor)
        for agent in await team_agents(self.plane, team_id):
            with contextlib.suppress(GodelError):  # deleted meanwhile
                await self.plane.release(agent.id, by=_team_actor(team_id), reason="team resumed")
        run = self._runs.get(team_id)
        if run is not None:
            run.team = team
            run.unpaused.set()
        elif team.id not in self._tasks:
            self._launch(team)
        return team

    async def scale(self, team_id: str, size: int, *, actor: str = "api") -> tuple[Team, list[str]]:
        """A new size: live for parallel teams (up spawns, down kills the newest running agents) and the worker
        pool for map-reduce (and parallel task lists); refused for pipelines and trees."""
        current = await self.store.read_team(team_id)
        spec = TeamSpec.parse(stored_config(current))
        if not 0 <= size <= spec.room:
            where = ", less the monitor's place" if spec.monitor else ""
            raise ValidationError(
                f"size {size} is outside 0..{spec.room} (maxAgents{where})",
                [FieldError("size", f"from 0 to {spec.room} (maxAgents{where})")],
            )
        if not spec.scalable:
            raise ConflictError(
                f"a {spec.strategy} team cannot be scaled: "
                + ("its stages run one at a time" if spec.strategy == "pipeline" else "its shape comes from its plan"),
                details={"teamId": team_id, "strategy": spec.strategy},
            )

        def decide(team: Team) -> TeamChange:
            move = TEAMS.plan(team.id, team.status, TeamTrigger.SCALE)
            before = team.config.get("size")
            return TeamChange(
                changes={"config": {**team.config, "size": size}},
                event=move.event,
                payload={"from": before, "to": size},
            )

        team, _ = await self.store.change_team(team_id, decide, actor=actor)
        killed: list[str] = []
        run = self._runs.get(team_id)
        if run is not None:
            run.spec = run.spec.with_size(size)
            run.team = team
            await run.pool.resize(min(size, spec.max_agents))
            if spec.strategy == "parallel":
                killed = await parallel_strategy.rescale(run, size)
            run.scaled.set()
            team = run.team
        return team, killed

    async def complete_team(self, team_id: str, *, actor: str = "api") -> Team:
        """End the team now as completed: its strategy stops and its agents still running are killed."""
        current = await self.store.read_team(team_id)
        TEAMS.check(team_id, current.status, TeamTrigger.COMPLETE)
        await self._halt(team_id, reason="team completed on request")
        return await self._finish(team_id, TeamStatus.COMPLETED, {"completedBy": actor}, actor=actor)

    async def update(
        self,
        team_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        max_agents: int | None = None,
        budget: float | None = None,
        actor: str = "api",
    ) -> Team:
        if metadata and "run" in metadata:
            raise ValidationError("metadata.run is the orchestrator's own", [FieldError("metadata.run", "reserved")])

        def decide(team: Team) -> TeamChange:
            changes: dict[str, Any] = {}
            config = dict(team.config)
            if name is not None:
                changes["name"] = name
            if description is not None:
                changes["description"] = description
            if max_agents is not None:
                if max_agents < int(config.get("size") or 0):
                    raise ValidationError(
                        f"maxAgents {max_agents} is below the team's size ({config.get('size')}); scale it first",
                        [FieldError("maxAgents", "at least the team's size")],
                    )
                config["maxAgents"] = max_agents
            if budget is not None:
                config["budget"] = budget
                changes["budget_allocated"] = budget
            if config != team.config:
                changes["config"] = config
            return TeamChange(changes=changes, metadata=dict(metadata or {}))

        team, _ = await self.store.change_team(team_id, decide, actor=actor)
        if budget is not None:
            await self.plane.budgets.set("team", team_id, budget, "total")
        run = self._runs.get(team_id)
        if run is not None and max_agents is not None:
            run.spec = run.spec.with_max_agents(max_agents)
            await run.cap.resize(max_agents)
        return team

    async def delete(self, team_id: str, *, force: bool = False, actor: str = "api") -> None:
        """Delete the team (its agents stay, without a team). A live team needs ``force``: it is halted first."""
        current = await self.store.read_team(team_id)
        if current.status in LIVE_TEAM and not force:
            raise TeamTransitionError(
                team_id, current.status.value, "delete",
                f"team {team_id} is {current.status.value}; complete it first or delete with force=true",
            )  # fmt: skip
        if force:
            await self._halt(team_id, reason="team deleted")

        def allowed(team: Team) -> None:
            if team.status in LIVE_TEAM and not force:
                raise TeamTransitionError(team_id, team.status.value, "delete")

        await self.store.remove_team(team_id, allowed=allowed, actor=actor)
        for budget in await self.plane.store.list_budgets(entity_type="team", entity_id=team_id):
            with contextlib.suppress(GodelError):
                await self.plane.store.delete_budget(budget.id)

    # ------------------------------------------------------------------------------------------- queries

    async def get(self, team_id: str) -> Team:
        return await self.store.read_team(team_id)

    async def list_teams(
        self, *, status: tuple[TeamStatus, ...] = (), limit: int = 50, cursor: str | None = None
    ) -> Page[Team]:
        page: Page[Team] = await self.store.list_teams(status=status, limit=limit, cursor=cursor)
        return page

    async def agents(self, team_id: str) -> list[Agent]:
        await self.store.read_team(team_id)  # 404 for an unknown team
        return await team_agents(self.plane, team_id)

    async def state(self, team_id: str) -> tuple[Team, list[Agent], dict[str, Any]]:
        """The team, its agents and what is derived from them (counts by state, progress)."""
        team = await self.store.read_team(team_id)
        agents = await team_agents(self.plane, team_id)
        return team, agents, progress.summary(team, agents)

    async def metrics(self, team_id: str) -> dict[str, Any]:
        team, agents, summary = await self.state(team_id)
        usage = await self.store.team_usage(team_id)
        return progress.metrics(team, agents, summary, usage, now=self.plane.clock.now())

    # ------------------------------------------------------------------------------------------- driving

    def _launch(self, team: Team) -> None:
        spec = TeamSpec.parse(stored_config(team))
        run = TeamRun(self.plane, self.store, team, spec, with_overrides(self.roles, spec.profiles))
        if team.status == TeamStatus.PAUSED:
            run.unpaused.clear()  # its agents' holds are on record and survive the restart
        self._runs[team.id] = run
        self._tasks[team.id] = asyncio.get_running_loop().create_task(self._drive(run), name=f"team:{team.id}")

    async def _drive(self, run: TeamRun) -> None:
        team_id = run.team_id
        strategy = STRATEGY_RUNNERS[run.spec.strategy]
        status, extra = TeamStatus.FAILED, {}
        monitor: Agent | None = None
        # The monitor is one of the team's agents: it holds a place under maxAgents for as long as it runs.
        monitor_place = contextlib.AsyncExitStack()
        try:
            await run.load()
            if run.spec.monitor:
                await monitor_place.enter_async_context(run.cap.place())
                monitor = await self._monitor(run)
            started = progress.parse_time(run.noted("startedAt")) or self.plane.clock.now()
            left = None if run.spec.timeout is None else run.spec.timeout - _since(self.plane, started)
            async with asyncio.timeout(None if left is None else max(left, 0.0)):
                result = await strategy(run)
            status, extra = TeamStatus.COMPLETED, {"result": result}
        except StepFailed as exc:
            extra = {"error": exc.reason}
        except TimeoutError:
            extra = {"error": f"the team timed out after {run.spec.timeout:g} s"}
        except asyncio.CancelledError:
            raise  # stopped (server shutdown) or halted: the status is someone else's to set
        except GodelError as exc:
            extra = {"error": f"{exc.code}: {exc.message}"}
        except Exception as exc:
            log.exception("team strategy crashed", team=team_id)
            extra = {"error": f"internal error: {exc!r}"}
        finally:
            if self._tasks.get(team_id) is asyncio.current_task():
                self._tasks.pop(team_id, None)
                self._runs.pop(team_id, None)
        # The ending is work, not the strategy: ``stop`` waits for it rather than leave it running (or cancel it
        # halfway through recording the outcome).
        ending = asyncio.current_task()
        assert ending is not None  # a coroutine of a task (``_tasks``)
        self._ending.add(ending)
        try:
            if status == TeamStatus.FAILED:  # nothing of a failed team goes on running (and spending)
                await self._halt(team_id, reason=f"team failed: {extra.get('error')}", cancel=False, spare=monitor)
            if monitor is not None:
                extra |= await self._end_monitor(run, monitor)
            await monitor_place.aclose()
            with contextlib.suppress(TeamTransitionError, TeamNotFoundError):  # completed or deleted meanwhile
                await self._finish(team_id, status, extra, actor=run.actor)
        finally:
            self._ending.discard(ending)

    async def _finish(self, team_id: str, status: TeamStatus, extra: dict[str, Any], *, actor: str) -> Team:
        now = self.plane.clock.now()
        trigger = TeamTrigger.COMPLETE if status == TeamStatus.COMPLETED else TeamTrigger.FAIL
        cost = (await self.store.team_usage(team_id)).get("cost_usd")

        def decide(team: Team) -> TeamChange:
            move = TEAMS.plan(team.id, team.status, trigger)
            return TeamChange(
                changes={"status": move.to_state, "completed_at": now, "budget_consumed": float(cost or 0.0)},
                metadata={"run": {**run_state(team), **extra, "endedAt": now.isoformat()}},
                event=move.event,
                payload={k: v for k, v in extra.items() if k in ("error", "completedBy")},
            )

        team, _ = await self.store.change_team(team_id, decide, actor=actor)
        return team

    async def _halt(self, team_id: str, *, reason: str, cancel: bool = True, spare: Agent | None = None) -> None:
        """Stop the team's strategy (unless it is the caller) and kill its agents still running (but ``spare``)."""
        task = None
        if cancel:
            task = self._tasks.pop(team_id, None)
            self._runs.pop(team_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for agent in await team_agents(self.plane, team_id):
            if spare is not None and agent.id == spare.id:
                continue
            if not ended_for_good(agent) and agent.state != AgentState.FAILED:
                with contextlib.suppress(GodelError):
                    await self.plane.kill(agent.id, actor=_team_actor(team_id), reason=reason)

    async def _monitor(self, run: TeamRun) -> Agent:
        task = prompts.monitor(
            run.team.name, run.spec.strategy, run.spec.task or "; ".join(run.spec.tasks), run.team_id
        )
        return await run.launch("monitor", run.spec.role_of("monitor"), task, meta={"phase": "monitor"})

    async def _end_monitor(self, run: TeamRun, monitor: Agent) -> dict[str, Any]:
        agent = await self.plane.get(monitor.id)
        if not ended_for_good(agent):
            with contextlib.suppress(GodelError):
                agent = await self.plane.kill(agent.id, actor=run.actor, reason="the team ended")
        report = str((agent.outcome or {}).get("result") or "")
        return {"monitor": {"agentId": agent.id, "state": agent.state.value, "health": parse_health(report),
                            "report": report[:4000]}}  # fmt: skip


def _team_actor(team_id: str) -> str:
    return f"team:{team_id}"


def _since(plane: ControlPlane, at: datetime) -> float:
    return (plane.clock.now() - at).total_seconds()
