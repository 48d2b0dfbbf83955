"""Live delivery over a real uvicorn server: SSE (resumable with Last-Event-ID) and the WebSocket protocol."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.e2e.serverproc import ServerProcess
from tests.e2e.test_restart import spawn, state


@pytest.fixture
def server(fast_tmp: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(fast_tmp / "home").start()
    try:
        yield srv
    finally:
        srv.stop()


def sse_events(srv: ServerProcess, path: str, want: int, headers: dict | None = None) -> list[dict]:
    out: list[dict] = []
    with httpx.stream("GET", f"{srv.url}{path}", headers={**srv.headers, **(headers or {})}, timeout=20) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        current: dict = {}
        for line in r.iter_lines():
            if line.startswith("id:"):
                current["id"] = line[3:].strip()
            elif line.startswith("event:"):
                current["event"] = line[6:].strip()
            elif line.startswith("data:"):
                current["data"] = json.loads(line[5:].strip())
            elif line == "" and "data" in current:
                out.append(current)
                current = {}
                if len(out) >= want:
                    return out
    return out


def test_sse_stream_resumes_from_last_event_id(server: ServerProcess) -> None:
    for i in range(5):
        server.api("POST", "/api/v1/events", json={"type": "custom:demo:tick", "payload": {"i": i}})
    first = sse_events(server, "/api/v1/events/stream?type=custom:demo:*&since=0", 3)
    assert [e["data"]["payload"]["i"] for e in first] == [0, 1, 2]
    assert all(e["id"] == str(e["data"]["sequence"]) for e in first)
    rest = sse_events(server, "/api/v1/events/stream?type=custom:demo:*", 2, headers={"Last-Event-ID": first[-1]["id"]})
    assert [e["data"]["payload"]["i"] for e in rest] == [3, 4]


def test_logs_follow_streams_until_the_agent_ends(server: ServerProcess, git_repo: Path) -> None:
    agent = spawn(server, git_repo, "for i in 1 2 3; do echo n$i; sleep 0.1; done", "follow")
    got = sse_events(server, f"/api/v1/agents/{agent['id']}/logs?follow=true", 4)
    assert [e["data"].get("line") for e in got if e["event"] == "log"] == ["n1", "n2", "n3"]
    assert got[-1]["event"] == "end" and got[-1]["data"]["state"] == "completed"


def send(ws, type_: str, payload: dict, id_: str) -> None:  # type: ignore[no-untyped-def]
    ws.send(json.dumps({"id": id_, "type": type_, "timestamp": int(time.time() * 1000), "payload": payload}))


def recv_until(ws, pred, timeout: float = 10.0) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if pred(msg):
            return msg
    raise AssertionError("message not received")


def recv_both(ws, first, second, timeout: float = 10.0) -> tuple[dict, dict]:  # type: ignore[no-untyped-def]
    """The first message matching ``first`` and the first matching ``second``, in whatever order they come."""
    found: dict[int, dict] = {}

    def seen(m: dict) -> bool:
        for i, pred in enumerate((first, second)):
            if i not in found and pred(m):
                found[i] = m
        return len(found) == 2

    recv_until(ws, seen, timeout)
    return found[0], found[1]


def test_websocket_protocol(server: ServerProcess, git_repo: Path) -> None:
    ws_url = server.url.replace("http", "ws") + "/events"
    with connect(ws_url, subprotocols=["godel-events-v1"], additional_headers=server.headers) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "godel-events-v1"
        send(ws, "ping", {}, "p1")
        pong = recv_until(ws, lambda m: m["type"] == "pong")
        assert pong["metadata"]["correlationId"] == "p1"

        ws.send("{not json")
        assert recv_until(ws, lambda m: m["type"] == "error")["payload"]["code"] == "INVALID_MESSAGE"
        send(ws, "subscribe", {"patterns": ["agent::"]}, "bad")
        err = recv_until(ws, lambda m: m["type"] == "error")
        assert err["payload"]["code"] == "VALIDATION_ERROR" and err["metadata"]["correlationId"] == "bad"
        send(ws, "launch", {}, "u1")
        assert recv_until(ws, lambda m: m["type"] == "error")["payload"]["code"] == "UNKNOWN_MESSAGE_TYPE"

        agent = spawn(server, git_repo, "while true; do echo tick; sleep 0.05; done", "ws-agent")
        send(
            ws,
            "subscribe",
            {
                "patterns": ["agent:start", "agent:pause", "agent:kill"],
                "filters": {"agentId": agent["id"]},
                "since": 0,
            },
            "s1",
        )
        sub = recv_until(ws, lambda m: m["type"] == "response" and m["metadata"]["correlationId"] == "s1")
        assert sub["payload"]["success"] is True
        started = recv_until(ws, lambda m: m["type"] == "event" and m["payload"]["type"] == "agent:start")
        assert started["payload"]["metadata"]["agentId"] == agent["id"]

        send(ws, "command", {"command": "agent:pause", "agentId": agent["id"]}, "c1")
        # The response and the pause event may arrive in either order (the event is delivered at commit).
        resp, _ = recv_both(
            ws,
            lambda m: m["type"] == "response" and m["metadata"]["correlationId"] == "c1",
            lambda m: m["type"] == "event" and m["payload"]["type"] == "agent:pause",
        )
        assert resp["payload"] == {"success": True, "data": resp["payload"]["data"]}
        assert resp["payload"]["data"]["status"] == "paused"

        send(ws, "command", {"command": "agent:pause", "agentId": agent["id"]}, "c2")
        resp = recv_until(ws, lambda m: m["type"] == "response" and m["metadata"]["correlationId"] == "c2")
        assert resp["payload"]["success"] is False and resp["payload"]["error"]["code"] == "INVALID_TRANSITION"

        send(ws, "command", {"command": "agent:kill", "agentId": agent["id"]}, "c3")
        # The response and the kill event may arrive in either order (the event is delivered at commit).
        seen: list[dict] = []

        def both(m: dict) -> bool:
            if m["type"] == "event" and m["payload"]["type"] == "agent:kill":
                seen.append(m)
            elif m["type"] == "response" and m["metadata"]["correlationId"] == "c3":
                seen.append(m)
            return len(seen) == 2

        recv_until(ws, both)
        (last,) = [m for m in seen if m["type"] == "event"]
        last_seq = last["payload"]["sequence"]

    # Reconnect and resume from a sequence: the events after it arrive, nothing before it.
    server.api(
        "POST",
        "/api/v1/events",
        json={"type": "custom:note", "payload": {}, "metadata": {"agentId": agent["id"]}},
    )
    with connect(ws_url, additional_headers=server.headers) as ws:  # type: ignore[arg-type]
        send(
            ws,
            "subscribe",
            {"patterns": ["custom:*"], "filters": {"agentId": agent["id"]}, "since": last_seq},
            "s2",
        )
        note = recv_until(ws, lambda m: m["type"] == "event")
        assert note["payload"]["type"] == "custom:note" and note["payload"]["sequence"] > last_seq
    assert state(server, agent["id"])["state"] == "killed"
