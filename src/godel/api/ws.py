"""WebSocket ``/events``: the spec's §3.2 protocol.

Client → server: ``subscribe`` (patterns, filters, optional ``since`` sequence to resume after a reconnect),
``unsubscribe``, ``command`` (agent:pause / agent:resume / agent:kill), ``ping``. Server → client: ``event``,
``response`` (correlated by the request's id in ``metadata.correlationId``), ``pong``, ``error``.

One writer task owns the socket; every subscription is a task feeding it, so a slow client slows only its own
subscriptions, which then catch up from the store (see ``MemoryBus.stream``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import structlog
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from godel.api.access import StillValid, authenticate, checked_inside
from godel.api.schemas import agent_json, event_json, pattern_error
from godel.auth.audit import AuditLog
from godel.auth.principal import Principal
from godel.auth.service import AuthService
from godel.core.events import EventFilter
from godel.errors import GodelError, PermissionDeniedError
from godel.scheduler.plane import ControlPlane

log = structlog.get_logger("godel.ws")
router = APIRouter()

_COMMANDS = ("agent:pause", "agent:resume", "agent:kill", "agent:restart")


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _msg(type_: str, payload: Any, *, id_: str | None = None, correlation: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": id_ or f"srv-{uuid.uuid4().hex[:12]}", "type": type_, "timestamp": _now_ms(),
                           "payload": payload}  # fmt: skip
    if correlation is not None:
        out["metadata"] = {"correlationId": correlation}
    return out


class Connection:
    def __init__(self, ws: WebSocket, plane: ControlPlane, principal: Principal, auth: AuthService) -> None:
        self.ws = ws
        self.plane = plane
        self.principal = principal  # checked at the handshake; every command and event is checked again
        self.auth = auth
        self.valid = StillValid(ws)  # a logout, revocation or disable ends the connection
        self.out: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self.subs: dict[str, asyncio.Task[None]] = {}
        self.commands: set[asyncio.Task[None]] = set()

    async def writer(self) -> None:
        while True:
            msg = await self.out.get()
            await self.ws.send_text(json.dumps(msg))

    async def send(self, msg: dict[str, Any]) -> None:
        await self.out.put(msg)

    async def error(self, code: str, message: str, correlation: str | None = None, details: Any = None) -> None:
        await self.send(_msg("error", {"code": code, "message": message, "details": details}, correlation=correlation))

    async def respond(self, request_id: str, data: Any = None, error: GodelError | None = None) -> None:
        if error is None:
            payload: dict[str, Any] = {"success": True, "data": data}
        else:
            payload = {"success": False, "error": {"code": error.code, "message": error.message,
                                                   "details": error.details}}  # fmt: skip
        await self.send(_msg("response", payload, id_=request_id, correlation=request_id))

    async def handle(self, raw: str) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            await self.error("INVALID_MESSAGE", "message is not valid JSON")
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            await self.error("INVALID_MESSAGE", "a message is an object with a string `type`")
            return
        mid = str(msg.get("id") or f"cli-{uuid.uuid4().hex[:8]}")
        payload = msg.get("payload") or {}
        if not isinstance(payload, dict):
            await self.error("INVALID_MESSAGE", "`payload` must be an object", correlation=mid)
            return
        kind = msg["type"]
        if kind == "ping":
            await self.send(_msg("pong", {}, correlation=mid))
        elif kind == "subscribe":
            await self.subscribe(mid, payload)
        elif kind == "unsubscribe":
            await self.unsubscribe(mid, payload)
        elif kind == "command":
            # In its own task: a kill waits out the agent's grace period, and the socket must keep answering.
            task = asyncio.create_task(self.command(mid, payload), name=f"ws:command:{mid}")
            self.commands.add(task)
            task.add_done_callback(self.commands.discard)
        else:
            await self.error(
                "UNKNOWN_MESSAGE_TYPE",
                f"unknown message type {kind!r}; expected subscribe, unsubscribe, command or ping",
                correlation=mid,
            )

    async def subscribe(self, mid: str, payload: dict[str, Any]) -> None:
        patterns = payload.get("patterns", ["*"])
        if isinstance(patterns, str):
            patterns = [patterns]
        filters = payload.get("filters") or {}
        since = payload.get("since", payload.get("lastSequence"))
        problem = None
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            problem = "`patterns` must be a list of strings"
        elif why := pattern_error(patterns):
            problem = f"bad pattern {why}"
        elif not isinstance(filters, dict):
            problem = "`filters` must be an object"
        elif since is not None and (not isinstance(since, int) or since < 0):
            problem = "`since` must be a non-negative sequence number"
        if problem:
            await self.error("VALIDATION_ERROR", problem, correlation=mid)
            return
        flt = EventFilter(
            patterns=tuple(patterns),
            agent_id=filters.get("agentId"),
            team_id=filters.get("teamId"),
            workflow_id=filters.get("workflowId"),
        )
        sub_id = f"sub-{uuid.uuid4().hex[:12]}"
        self.subs[sub_id] = asyncio.create_task(self._pump(sub_id, flt, since), name=f"ws:{sub_id}")
        await self.respond(mid, {"subscriptionId": sub_id, "patterns": patterns, "since": since})

    async def _pump(self, sub_id: str, flt: EventFilter, since: int | None) -> None:
        try:
            async for e in self.plane.bus.stream(flt, since=since):
                if not await self.valid.holds():
                    await self.ws.close(code=4401, reason="credential no longer valid")
                    return
                if not await self.auth.can_read_event(self.principal, e):
                    continue
                body = event_json(e)
                await self.send(
                    _msg("event", {**body, "subscriptionId": sub_id, "data": e.payload}, id_=f"evt-{e.sequence}")
                )
        except GodelError as exc:  # e.g. the store failed during replay: tell the client, do not go quiet
            self.subs.pop(sub_id, None)
            await self.error(
                exc.code, f"subscription {sub_id} ended: {exc.message}", details={"subscriptionId": sub_id}
            )

    async def unsubscribe(self, mid: str, payload: dict[str, Any]) -> None:
        sub_id = payload.get("subscriptionId")
        task = self.subs.pop(sub_id, None) if isinstance(sub_id, str) else None
        if task is None:
            await self.error("NOT_FOUND", f"no subscription {sub_id!r}", correlation=mid)
            return
        task.cancel()
        await self.respond(mid, {"subscriptionId": sub_id, "unsubscribed": True})

    async def command(self, mid: str, payload: dict[str, Any]) -> None:
        name, agent_id = payload.get("command"), payload.get("agentId")
        if name not in _COMMANDS or not isinstance(agent_id, str):
            await self.error(
                "VALIDATION_ERROR",
                f"a command needs `command` (one of {', '.join(_COMMANDS)}) and a string `agentId`",
                correlation=mid,
            )
            return
        reason = payload.get("reason") if isinstance(payload.get("reason"), str) else None
        try:
            self.principal = await self.valid.principal()  # each command with the caller's rights as of now
        except GodelError as exc:
            await self.respond(mid, error=exc)
            await self.ws.close(code=4401, reason="credential no longer valid")
            return
        if not self.principal.may("agent", "update", await self.auth.owner_of("agent", agent_id)):
            await self.audit(name, agent_id, "denied")
            await self.respond(mid, error=PermissionDeniedError(
                f"{self.principal.id} may not {name.removeprefix('agent:')} agent {agent_id}",
                details={"permission": "agent:update"},
            ))  # fmt: skip
            return
        action = {
            "agent:pause": self.plane.pause,
            "agent:resume": self.plane.resume,
            "agent:kill": self.plane.kill,
            "agent:restart": self.plane.restart,
        }[name]
        try:
            agent = await action(agent_id, actor=self.principal.id, reason=reason)
        except GodelError as exc:
            await self.audit(name, agent_id, "failure")
            await self.respond(mid, error=exc)
            return
        await self.audit(name, agent_id, "success")
        await self.respond(mid, {"agentId": agent.id, "status": agent.status.value, "agent": agent_json(agent)})

    async def audit(self, command: str, agent_id: str, outcome: str) -> None:
        audit: AuditLog = self.ws.app.state.audit
        client = self.ws.client
        try:
            await audit.record(actor=self.principal.id, action=f"WS {command}", resource=f"agent_id={agent_id}",
                               outcome=outcome, client=client.host if client else None)  # fmt: skip
        except Exception:
            log.exception("audit record failed", command=command)

    def close(self) -> None:
        for task in [*self.subs.values(), *self.commands]:
            task.cancel()
        self.subs.clear()


@router.websocket("/events", dependencies=[checked_inside("agent:update per command, event:read per event")])
async def events_socket(ws: WebSocket) -> None:
    subprotocols = ws.scope.get("subprotocols") or []
    try:
        principal = await authenticate(ws)
    except GodelError as exc:  # refused at the handshake: the client sees HTTP 403 and nothing else
        audit: AuditLog = ws.app.state.audit
        client = ws.client
        try:
            await audit.record(
                actor="anonymous", action="WS /events", outcome="denied", status_code=exc.status_code,
                client=client.host if client else None, details={"refused": exc.message[:300]},
            )  # fmt: skip
        except Exception:
            log.exception("audit record failed")
        await ws.close(code=4401 if exc.status_code == 401 else 4403, reason=exc.message[:120])
        return
    await ws.accept(subprotocol="godel-events-v1" if "godel-events-v1" in subprotocols else None)
    conn = Connection(ws, ws.app.state.plane, principal, ws.app.state.auth)
    writer = asyncio.create_task(conn.writer(), name="ws:writer")
    try:
        while True:
            raw = await ws.receive_text()
            await conn.handle(raw)
    except WebSocketDisconnect:
        pass
    finally:
        conn.close()
        writer.cancel()
