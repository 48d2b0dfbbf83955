"""Launching a run: the workspace, the CLI's request and credentials, the session, the process, and the record
of its start, in an order a crash cannot corrupt.

1. ``admit`` (by the supervisor) → ``initializing``; the workspace is prepared → ``spawning`` (its place on record).
2. The CLI's request is built, its gateway key and API credential made, its Session committed: *while* the
   workspace is prepared (they need its path only), so the checkout is the only wait before the process starts.
3. The process starts, tagged with the session's id (``RUN_KEY``): the runtime records it with the process. Only
   after both 1 and 2 are committed.
4. The run is registered, then its start committed (``executing``).
A server that dies between 2 and 4 finds, after a restart, whether the launch of step 3 happened (``adoption``); one
that dies before 1's ``spawning`` is committed closes the session of 2 and queues the agent again.
A launch that fails takes back the credentials and Session it made (and only those); one killed or deleted before
its process started (``Launch.stop``) also takes back its workspace, and the branch its checkout created."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog

from godel.agents import get_adapter
from godel.core.events import make_event
from godel.core.limits import ResourceLimits
from godel.core.models import Agent, Session
from godel.core.ports import RUN_KEY, AgentAdapter, LaunchRequest, LaunchSpec, RuntimeHandle, WorkspaceSpec
from godel.core.runs import RunContext
from godel.core.states import AgentState
from godel.core.transitions import Trigger
from godel.errors import AgentSpawnError, GodelError, InvalidTransitionError, NotFoundError
from godel.providers import resolve_endpoint
from godel.scheduler import aftercare
from godel.scheduler.deps import RunDeps
from godel.scheduler.handles import handle_fields, handle_of, with_choice
from godel.scheduler.isolation import fallback_payload, next_runtime
from godel.scheduler.keys import LaunchCredentials
from godel.scheduler.requests import LIMITS_KEY, adapter_options
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


@dataclass(eq=False)
class Launch:
    """One launch in flight, as a kill, delete or restart of its agent sees it (``Supervisor.stop_launch``).
    Stopping it cancels its checkout, the one step that may take long (a setup command); the stopper then waits for
    the launch to end. A launch that outlived the row's move could meet the agent's next launch and take back that
    one's workspace, credential or session, or commit its own steps on the next launch's row."""

    agent_id: str
    task: asyncio.Task[None] | None = None
    checkout: asyncio.Task[RuntimeHandle] | None = None
    stopped: bool = False

    def stop(self) -> None:
        self.stopped = True
        if self.checkout is not None:
            self.checkout.cancel()  # a no-op once it has finished: the launch then finds the row moved


@dataclass
class _Opened:
    """What this launch's opening has made so far: what the launch takes back when it fails, and only that."""

    credentials: LaunchCredentials = field(default_factory=LaunchCredentials)
    session: str | None = None


async def launch(deps: RunDeps, agent: Agent, runs: RunRegistry, control: Launch | None = None) -> None:
    """Launch the next run of an admitted (``initializing``) agent."""
    control = control or Launch(agent.id)
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
    opened = _Opened()
    opening = asyncio.create_task(_open_run(deps, agent, handle, adapter, opened), name=f"open run {agent.id}")
    try:
        in_place = has_workspace and continuing  # a follow-up continues in the workspace as the agent left it
        started = await _prepare_and_start(deps, agent, handle, adapter, control, opening, opened, in_place=in_place)
    except BaseException:
        # Cut off by the unexpected (a store error at a transition, a bug, a cancellation): what the opening made is
        # taken back once it has ended (else a credential and a Session would be made after this, and stay live for
        # as long as the server runs). The row stays as it is: a restart requeues it (``adoption``).
        await _settled(opening)
        await _take_back(deps, agent.id, opened, "the launch failed")
        raise
    if started is None:
        return
    agent, handle, request, session = started
    offsets = dict(handle.extra.get("log_offsets", {}))
    run = new_run(
        deps, agent, handle, adapter, request, offsets=offsets, starting=True, fresh=True, session_id=session.id
    )
    runs.register(run)  # before the start is committed: a pause or kill that sees the agent executing finds its run
    await start_or_abandon(runs, run, agent, session.id, model=request.endpoint.name if request.endpoint else None)


