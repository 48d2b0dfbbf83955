"""One run of an agent's CLI: what it is launched with, and the Session that records its conversation.

Per-agent run state lives in ``agent.context``, typed as ``godel.core.runs.RunContext``.

A Session row (spec §2.1) is opened when the CLI starts and closed when the run ends, with the transcript
(messages, tool calls and results in order) built from the run's committed events, its usage totals and the
outcome. A continued run's session names the previous one as its parent.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from godel.core.events import EventFilter
from godel.core.ids import new_id
from godel.core.models import Agent, Session
from godel.core.ports import EventQuery, LaunchRequest, RuntimeHandle
from godel.core.runs import RunContext
from godel.core.states import SessionStatus
from godel.errors import AgentSpawnError, NotFoundError
from godel.providers import resolve_endpoint

if TYPE_CHECKING:
    from godel.scheduler.supervisor import Supervisor

log = structlog.get_logger("godel.runs")
TRANSCRIPT_EVENTS = ("agent:message", "agent:tool_call", "agent:tool_result")
_ENTRY_KIND = {"agent:message": "message", "agent:tool_call": "tool_call", "agent:tool_result": "tool_result"}


def launch_request(
    sup: Supervisor, agent: Agent, handle: RuntimeHandle, *, speaks: Sequence[str] = (), endpoint: bool = True
) -> LaunchRequest:
    """What the next run of ``agent`` is launched with. ``speaks``: the adapter's wire APIs, checked against
    the provider's kind of the moment (the configuration may have changed since the spawn). ``endpoint=False``
    leaves the endpoint out (re-adopting a run only needs the rest, and the key may no longer be at hand)."""
    ctx = RunContext.of(agent)
    resolved = None
    if ctx.model and endpoint:
        name = ctx.model
        resolved = resolve_endpoint(name, sup.settings.providers)
        if speaks and resolved.kind not in speaks:
            raise AgentSpawnError(
                f"{name} is now served by a provider of kind {resolved.kind}, which the {agent.kind} CLI does not "
                f"speak ({' / '.join(speaks)}); the configuration changed since the agent was spawned"
            )
    options = agent.config
    if options.get("env"):  # the one place a spawn's sealed env values are opened: for the process, never stored
        options = {**options, "env": sup.secrets.open_values(options["env"])}
    return LaunchRequest(
        agent_id=agent.id,
        task=ctx.task_for(agent.task),
        model=agent.model,
        workspace=handle.workspace,
        config_dir=sup.settings.home / "run" / agent.id / "config",
        options=options,
        endpoint=resolved,
        tools_dir=sup.settings.agents_dir,
        cli_retries=sup.settings.agent_cli_retries,
        resume_session=ctx.resume,
    )


GATEWAY_WIRES = ("openai-chat", "openai-responses", "anthropic", "gemini")  # what /proxy speaks


async def through_gateway(sup: Supervisor, agent: Agent, request: LaunchRequest) -> LaunchRequest:
    """Point the run at Godel's gateway instead of the provider: the CLI gets a virtual key scoped to this agent
    and its route, so the provider's key never enters its environment, config or workspace. The run's earlier
    keys are revoked first."""
    ep = request.endpoint
    if sup.gateway is None or not sup.settings.use_gateway or ep is None or ep.kind not in GATEWAY_WIRES:
        return request
    await sup.gateway.revoke_scope("agent", agent.id)
    # The model of this attempt first: the gateway routes a bare model id to the key's first provider serving it.
    models = RunContext.of(agent).route_from_current()
    text, _ = await sup.gateway.issue("agent", agent.id, models=models, metadata={"teamId": agent.team_id})
    root = sup.settings.agent_gateway_url + "/proxy"
    base = root if ep.kind in ("anthropic", "gemini") else f"{root}/v1"  # their clients add the version
    return dataclasses.replace(request, endpoint=dataclasses.replace(ep, base_url=base, api_key=text))


async def with_api_credential(sup: Supervisor, agent: Agent, request: LaunchRequest) -> LaunchRequest:
    """Give the run its own API credential (``GODEL_API_KEY``, with ``GODEL_URL``): role ``agent``, scoped to this
    agent, so what runs inside can report on itself but never read or steer others, mint keys or change budgets.
    The run's earlier credentials are revoked first."""
    if sup.auth is None:
        return request
    await sup.auth.revoke_agent_credentials(agent.id)
    text = await sup.auth.issue_agent_credential(agent.id, allow_spawn=bool(agent.metadata.get("allowSubagents")))
    env = {**request.options.get("env", {}), "GODEL_API_KEY": text, "GODEL_URL": sup.settings.agent_gateway_url}
    return dataclasses.replace(request, options={**request.options, "env": env})


