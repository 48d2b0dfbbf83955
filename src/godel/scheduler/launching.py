"""Launching a run: the workspace, the CLI's request and credentials, the session, the process, and the record
of its start, in an order a crash cannot corrupt.

1. ``admit`` (by the supervisor) → ``initializing``; the workspace is prepared → ``spawning`` (its place on record).
2. The CLI's request is built, its gateway key and API credential made, its Session committed: *while* the
   workspace is prepared (they need its path only), so the checkout is the only wait before the process starts.
3. The process starts, tagged with the session's id (``RUN_KEY``): the runtime records it with the process. Only
   after both 1 and 2 are committed.
4. The run is registered, then its start committed (``executing``).
A server that dies between 2 and 4 finds, after a restart, whether the launch of step 3 happened (``adoption``); one
that dies before 1's ``spawning`` is committed closes the session of 2 and queues the agent again."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import structlog

from godel.agents import get_adapter
from godel.core.models import Agent, Session
from godel.core.ports import RUN_KEY, AgentAdapter, LaunchRequest, LaunchSpec, RuntimeHandle, WorkspaceSpec
from godel.core.runs import RunContext
from godel.core.states import AgentState
from godel.core.transitions import Trigger
from godel.errors import AgentSpawnError, GodelError, InvalidTransitionError, NotFoundError
from godel.providers import resolve_endpoint
from godel.scheduler import aftercare
from godel.scheduler.deps import RunDeps
from godel.scheduler.handles import handle_fields, handle_of
from godel.scheduler.run import AgentRun

log = structlog.get_logger("godel.launch")


class RunRegistry(Protocol):
    """The supervisor's live runs, as launching and adoption see them."""

    def register(self, run: AgentRun) -> None: ...  # findable before its start is committed

    def forget(self, run: AgentRun) -> None: ...  # it never became live (killed or deleted mid-launch)

    async def started(self, run: AgentRun) -> None: ...  # its start is committed (a hold on it is applied)


def new_run(
    deps: RunDeps,
    agent: Agent,
    handle: RuntimeHandle,
    adapter: AgentAdapter,
    request: LaunchRequest | None,
    *,
    offsets: dict[str, int],
    starting: bool = False,
    fresh: bool = False,
    session_id: str | None = None,
    **output: object,
) -> AgentRun:
    """The in-memory run of ``agent``: a new launch (``fresh``: its clock starts now) or one re-adopted."""
    paused = agent.state == AgentState.PAUSED
    return AgentRun(
        agent_id=agent.id,
        team_id=agent.team_id,
        parser=adapter.parser(),
        deps=deps,
        handle=handle,
        adapter=adapter,
        request=request,
        offsets=offsets,
        started_at=deps.clock.now() if fresh else agent.started_at or deps.clock.now(),
        runtime_before=agent.runtime if paused else 0.0,
        timeout=agent.timeout or deps.settings.default_timeout,
        paused=paused,
        waiting=agent.state == AgentState.WAITING,
        recorded_waiting=agent.state == AgentState.WAITING,
        secrets=_secrets_of(request),
        starting=starting,
        session_id=session_id or RunContext.of(agent).session,
        **output,  # type: ignore[arg-type]
    )


def _secrets_of(request: LaunchRequest | None) -> tuple[str, ...]:
    """What the run knows that must never be stored: its provider key and the values of its spawn ``env``."""
    if request is None:
        return ()
    values = [request.endpoint.api_key if request.endpoint else None, *request.options.get("env", {}).values()]
    # A short value (e.g. "unused", "1") would redact ordinary text.
    return tuple(sorted({v for v in values if isinstance(v, str) and len(v) >= 8}, key=len, reverse=True))