async def _prepare_and_start(
    deps: RunDeps,
    agent: Agent,
    handle: RuntimeHandle,
    adapter: AgentAdapter,
    control: Launch,
    opening: asyncio.Task[tuple[LaunchRequest, LaunchSpec, Session]],
    opened: _Opened,
    *,
    in_place: bool,
) -> tuple[Agent, RuntimeHandle, LaunchRequest, Session] | None:
    """The workspace, its record (``spawning``) and the process. None: the launch failed or was stopped, and has
    settled its account (the spawn failed; or the workspace and what the opening made were taken back). A runtime
    that cannot serve hands the launch to the next runtime of the agent's chain (``isolation``)."""
    recorded = False  # the workspace's place is on record (``spawning``)
    while True:
        if not in_place:
            outcome = await _checkout(deps, agent, handle, control)
            if outcome is None:  # stopped (killed, deleted) while the workspace was being made: nothing ran
                await _settled(opening)
                await _take_back(deps, agent.id, opened, "killed or deleted while it was being spawned")
                return None
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    await _settled(opening)
                    raise outcome
                moved = await _fall_back(deps, agent, handle.runtime, outcome)
                if moved is not None:
                    agent, handle = moved
                    continue
                await _settled(opening)  # so that no key or session is made after spawn_failed revoked and closed them
                error = outcome if isinstance(outcome, GodelError) else _launch_error(agent, outcome)
                await spawn_failed(deps, agent, error, opened)
                return None
            handle = dataclasses.replace(outcome, extra=with_choice(dict(outcome.extra), agent))
        changes = {**handle_fields(handle), "runtime_name": handle.runtime}
        try:
            if recorded:  # a fallback's workspace, after the first runtime's was recorded and taken back
                agent = await deps.store.update_agent(agent.id, changes)
            else:
                agent, _ = await deps.store.transition_agent(
                    agent.id, Trigger.WORKTREE_CREATED, actor="supervisor", changes=changes
                )
                recorded = True
        except (InvalidTransitionError, NotFoundError):
            await _settled(opening)
            await _abandon_unstarted(deps, agent.id, handle, opened, prepared=not in_place)
            return None
        try:
            request, spec_, session = await opening
            if request.workspace != handle.workspace:  # a runtime that placed the workspace elsewhere than predicted
                request = dataclasses.replace(request, workspace=handle.workspace)
                spec_ = await asyncio.to_thread(adapter.launch, request)
            handle.extra[RUN_KEY] = session.id
            spec_ = dataclasses.replace(spec_, egress=deps.keys.egress_credential(agent.id), limits=limits_of(agent))
            handle = await deps.runtime.start(handle, spec_)
        except GodelError as exc:
            moved = None if in_place else await _fall_back(deps, agent, handle.runtime, exc)
            if moved is not None:
                await deps.runtime.discard(handle)  # nothing ran in it
                agent, handle = moved
                continue
            await spawn_failed(deps, agent, exc, opened)
            return None
        except Exception as exc:  # an adapter's bug or an OS error must fail the spawn, not leave it `spawning`
            await spawn_failed(deps, agent, _launch_error(agent, exc), opened)
            return None
        return agent, handle, request, session


async def _checkout(
    deps: RunDeps, agent: Agent, handle: RuntimeHandle, control: Launch
) -> RuntimeHandle | BaseException | None:
    """Prepare the agent's workspace in the runtime ``handle`` names: the handle, the failure, or None when the
    launch was stopped meanwhile (the runtime rolled back what it had made)."""
    first_attempt = agent.retry_count == 0 and not agent.pid
    spec = WorkspaceSpec(
        agent_id=agent.id,
        repo=Path(agent.repo or "."),
        base_ref=agent.base_commit or agent.base_ref,
        branch=agent.branch,
        from_snapshot=agent.snapshot_from if first_attempt else None,
        setup=agent.setup,
        runtime=handle.runtime,
    )
    # In a task of its own, so that a stop cancels the checkout and nothing else (the runtime rolls back what it had
    # made); the launch goes on to settle its account.
    checkout = asyncio.create_task(deps.runtime.prepare(spec), name=f"checkout {agent.id}")
    control.checkout = checkout
    if control.stopped:
        checkout.cancel()
    try:
        await asyncio.wait({checkout})
    finally:
        control.checkout = None
        if not checkout.done():  # the launch itself is cancelled: so is its checkout, rolled back before we go
            checkout.cancel()
            await asyncio.wait({checkout})
    if checkout.cancelled():
        return None
    return checkout.exception() or checkout.result()


