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

from godel.api.schemas import agent_json, event_json, pattern_error
from godel.core.events import EventFilter
from godel.errors import GodelError
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
    def __init__(self, ws: WebSocket, plane: ControlPlane) -> None:
        self.ws = ws
        self.plane = plane
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
        action = {
            "agent:pause": self.plane.pause,
            "agent:resume": self.plane.resume,
            "agent:kill": self.plane.kill,
            "agent:restart": self.plane.restart,
        }[name]
        try:
            agent = await action(agent_id, actor="ws", reason=reason)
        except GodelError as exc:
            await self.respond(mid, error=exc)
            return
        await self.respond(mid, {"agentId": agent.id, "status": agent.status.value, "agent": agent_json(agent)})

    def close(self) -> None:
        for task in [*self.subs.values(), *self.commands]:
            task.cancel()
        self.subs.clear()


@router.websocket("/events")
async def events_socket(ws: WebSocket) -> None:
    subprotocols = ws.scope.get("subprotocols") or []
    await ws.accept(subprotocol="godel-events-v1" if "godel-events-v1" in subprotocols else None)
    conn = Connection(ws, ws.app.state.plane)
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