async def launch(deps: RunDeps, agent: Agent, runs: RunRegistry) -> None:
    """Launch the next run of an admitted (``initializing``) agent."""
    handle = handle_of(agent, deps.runtime.name, deps.settings.worktrees_dir)
    has_workspace = bool(agent.worktree and Path(agent.worktree).exists())
    continuing = bool(RunContext.of(agent).resume)
    if has_workspace and not continuing:
        # A retry or restart: keep the previous attempt's uncommitted work as a snapshot, start clean.
        try:
            await deps.runtime.cleanup(handle)
        except GodelError as exc:
            await spawn_failed(deps, agent, exc)
            return
    adapter = get_adapter(agent.kind)
    # The run's request, credentials and Session need the workspace's path only, not the workspace: they are made
    # while the runtime checks it out (a git process of tens of milliseconds), not after it. The Session is still
    # committed before the process starts; a restart finding the agent ``initializing`` closes it (``adoption``).
    opening = asyncio.create_task(_open_run(deps, agent, handle, adapter), name=f"open run {agent.id}")
    if not (has_workspace and continuing):  # a follow-up continues in the workspace as the agent left it
        first_attempt = agent.retry_count == 0 and not agent.pid
        spec = WorkspaceSpec(
            agent_id=agent.id,
            repo=Path(agent.repo or "."),
            base_ref=agent.base_commit or agent.base_ref,
            branch=agent.branch,
            from_snapshot=agent.snapshot_from if first_attempt else None,
            setup=agent.setup,
        )
        try:
            handle = await deps.runtime.prepare(spec)
        except BaseException as exc:
            await _settled(opening)  # so that no key or session is made after spawn_failed revoked and closed them
            if not isinstance(exc, Exception):
                raise
            await spawn_failed(deps, agent, exc if isinstance(exc, GodelError) else _launch_error(agent, exc))
            return
    try:
        agent, _ = await deps.store.transition_agent(
            agent.id, Trigger.WORKTREE_CREATED, actor="supervisor", changes=handle_fields(handle)
        )
    except (InvalidTransitionError, NotFoundError):
        await _settled(opening)
        await _abandon_unstarted(deps, agent.id, handle)
        return
    try:
        request, spec_, session = await opening
        if request.workspace != handle.workspace:  # a runtime that placed the workspace elsewhere than predicted
            request = dataclasses.replace(request, workspace=handle.workspace)
            spec_ = await asyncio.to_thread(adapter.launch, request)
        handle.extra[RUN_KEY] = session.id
        handle = await deps.runtime.start(handle, spec_)
    except GodelError as exc:
        await spawn_failed(deps, agent, exc)
        return
    except Exception as exc:  # an adapter's bug or an OS error must fail the spawn, not leave it `spawning`
        await spawn_failed(deps, agent, _launch_error(agent, exc))
        return
    offsets = dict(handle.extra.get("log_offsets", {}))
    run = new_run(
        deps, agent, handle, adapter, request, offsets=offsets, starting=True, fresh=True, session_id=session.id
    )
    runs.register(run)  # before the start is committed: a pause or kill that sees the agent executing finds its run
    await start_or_abandon(runs, run, agent, session.id, model=request.endpoint.name if request.endpoint else None)


async def _open_run(
    deps: RunDeps, agent: Agent, handle: RuntimeHandle, adapter: AgentAdapter
) -> tuple[LaunchRequest, LaunchSpec, Session]:
    """The run's request (for the workspace at ``handle``), its gateway key and API credential, what the adapter
    launches, and its Session, committed: everything of a launch but the workspace and the process."""
    request = launch_request(deps, agent, handle, speaks=adapter.wire_apis)
    request = await deps.keys.through_gateway(agent, request)
    request = await deps.keys.with_api_credential(agent, request)
    for private in (request.config_dir, request.output_dir):  # the CLI's own, outside the workspace
        private.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Adapters may read files (a session to resume): off the event loop.
    spec = await asyncio.to_thread(adapter.launch, request)
    # The session names the launch: a server that dies from here on finds, after a restart, whether this very launch
    # started (``adoption.py``). One left open by a cut-off run is closed first.
    await deps.sessions.close_open(agent.id, "superseded: a new launch began")
    session = await deps.sessions.open(agent, request)
    return request, spec, session