async def _fall_back(
    deps: RunDeps, agent: Agent, current: str, exc: BaseException
) -> tuple[Agent, RuntimeHandle] | None:
    """Move the agent to the next runtime of its chain after ``current`` failed with ``exc`` (an
    ``agent:runtime:fallback`` event, and the agent's ``runtime_name``); None when there is no next one."""
    nxt = next_runtime(agent, current, exc, deps.runtime.name)
    if nxt is None or not isinstance(exc, GodelError):
        return None
    log.warning("runtime fallback", agent=agent.id, failed=current, next=nxt, error=exc.message)
    event = make_event(
        "agent:runtime:fallback", fallback_payload(current, nxt, exc), component="supervisor", agent_id=agent.id,
        team_id=agent.team_id,
    )  # fmt: skip
    await deps.store.append_events([event], agent_changes={agent.id: {"runtime_name": nxt}})
    agent = dataclasses.replace(agent, runtime_name=nxt)
    return agent, handle_of(agent, deps.runtime.name, deps.settings.worktrees_dir)


async def _open_run(
    deps: RunDeps, agent: Agent, handle: RuntimeHandle, adapter: AgentAdapter, opened: _Opened
) -> tuple[LaunchRequest, LaunchSpec, Session]:
    """The run's request (for the workspace at ``handle``), its gateway key and API credential, what the adapter
    launches, and its Session, committed: everything of a launch but the workspace and the process. What it makes
    is noted in ``opened`` as it is made, for the launch to take back should it fail."""
    request = launch_request(deps, agent, handle, speaks=adapter.wire_apis)
    request = await deps.keys.through_gateway(agent, request, opened.credentials)
    request = await deps.keys.with_api_credential(agent, request, opened.credentials)
    for private in (request.config_dir, request.output_dir):  # the CLI's own, outside the workspace
        private.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Adapters may read files (a session to resume): off the event loop.
    spec = await asyncio.to_thread(adapter.launch, request)
    # The session names the launch: a server that dies from here on finds, after a restart, whether this very launch
    # started (``adoption.py``). One left open by a cut-off run is closed first.
    await deps.sessions.close_open(agent.id, "superseded: a new launch began")
    session = await deps.sessions.open(agent, request)
    opened.session = session.id
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


async def _take_back(deps: RunDeps, agent_id: str, opened: _Opened, reason: str) -> None:
    """Revoke the keys this launch made and close the Session it opened: by their ids, never the agent's others
    (a newer launch of the agent may hold its own by now)."""
    await deps.keys.revoke_made(agent_id, opened.credentials)
    if opened.session is not None:
        await deps.sessions.close_one(opened.session, reason)


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


async def spawn_failed(deps: RunDeps, agent: Agent, exc: GodelError, opened: _Opened | None = None) -> None:
    log.warning("spawn failed", agent=agent.id, error=exc.message)
    if opened is not None:  # a key may have been made (and written to its config) already
        await _take_back(deps, agent.id, opened, f"spawn failed: {exc.message}")
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


async def _abandon_unstarted(
    deps: RunDeps, agent_id: str, handle: RuntimeHandle, opened: _Opened, *, prepared: bool
) -> None:
    """Killed or deleted while its workspace was being prepared: nothing ran, so what this launch made is taken
    back, whatever the cleanup policy (it keeps a run's work, and there was none): the workspace, and its branch
    when the checkout made it. A kill or delete right after a spawn leaves the repository as the spawn found it."""
    await _take_back(deps, agent_id, opened, "killed or deleted while it was being spawned")
    if not prepared:  # a follow-up's workspace is the agent's earlier work: the policy decides, as for any run
        try:
            agent = await deps.store.update_agent(agent_id, handle_fields(handle))
        except NotFoundError:
            await deps.runtime.cleanup(handle)  # deleted: nothing will ever look at this workspace again
            return
        await aftercare.apply_cleanup(deps, agent, handle)
        return
    await deps.runtime.discard(handle)
    try:
        await deps.store.update_agent(agent_id, {"worktree": None})  # the row may name an earlier attempt's
    except NotFoundError:
        pass  # deleted


def limits_of(agent: Agent) -> ResourceLimits | None:
    """The resource limits recorded on the agent at its spawn (``LIMITS_KEY``); the runtime enforces them or refuses
    to start it. A record that cannot be read fails the launch rather than run the agent without its limits."""
    raw = agent.metadata.get(LIMITS_KEY)
    if raw is None:
        return None
    limits, errors = ResourceLimits.parse(raw, f"metadata.{LIMITS_KEY}")
    if errors:
        raise AgentSpawnError(f"the agent's recorded resource limits are unreadable: {errors[0].message}")
    return limits or None


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
    options = adapter_options(agent.config)
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
