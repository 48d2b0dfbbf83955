"""The control plane: the service every front end (REST, WebSocket, later teams and workflows) calls.

It composes the store, the bus, the runtime and the supervisor, validates requests before anything is
created, and carries out user commands (kill, pause, resume, restart, delete, snapshot, restore, fork). All
state changes go through ``Store.transition_agent``; all events reach subscribers through the bus after
commit. ``start``/``stop`` own the server's background loops (see ``TaskSupervisor``).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import structlog

from godel.agents import get_adapter
from godel.auth.service import AuthService
from godel.auth.tokens import TokenSigner, load_or_create_key
from godel.bus import MemoryBus
from godel.core.clock import SystemClock
from godel.core.events import Event, EventFilter, make_event
from godel.core.ids import branch_for, new_id
from godel.core.limits import ResourceLimits
from godel.core.models import Agent, Node, Team
from godel.core.ports import AgentAdapter, AgentQuery, Clock, EventQuery, Page, Runtime
from godel.core.runs import RunContext
from godel.core.states import ACTIVE, AgentState, AgentStatus, NodeStatus, states_with_status
from godel.core.transitions import Trigger, plan
from godel.errors import (
    ConflictError,
    FieldError,
    GodelError,
    InvalidTransitionError,
    NotFoundError,
    PathOutsideWorkspaceError,
    ValidationError,
)
from godel.gateway.forward import UpstreamClient
from godel.gateway.policies import AuditLog, CircuitBreaker, ResponseCache
from godel.gateway.service import Gateway, load_policy
from godel.gateway.shared import RedisState
from godel.providers import resolve_route
from godel.runtimes import runtime_for
from godel.runtimes.git import resolve_in_repo
from godel.runtimes.paths import user_path, within_roots
from godel.runtimes.routing import Runtimes
from godel.runtimes.worktrees import INCLUDE_FILE, include_escapes
from godel.scheduler.adoption import reconcile_on_start
from godel.scheduler.budgeting import BudgetActions
from godel.scheduler.handles import handle_of
from godel.scheduler.isolation import SANDBOX, choose, hold_to_parent
from godel.scheduler.requests import LIMIT_KEYS, LIMITS_KEY, SpawnRequest, adapter_options, effective_limits
from godel.scheduler.run import RESTART_RESET
from godel.scheduler.supervisor import Supervisor
from godel.scheduler.tasks import TaskSupervisor
from godel.scheduler.waiting import EndWaiter
from godel.scheduler.workspaces import WorkspaceCommands
from godel.settings import Settings
from godel.store import SqlStore, open_store
from godel.store.secrets import SecretBox, private_dir
from godel.tasks import TaskQueue

log = structlog.get_logger("godel.plane")

_UNSTARTED = (AgentState.INITIALIZING, AgentState.SPAWNING)  # admitted, its process not started yet


def _pricer(settings: Settings) -> Any:
    from godel.gateway.pricing import Pricer, price_overrides

    return Pricer(price_overrides(settings.prices))


def _warm_prices(pricer: Any) -> None:
    if pricer is not None:
        pricer.cost(provider_kind="openai-chat", provider_name="openai", model="gpt-4o", input_tokens=1,
                    output_tokens=1, cached_tokens=0)  # fmt: skip


class ControlPlane:
    def __init__(
        self,
        settings: Settings,
        *,
        store: SqlStore | None = None,
        runtime: Runtime | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        # The concrete store: the one place that hands each part its narrow port of it (core.ports.Store to the
        # supervisor, TaskStorePort to the queue, ...), each checked by mypy against what SqlStore has.
        self.store: SqlStore = store or open_store(
            settings.resolved_database_url, sqlite_synchronous=settings.sqlite_synchronous, clock=self.clock
        )
        self.bus = MemoryBus()
        # The server's runtimes: the default (settings.runtime, or the one given) and those a spawn may name
        # (settings.runtimes), each built on first use; every call on an agent goes to the agent's own.
        self.runtimes = Runtimes(
            runtime or runtime_for(settings), enabled=settings.runtimes, build=lambda name: runtime_for(settings, name)
        )
        self.runtime: Runtime = self.runtimes
        self.node = Node(
            id=str(uuid.uuid5(uuid.NAMESPACE_DNS, f"godel-node.{settings.node_name}")),
            name=settings.node_name,
            hostname=settings.node_name,
            max_agents=settings.max_concurrent_agents,
        )
        # One pooled client for every proxied request; generous read timeout: a model may think for minutes.
        gateway_http = UpstreamClient(read_timeout=settings.gateway_read_timeout)
        self.gateway_http = gateway_http
        self.gateway = Gateway(
            self.store, settings.providers, clock=self.clock, pricer=_pricer(settings),
            rate_limits=settings.rate_limits,
            breaker=CircuitBreaker(settings.gateway_breaker_failures, settings.gateway_breaker_reset),
            audit=AuditLog(settings.home / "audit") if settings.gateway_audit_bodies else None,
            redact=settings.gateway_redact_pii,
            cache=ResponseCache(settings.gateway_cache_seconds) if settings.gateway_cache_seconds > 0 else None,
            http=gateway_http, extra_policies=[load_policy(path) for path in settings.gateway_policies],
            shared=RedisState(settings.redis_url) if settings.redis_url else None,
        )  # fmt: skip
        # Who may call the API: identities, credentials, the agents' own run credentials (godel.auth).
        private_dir(settings.home)
        self.secrets = SecretBox.for_settings(settings)  # what the store keeps sealed: spawn env, webhook secrets
        self.auth = AuthService(
            store=self.store, clock=self.clock, enabled=settings.auth_enabled,
            signer=TokenSigner(load_or_create_key(settings.jwt_secret_file or settings.home / "jwt.key")),
            access_ttl=settings.access_token_ttl, refresh_ttl=settings.refresh_token_ttl,
        )  # fmt: skip
        self.supervisor = Supervisor(
            store=self.store, runtime=self.runtime, settings=settings, clock=self.clock, node_id=self.node.id,
            gateway=self.gateway, auth=self.auth if settings.auth_enabled else None, secrets=self.secrets,
        )  # fmt: skip
        # What the gateway's budgets do to agents: pause them, hold a request, record events.
        self.budgets = BudgetActions(
            store=self.store, gateway=self.gateway, bus=self.bus, clock=self.clock, settings=settings,
            runs=self.supervisor.runs, pause=self.pause,
        )  # fmt: skip
        self.gateway.budgets.listen(self.budgets)
        # Snapshots of an agent's working tree, restore, fork, and its sessions.
        self.workspaces = WorkspaceCommands(
            store=self.store, runtime=self.runtime, settings=settings, sessions=self.supervisor.deps.sessions,
            spawn=self.spawn, validate=self.validate_spawn,
        )  # fmt: skip
        self.tasks = TaskSupervisor()
        self.task_queue = TaskQueue(self.store, self.bus, clock=self.clock)  # /api/v1/tasks (godel.tasks)
        self.waiter = EndWaiter(self.store, self.bus)
        self.started_at = self.clock.now()
        self.reconcile_report: dict[str, int] = {}

    # -------------------------------------------------------------------------------------------- lifecycle

    async def start(self, *, background: bool = True) -> None:
        self.settings.home.mkdir(parents=True, exist_ok=True)
        await self.store.migrate()
        self.bus.attach(self.store)
        await self.task_queue.start()
        self.node.status = NodeStatus.ONLINE
        self.node.last_heartbeat = self.clock.now()
        await self.store.upsert_node(self.node)
        # genai-prices loads its table on first use (~0.5 s): here, off the loop, not in the first proxied request.
        await asyncio.to_thread(_warm_prices, self.gateway.pricer)
        self.waiter.start()
        caps = self.runtime.capabilities()
        unenforced = [k for k in self.settings.agent_limits.kinds() if k not in caps.resource_limits]
        if unenforced:  # every spawn will be refused (limits fail closed): say so now, not at the first spawn
            log.error("default resource limits cannot be enforced: every spawn will be refused", runtime=caps.name,
                      missing=unenforced, enforced=list(caps.resource_limits))  # fmt: skip
        self.reconcile_report = await reconcile_on_start(self.supervisor.deps, self.supervisor)
        log.info("reconciled", **self.reconcile_report)
        if background:
            # Order matters for shutdown (reverse): stop admitting first, then stop watching.
            self.tasks.start("watch", self.supervisor.watch_loop, why="ingest output, notice exits and timeouts")
            self.tasks.start("admission", self.supervisor.admission_loop, why="admit pending agents by priority")

    async def stop(self) -> None:
        await self.waiter.stop()
        await self.tasks.stop()
        await self.task_queue.stop()
        if self.settings.on_shutdown == "terminate":
            # All at once: each kill may wait out the grace period, and there may be a thousand of them.
            ids = list(self.supervisor.runs)
            reason = "server shutdown (on_shutdown=terminate)"
            results = await asyncio.gather(
                *(self.kill(agent_id, actor="server", reason=reason) for agent_id in ids), return_exceptions=True
            )
            for agent_id, result in zip(ids, results, strict=True):
                if isinstance(result, BaseException):
                    log.error("could not terminate agent at shutdown", agent=agent_id, error=repr(result))
        else:
            # Commit the output read so far; the processes keep running and are re-adopted on next start.
            await self.supervisor.tick()
        await self.supervisor.drain()
        self.node.status = NodeStatus.OFFLINE
        await self.store.upsert_node(self.node)
        self.bus.close()
        await self.gateway_http.aclose()
        await self.gateway.shared.close()
        await self.store.close()

    # ------------------------------------------------------------------------------------------------ spawn

    async def spawn(self, req: SpawnRequest, *, actor: str = "api") -> Agent:
        team = await self._team(req.team_id) if req.team_id else None
        if team is not None and req.team_limits is None:  # a team's resourceLimits are the defaults of its agents
            limits = team.config.get("resourceLimits")
            req.team_limits = dict(limits) if isinstance(limits, dict) else None
        adapter, options, context = self.validate_spawn(req)
        roots = self.settings.repo_roots
        path = within_roots(user_path(req.repo), roots)
        repo, base_commit = await resolve_in_repo(path, req.base_ref, field="baseRef")
        within_roots(repo, roots)  # the repository's top, not only the folder named, is inside a root
        escapes = await include_escapes(repo, base_commit)
        if escapes:  # the checkout would carry a symlink that .worktreeinclude copies write through
            why = f"{INCLUDE_FILE} names files under {', '.join(escapes[:5])}, a symlink in {req.base_ref}"
            raise PathOutsideWorkspaceError(f"refused: {why}", [FieldError("baseRef", why)])
        options[SANDBOX] = choose(
            options, team.config if team else None, self.runtimes, list(self.settings.runtime_fallback)
        )
        limits = self.limits_for(req, options[SANDBOX]["runtime"])  # enforceable where it will run
        parent = req.metadata.get("parentAgent")
        if isinstance(parent, str):  # spawned by an agent's own credential: held to what confines its parent
            hold_to_parent(await self.store.get_agent(parent), options[SANDBOX], str(repo), self.runtimes.default.name)
        if options.get("env"):  # sealed before the row is written; opened only to launch (runs.launch_request)
            options["env"] = self.secrets.seal_values(options["env"])
        agent_id = new_id()
        agent = Agent(
            id=agent_id,
            task=req.task,
            model=req.model,
            label=req.label,
            team_id=req.team_id,
            kind=adapter.name,
            config=options,
            repo=str(repo),
            base_ref=req.base_ref,
            base_commit=base_commit,
            branch=branch_for(agent_id),
            snapshot_from=req.snapshot_from,
            runtime_name=options[SANDBOX]["runtime"],
            setup=req.setup,
            cleanup=req.cleanup,
            cleanup_delay=req.cleanup_delay,
            priority=req.priority,
            timeout=req.timeout,
            max_retries=req.max_retries,
            budget_limit=req.budget_limit,
            spawned_at=self.clock.now(),
            metadata={
                **{k: v for k, v in req.metadata.items() if k != LIMITS_KEY},
                **({"allowSubagents": True} if req.allow_subagents else {}),
                **({LIMITS_KEY: limits.to_json()} if limits else {}),  # what every run of it is held to
            },
            context=context or None,
            owner=req.owner,
        )
        # Admitted at once when a slot is free, unless a budget is to be set on it first (it must bind its first call).
        agent = await self.supervisor.create(agent, actor=actor, admit=not req.budget_limit)
        if req.budget_limit:  # the spec's budgetLimit: a total budget on the agent, enforced at the gateway
            await self.budgets.set("agent", agent.id, req.budget_limit, "total")
            self.supervisor.wake.set()
        return agent

    def validate_spawn(self, req: SpawnRequest) -> tuple[AgentAdapter, dict[str, Any], dict[str, Any]]:
        """Everything about a spawn request that can be refused without touching the repository: the agent kind,
        its options, the model's route and the CLI's presence. Returns the adapter, options and run context."""
        problems = req.problems()  # bounds, NULs, env names: every caller's request, before anything is created
        if problems:
            raise ValidationError(f"invalid spawn request: {problems[0].field}: {problems[0].message}", problems)
        self.limits_for(req)  # limits the runtime cannot enforce here are refused, not dropped
        try:
            adapter = get_adapter(req.agent)
        except ValidationError as exc:
            raise type(exc)(exc.message, [FieldError("agent", exc.message)]) from exc
        options = {**req.config}
        if req.command is not None:
            options["command"] = req.command
        if req.env:
            options["env"] = dict(req.env)
        adapter.validate(adapter_options(options))
        context = RunContext()
        if adapter.wire_apis:
            if not req.model:
                raise ValidationError(
                    f"the {adapter.name} agent needs a model: PROVIDER/MODEL from the [providers] of godel.toml",
                    [FieldError("model", "required for this agent, as PROVIDER/MODEL")],
                )
            route = resolve_route(
                req.model,
                agent=adapter.name,
                speaks=adapter.wire_apis,
                providers=self.settings.providers,
                fallbacks=self.settings.fallbacks,
            )
            context = RunContext(route=tuple(route.names), skipped_fallbacks=tuple(route.skipped or ()))
        adapter.locate(self.settings.agents_dir, adapter_options(options))
        if req.prompt_context:
            context = context.replace(preamble=req.prompt_context)
        return adapter, options, context.to_json()

    def limits_for(self, req: SpawnRequest, runtime: str | None = None) -> ResourceLimits:
        """The limits the request's agent runs under (request, team, server), enforceable by its runtime (``runtime``,
        else its config's, else the default). One not offered or buildable here is not asked: every runtime refuses
        at start a limit it cannot enforce."""
        section = req.config.get(SANDBOX)
        named = section.get("runtime") if isinstance(section, dict) else None
        name = runtime or (named if isinstance(named, str) else None) or self.runtimes.default.name
        try:
            caps = self.runtimes.for_new(name).capabilities()
        except GodelError:
            return effective_limits(req, self.settings.agent_limits, tuple(LIMIT_KEYS), name)
        return effective_limits(req, self.settings.agent_limits, caps.resource_limits, caps.name)

    async def _team(self, team_id: str) -> Team | None:
        try:
            return await self.store.read_team(team_id)
        except NotFoundError:
            return None

    # --------------------------------------------------------------------------------------------- queries

    async def wait_for_end(self, agent_id: str, *, timeout: float | None = None) -> Agent:
        """The agent once it has ended for good: completed, killed, or failed with no retry left."""
        return await self.waiter.wait(agent_id, timeout)

    async def get(self, agent_id: str) -> Agent:
        return await self.store.get_agent(agent_id)

    async def list_agents(self, query: AgentQuery) -> Page[Agent]:
        return await self.store.list_agents(query)

    async def counts(self) -> dict[str, int]:
        return {status.value: await self.store.count_agents(states_with_status(status)) for status in AgentStatus}

    async def logs(self, agent_id: str, *, tail: int = 100, stream: str | None = None) -> list[Event]:
        """The last ``tail`` output lines (optionally of one stream), oldest first."""
        await self.store.get_agent(agent_id)
        flt = EventFilter(patterns=("agent:log",), agent_id=agent_id)
        out: list[Event] = []
        until: int | None = None
        page_size = max(tail, 200)
        while len(out) < tail:  # newest first, page by page, until enough lines of the stream are found
            page = await self.store.query_events(EventQuery(filter=flt, descending=True, limit=page_size, until=until))
            out.extend(e for e in page if stream is None or e.payload.get("stream") == stream)
            if len(page) < page_size:
                break
            until = page[-1].sequence
        return list(reversed(out[:tail]))

    async def transitions(self, agent_id: str) -> list[Any]:
        await self.store.get_agent(agent_id)
        return await self.store.transitions(agent_id)

    async def diff(self, agent_id: str) -> dict[str, Any]:
        agent = await self.store.get_agent(agent_id)
        if agent.base_commit is None:
            raise ConflictError("the agent has no workspace yet", details={"state": agent.state.value})
        diff = await self.runtime.diff(self._handle(agent))
        return {"diff": diff, "baseCommit": agent.base_commit, "branch": agent.branch}

    def _handle(self, agent: Agent) -> Any:
        return handle_of(agent, self.runtime.name, self.settings.worktrees_dir)

    # -------------------------------------------------------------------------------------------- commands

    async def kill(self, agent_id: str, *, actor: str = "api", reason: str | None = None) -> Agent:
        return await self._stop(agent_id, Trigger.KILL, actor=actor, reason=reason or "killed on request")

    async def restart(self, agent_id: str, *, actor: str = "api", reason: str | None = None) -> Agent:
        agent = await self.store.get_agent(agent_id)
        if agent.state in (AgentState.INITIALIZING, AgentState.SPAWNING, AgentState.COMPLETING):
            raise ConflictError(
                f"agent {agent_id} is {agent.state.value}; restart it once that step is over",
                details={"currentState": agent.state.value},
            )
        agent = await self._stop(agent_id, Trigger.RESTART, actor=actor, reason=reason or "restarted on request")
        self.supervisor.wake.set()
        return agent

    async def _stop(self, agent_id: str, trigger: Trigger, *, actor: str, reason: str) -> Agent:
        """Kill or restart: end the run if one is live (ingesting all its output), then record the move."""
        agent = await self.store.get_agent(agent_id)
        plan(agent_id, agent.state, trigger)  # 409 before touching anything
        if trigger == Trigger.RESTART:  # a launch a kill is still stopping must end before the row is queued again
            await self.supervisor.stop_launch(agent_id)
        run = self.supervisor.runs.get(agent_id)
        raced = False
        if run is not None:
            ended = await self.supervisor.end_run(run, stop=trigger, actor=actor, reason=reason)
            if ended is not None:
                return ended
            # It was ending on its own (exit, timeout) and now has: act on what that left.
            raced = True
        changes: dict[str, Any] = (
            {**RESTART_RESET, "context": RunContext.of(agent).fresh().to_json() or None}
            if trigger == Trigger.RESTART
            else {"completed_at": self.clock.now()}
        )
        try:
            agent, _ = await self.store.transition_agent(agent_id, trigger, actor=actor, reason=reason, changes=changes)
        except InvalidTransitionError:
            if not (raced and trigger == Trigger.KILL):
                raise
            # The kill waited for a run that ended for good on its own meanwhile: what it asked for is so.
            return await self.store.get_agent(agent_id)
        if trigger == Trigger.KILL and agent_id in self.supervisor.launches:
            # Killed while being launched (a spawn is admitted, and its checkout begun, before it answers): the
            # launch is stopped and waited for, so the kill returns with the workspace, branch, credential and
            # Session it made taken back, and a restart that follows meets no launch of the old row.
            await self.supervisor.stop_launch(agent_id)
            agent = await self.store.get_agent(agent_id)
        self.supervisor.wake.set()
        return agent

    async def pause(self, agent_id: str, *, actor: str = "api", reason: str | None = None) -> Agent:
        return await self.supervisor.pause(agent_id, actor=actor, reason=reason)

    async def resume(self, agent_id: str, *, actor: str = "api", reason: str | None = None) -> Agent:
        return await self.supervisor.resume(agent_id, actor=actor, reason=reason)

    async def hold(self, agent_id: str, *, by: str, reason: str) -> None:
        """A group (a team, a workflow) wants the agent paused while it is: desired state on the agent, applied now
        if it runs, else by the supervisor the moment its run starts. Idempotent."""
        await self.supervisor.hold(agent_id, by=by, reason=reason)

    async def release(self, agent_id: str, *, by: str, reason: str) -> None:
        """The group's hold ends: the agent is resumed if that hold paused it."""
        await self.supervisor.release(agent_id, by=by, reason=reason)

    async def continue_agent(self, agent_id: str, message: str, *, actor: str = "api") -> Agent:
        """Continue an ended agent's CLI session with a follow-up message, in the same workspace and branch."""
        if not message.strip():
            raise ValidationError("a follow-up message is required", [FieldError("message", "must not be empty")])
        agent = await self.store.get_agent(agent_id)
        adapter = get_adapter(agent.kind)
        if not adapter.resumable:
            raise ConflictError(
                f"the {agent.kind} CLI cannot continue a session; fork the agent with a new task instead",
                details={"agent": agent.kind},
            )
        plan(agent_id, agent.state, Trigger.CONTINUE)  # 409 while it runs
        ctx = RunContext.of(agent)
        native = ctx.native_session
        if not native:
            raise ConflictError(
                f"agent {agent_id} has no {agent.kind} session to continue (its CLI never reported one)",
                details={"currentState": agent.state.value},
            )
        adapter.locate(self.settings.agents_dir, adapter_options(agent.config))
        follow_up = ctx.replace(prompt=message, resume=native, depth=ctx.depth + 1)  # one follow-up deeper
        changes = {**RESTART_RESET, "context": follow_up.to_json()}
        await self.supervisor.stop_launch(agent_id)  # as for a restart: no launch of the old row meets the next
        agent, _ = await self.store.transition_agent(
            agent_id, Trigger.CONTINUE, actor=actor, reason="follow-up message",
            changes=changes, payload={"message": message, "resumes": native},
        )  # fmt: skip
        self.supervisor.wake.set()
        return agent

    async def delete(self, agent_id: str, *, force: bool = False, actor: str = "api") -> None:
        agent = await self.store.get_agent(agent_id)
        if agent.state in ACTIVE:
            # An agent whose process has not started is as good as queued: a spawn admits it (and begins its
            # checkout) before answering ``pending``, and a queued agent is deleted without force. Its launch is
            # stopped by the kill, and what it made taken back; nothing ran, so no work is lost.
            unstarted = agent.state in _UNSTARTED and agent_id not in self.supervisor.runs
            if not (force or unstarted):
                raise ConflictError(
                    f"agent {agent_id} is {agent.state.value}; kill it first or delete with force=true",
                    details={"currentState": agent.state.value},
                )
            reason = "deleted with force" if force else "deleted before its run started"
            agent = await self.kill(agent_id, actor=actor, reason=reason)
        if agent.worktree and Path(agent.worktree).exists():
            await self.runtime.cleanup(self._handle(agent))
        await self.store.delete_agent(agent_id, actor=actor)

    # ---------------------------------------------------------------------------------------------- events

    async def publish(
        self, type_: str, payload: dict[str, Any], metadata: dict[str, Any], *, actor: str = "api"
    ) -> Event:
        md = {k: metadata.get(k) for k in ("agentId", "teamId", "workflowId", "correlationId", "causationId")}
        event = make_event(
            type_,
            payload,
            component=actor,
            agent_id=md["agentId"],
            team_id=md["teamId"],
            workflow_id=md["workflowId"],
            correlation_id=md["correlationId"],
            causation_id=md["causationId"],
        )
        (stored,) = await self.store.append_events([event])
        return stored

    async def events(self, query: EventQuery) -> list[Event]:
        return await self.store.query_events(query)