async def _settled(task: asyncio.Task[tuple[LaunchRequest, LaunchSpec, Session]]) -> None:
    """Wait for ``task`` to end, whatever its outcome: the caller fails the launch for its own reason, and must not
    revoke the run's credentials or close its Session while they are still being made."""
    try:
        await asyncio.wait({task})
    finally:
        if not task.done():  # we were cancelled meanwhile: it stops too
            task.cancel()
    if not task.cancelled():
        task.exception()  # retrieved: its own failure, if any, is moot now


def _launch_error(agent: Agent, exc: BaseException) -> AgentSpawnError:
    log.error("launch failed", agent=agent.id, error=repr(exc), exc_info=exc)
    return AgentSpawnError(f"could not launch the {agent.kind} CLI: {exc!r}")


async def start_or_abandon(
    runs: RunRegistry, run: AgentRun, agent: Agent, session_id: str, *, model: str | None
) -> None:
    """Commit the run's start; if the agent was killed or deleted meanwhile, stop what was started (unless a
    kill has claimed the run and ends it itself)."""
    if await run.record_start(agent, session_id, model=model):
        await runs.started(run)
        return
    if run.claim():
        runs.forget(run)
        await run.abandon()
        run.done.set()


async def spawn_failed(deps: RunDeps, agent: Agent, exc: GodelError) -> None:
    log.warning("spawn failed", agent=agent.id, error=exc.message)
    await deps.keys.revoke(agent.id)  # a key may have been made (and written to its config) already
    await deps.sessions.close_open(agent.id, f"spawn failed: {exc.message}")
    try:
        agent, _ = await deps.store.transition_agent(
            agent.id,
            Trigger.SPAWN_ERROR,
            actor="supervisor",
            reason=exc.message,
            changes={"last_error": exc.message},
            payload={"code": exc.code, "details": exc.details},
        )
    except (InvalidTransitionError, NotFoundError):
        return
    await aftercare.after_failure(deps, agent)


async def _abandon_unstarted(deps: RunDeps, agent_id: str, handle: RuntimeHandle) -> None:
    """Killed or deleted while its workspace was being prepared: nothing ran; take the workspace back."""
    await deps.keys.revoke(agent_id)
    await deps.sessions.close_open(agent_id, "killed or deleted while it was being spawned")
    try:
        agent = await deps.store.update_agent(agent_id, handle_fields(handle))
    except NotFoundError:
        await deps.runtime.cleanup(handle)  # deleted: nothing will ever look at this workspace again
        return
    await aftercare.apply_cleanup(deps, agent, handle)


def launch_request(
    deps: RunDeps, agent: Agent, handle: RuntimeHandle, *, speaks: Sequence[str] = (), endpoint: bool = True
) -> LaunchRequest:
    """What the next run of ``agent`` is launched with. ``speaks``: the adapter's wire APIs, checked against
    the provider's kind of the moment (the configuration may have changed since the spawn). ``endpoint=False``
    leaves the endpoint out (re-adopting a run only needs the rest, and the key may no longer be at hand)."""
    ctx = RunContext.of(agent)
    resolved = None
    if ctx.model and endpoint:
        name = ctx.model
        resolved = resolve_endpoint(name, deps.settings.providers)
        if speaks and resolved.kind not in speaks:
            raise AgentSpawnError(
                f"{name} is now served by a provider of kind {resolved.kind}, which the {agent.kind} CLI does not "
                f"speak ({' / '.join(speaks)}); the configuration changed since the agent was spawned"
            )
    options = agent.config
    if options.get("env"):  # the one place a spawn's sealed env values are opened: for the process, never stored
        options = {**options, "env": deps.secrets.open_values(options["env"])}
    return LaunchRequest(
        agent_id=agent.id,
        task=ctx.task_for(agent.task),
        model=agent.model,
        workspace=handle.workspace,
        config_dir=deps.settings.home / "run" / agent.id / "config",
        options=options,
        endpoint=resolved,
        tools_dir=deps.settings.agents_dir,
        cli_retries=deps.settings.agent_cli_retries,
        resume_session=ctx.resume,
    )
