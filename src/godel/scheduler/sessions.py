"""The Session of each run (spec §2.1): opened before the CLI starts, closed when the run ends.

A closed session keeps the transcript (messages, tool calls and results in order) built from the run's committed
events, its usage totals and the outcome. A continued run's session names the previous one as its parent. The
session's id is also the launch's id (``RUN_KEY``): a server that died mid-launch finds the launch by it.
"""

from __future__ import annotations

import json
from typing import Any

import structlog

from godel.core.events import EventFilter
from godel.core.ids import new_id
from godel.core.models import Agent, Session
from godel.core.ports import Clock, EventQuery, LaunchRequest, Store
from godel.core.runs import RunContext
from godel.core.states import SessionStatus
from godel.errors import NotFoundError

log = structlog.get_logger("godel.sessions")
TRANSCRIPT_EVENTS = ("agent:message", "agent:tool_call", "agent:tool_result")
_ENTRY_KIND = {"agent:message": "message", "agent:tool_call": "tool_call", "agent:tool_result": "tool_result"}


class Sessions:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def open(self, agent: Agent, request: LaunchRequest) -> Session:
        ctx = RunContext.of(agent)
        return await self.store.create_session(
            Session(
                id=new_id(),
                agent_id=agent.id,
                parent_id=ctx.session if ctx.resume else None,
                status=SessionStatus.ACTIVE,
                depth=ctx.depth,
                context={
                    "prompt": request.task,
                    "attempt": agent.retry_count + 1,
                    "model": request.endpoint.name if request.endpoint else agent.model or None,
                    "resumes": request.resume_session,
                    "fromSequence": await self.store.last_sequence(),
                },
            )
        )

    async def close(
        self,
        agent: Agent,
        *,
        success: bool,
        reason: str,
        result: str | None = None,
        usage: dict[str, Any] | None = None,
        native: str | None = None,
        session_id: str | None = None,
    ) -> None:
        """Close the run's Session (``session_id``, else the one the row names), saving its transcript."""
        ctx = RunContext.of(agent)
        session_id = session_id or ctx.session
        if not session_id:
            return
        try:
            await self._close(session_id, success, reason, result, usage or {}, native or ctx.native_session)
        except Exception:  # a transcript that failed to save must not keep the run from being recorded as ended
            log.exception("could not close the session", agent=agent.id, session=session_id)

    async def close_open(self, agent_id: str, reason: str) -> None:
        """Close every session of the agent still open (a run cut off: lost with the server, abandoned mid-spawn)."""
        try:
            for session in await self.store.list_sessions(agent_id):
                if session.completed_at is None:
                    await self._close(session.id, False, reason, None, {}, None)
        except NotFoundError:
            return  # the agent was deleted, and its sessions with it
        except Exception:
            log.exception("could not close the agent's open sessions", agent=agent_id)

    async def close_one(self, session_id: str, reason: str) -> None:
        """Close one session, unsuccessful, if it is still open (a launch that failed or was abandoned closes its own,
        never another launch's)."""
        try:
            await self._close(session_id, False, reason, None, {}, None)
        except Exception:
            log.exception("could not close the session", session=session_id)

    async def _close(
        self, session_id: str, success: bool, reason: str, result: str | None, usage: dict[str, Any], native: str | None
    ) -> None:
        try:
            session = await self.store.get_session(session_id)
        except NotFoundError:
            return  # deleted with its agent
        if session.completed_at is not None:
            return  # already closed (an ending retried after a failed commit)
        ctx = dict(session.context)
        messages = await self.transcript(session.agent_id, int(ctx.get("fromSequence", 0)))
        ctx.update(messages=messages, usage=usage, result=result, outcome=reason, nativeSession=native)
        status = SessionStatus.COMPLETED if success else SessionStatus.FAILED
        await self.store.update_session(
            session_id, {"status": status, "context": ctx, "completed_at": self.clock.now()}
        )

    async def transcript(self, agent_id: str, since: int, until: int | None = None) -> list[dict[str, Any]]:
        """The conversation of one run, from its committed events (oldest first), up to ``until`` (exclusive)."""
        flt = EventFilter(patterns=TRANSCRIPT_EVENTS, agent_id=agent_id)
        entries: list[dict[str, Any]] = []
        while True:
            page = await self.store.query_events(EventQuery(filter=flt, since=since, until=until, limit=500))
            entries.extend({"kind": _ENTRY_KIND[e.type], "at": e.timestamp.isoformat(), **e.payload} for e in page)
            if len(page) < 500:
                return entries
            since = page[-1].sequence or since

    async def messages(self, session: Session, until: int | None = None) -> list[dict[str, Any]]:
        """A session's transcript: saved when it was closed, built from the events while it is live (up to the
        start of the next session, ``until``, should one have begun without this one being closed)."""
        if session.completed_at is not None or "messages" in session.context:
            return list(session.context.get("messages") or [])
        return await self.transcript(session.agent_id, int(session.context.get("fromSequence", 0)), until)


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