async def revoke_run_keys(sup: Supervisor, agent_id: str) -> None:
    """The run is over: its gateway keys and its API credential stop working."""
    if sup.gateway is not None:
        try:
            await sup.gateway.revoke_scope("agent", agent_id)
        except Exception:  # the run is over either way; a key left live is logged, and revoked by the next run
            log.exception("could not revoke the agent's gateway keys", agent=agent_id)
    if sup.auth is not None:
        try:
            await sup.auth.revoke_agent_credentials(agent_id)
        except Exception:  # as above: revoked by the next run, and it names only this agent
            log.exception("could not revoke the agent's API credential", agent=agent_id)


async def open_session(sup: Supervisor, agent: Agent, request: LaunchRequest) -> Session:
    ctx = RunContext.of(agent)
    parent = ctx.session if ctx.resume else None
    return await sup.store.create_session(
        Session(
            id=new_id(),
            agent_id=agent.id,
            parent_id=parent,
            status=SessionStatus.ACTIVE,
            depth=ctx.depth,
            context={
                "prompt": request.task,
                "attempt": agent.retry_count + 1,
                "model": request.endpoint.name if request.endpoint else agent.model or None,
                "resumes": request.resume_session,
                "fromSequence": await sup.store.last_sequence(),
            },
        )
    )


async def transcript(sup: Supervisor, agent_id: str, since: int, until: int | None = None) -> list[dict[str, Any]]:
    """The conversation of one run, from its committed events (oldest first), up to ``until`` (exclusive)."""
    flt = EventFilter(patterns=TRANSCRIPT_EVENTS, agent_id=agent_id)
    entries: list[dict[str, Any]] = []
    while True:
        page = await sup.store.query_events(EventQuery(filter=flt, since=since, until=until, limit=500))
        entries.extend({"kind": _ENTRY_KIND[e.type], "at": e.timestamp.isoformat(), **e.payload} for e in page)
        if len(page) < 500:
            return entries
        since = page[-1].sequence or since


async def close_session(
    sup: Supervisor,
    agent: Agent,
    *,
    success: bool,
    reason: str,
    result: str | None = None,
    usage: dict[str, Any] | None = None,
    native: str | None = None,
) -> None:
    """Close the agent's current run's Session (``RunContext.session``), saving its transcript."""
    ctx = RunContext.of(agent)
    session_id = ctx.session
    if not session_id:
        return
    native = native or ctx.native_session
    try:
        await _close(sup, agent.id, session_id, success, reason, result, usage or {}, native)
    except Exception:  # a transcript that failed to save must not keep the run from being recorded as ended
        log.exception("could not close the session", agent=agent.id, session=session_id)


async def close_open_sessions(sup: Supervisor, agent_id: str, reason: str) -> None:
    """Close every session of the agent still open (a run cut off: lost with the server, abandoned mid-spawn)."""
    try:
        for session in await sup.store.list_sessions(agent_id):
            if session.completed_at is None:
                await _close(sup, agent_id, session.id, False, reason, None, {}, None)
    except NotFoundError:
        return  # the agent was deleted, and its sessions with it
    except Exception:
        log.exception("could not close the agent's open sessions", agent=agent_id)


async def _close(
    sup: Supervisor,
    agent_id: str,
    session_id: str,
    success: bool,
    reason: str,
    result: str | None,
    usage: dict[str, Any],
    native: str | None,
) -> None:
    try:
        session = await sup.store.get_session(session_id)
    except NotFoundError:
        return  # deleted with its agent
    if session.completed_at is not None:
        return  # already closed (an ending retried after a failed commit)
    ctx = dict(session.context)
    ctx.update(
        messages=await transcript(sup, agent_id, int(ctx.get("fromSequence", 0))),
        usage=usage,
        result=result,
        outcome=reason,
        nativeSession=native,
    )
    await sup.store.update_session(
        session_id,
        {
            "status": SessionStatus.COMPLETED if success else SessionStatus.FAILED,
            "context": ctx,
            "completed_at": sup.clock.now(),
        },
    )


def render_transcript(entries: list[dict[str, Any]]) -> str:
    """A transcript as plain text, for a prompt (a fork from a session point) or a terminal."""
    lines = []
    for e in entries:
        if e["kind"] == "message":
            lines.append(f"[{e.get('role', 'assistant')}] {e.get('text', '')}")
        elif e["kind"] == "tool_call":
            lines.append(f"[tool call {e.get('name')}] {json.dumps(e.get('input'), ensure_ascii=False)[:2000]}")
        else:
            flag = " (error)" if e.get("isError") else ""
            lines.append(f"[tool result{flag}] {str(e.get('output', ''))[:2000]}")
    return "\n".join(lines)


async def session_messages(sup: Supervisor, session: Session, until: int | None = None) -> list[dict[str, Any]]:
    """A session's transcript: saved when it was closed, built from the events while it is live (up to the
    start of the next session, ``until``, should one have begun without this one being closed)."""
    if session.completed_at is not None or "messages" in session.context:
        return list(session.context.get("messages") or [])
    return await transcript(sup, session.agent_id, int(session.context.get("fromSequence", 0)), until)
