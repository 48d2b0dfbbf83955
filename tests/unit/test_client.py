"""The SDK's own parsing: envelopes, errors, SSE, cursors, and what "no server" looks like.

``httpx.MockTransport`` stands in for the server here only to feed the client exact bytes; the server's
behaviour is tested against the real thing in tests/api and tests/e2e.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from godel.client import ApiError, AsyncGodelClient, GodelClient, ServerNotRunningError
from godel.client.sse import SSEDecoder, decode
from godel.errors import (
    AgentNotFoundError,
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    ValidationError,
)

BASE = "http://godel.test"
AGENT_ID = "0b7f2f2e-8a86-4a43-9d43-6f0f6d3f8e11"

Handler = Callable[[httpx.Request], httpx.Response]


def ok(data: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"success": True, "data": data})


def fail(status: int, code: str, message: str, details: Any = None) -> httpx.Response:
    body = {
        "success": False,
        "error": {"code": code, "message": message, "details": details},
        "meta": {"requestId": "req-123", "timestamp": "2025-01-01T00:00:00Z"},
    }
    return httpx.Response(status, json=body)


def sse(text: str) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=text.encode())


def client(handler: Handler) -> GodelClient:
    return GodelClient(BASE, transport=httpx.MockTransport(handler))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed when the block ends: nothing listens there


def test_success_envelope_returns_data_and_sends_camel_case() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok({"id": AGENT_ID, "status": "pending"}, 201)

    data = client(handler).spawn_agent(task="t", repo="/r", base_ref="main", max_retries=2, label=None)
    assert data == {"id": AGENT_ID, "status": "pending"}
    request = seen[0]
    assert (request.method, request.url.path) == ("POST", "/api/v1/agents")
    assert json.loads(request.content) == {"task": "t", "repo": "/r", "baseRef": "main", "maxRetries": 2}


def test_query_parameters_are_camel_case_and_omit_none() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return ok({"items": [], "pagination": {"limit": 5, "cursor": None, "hasMore": False}})

    godel = client(handler)
    godel.list_agents(status="running", team_id="t1", limit=5)
    godel.events(type=["agent:*", "team:*"], agent_id=AGENT_ID, since=7)
    godel.delete_agent(AGENT_ID, force=True)
    assert dict(seen[0].params) == {"status": "running", "teamId": "t1", "limit": "5"}
    assert seen[1].params.get_list("type") == ["agent:*", "team:*"]
    assert (seen[1].params["agentId"], seen[1].params["since"]) == (AGENT_ID, "7")
    assert seen[2].params["force"] == "true"


def test_error_envelope_raises_the_matching_class_with_server_fields() -> None:
    godel = client(lambda r: fail(404, "AGENT_NOT_FOUND", "agent 'x' not found", {"agentId": "x"}))
    with pytest.raises(AgentNotFoundError) as caught:
        godel.get_agent("x")
    exc = caught.value
    assert isinstance(exc, ApiError) and isinstance(exc, NotFoundError)
    assert (exc.code, exc.status_code, exc.request_id) == ("AGENT_NOT_FOUND", 404, "req-123")
    assert exc.message == "agent 'x' not found"
    assert exc.details == {"agentId": "x"}


def test_validation_error_carries_field_errors() -> None:
    details = {"fields": [{"field": "task", "message": "field required"}]}
    godel = client(lambda r: fail(400, "VALIDATION_ERROR", "invalid request", details))
    with pytest.raises(ValidationError) as caught:
        godel.spawn_agent(repo="/r")
    assert [(f.field, f.message) for f in caught.value.fields] == [("task", "field required")]


def test_invalid_transition_exposes_state_and_trigger() -> None:
    details = {"currentState": "completed", "trigger": "pause"}
    godel = client(lambda r: fail(409, "INVALID_TRANSITION", "cannot pause", details))
    with pytest.raises(InvalidTransitionError) as caught:
        godel.pause(AGENT_ID)
    assert (caught.value.current, caught.value.trigger) == ("completed", "pause")


def test_unknown_code_falls_into_the_branch_of_its_status() -> None:
    godel = client(lambda r: fail(409, "SOMETHING_NEW", "nope"))
    with pytest.raises(ConflictError) as caught:
        godel.kill(AGENT_ID)
    assert caught.value.code == "SOMETHING_NEW"


def test_non_envelope_error_is_a_bad_response() -> None:
    godel = client(lambda r: httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(ApiError) as caught:
        godel.health()
    assert (caught.value.code, caught.value.status_code) == ("BAD_RESPONSE", 502)


def test_iter_agents_follows_cursors() -> None:
    pages = {
        None: ok({"items": [{"id": "a"}, {"id": "b"}], "pagination": {"cursor": "c1", "hasMore": True}}),
        "c1": ok({"items": [{"id": "c"}], "pagination": {"cursor": "c2", "hasMore": True}}),
        "c2": ok({"items": [{"id": "d"}], "pagination": {"cursor": None, "hasMore": False}}),
    }
    cursors: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        cursors.append(cursor)
        return pages[cursor]

    assert [a["id"] for a in client(handler).iter_agents(limit=2)] == ["a", "b", "c", "d"]
    assert cursors == [None, "c1", "c2"]


def test_sse_decoder_follows_the_event_stream_rules() -> None:
    lines = [
        ": keep-alive",
        "retry: 1500",
        "id: 4",
        "event: log",
        'data: {"line":',
        'data: "x"}',
        "",
        "",  # a blank line with nothing pending dispatches nothing
        "data:no-space",
        "",
        "event: end",
        "",
    ]
    decoder = SSEDecoder()
    events = list(decode(decoder, lines))
    assert [(e.event, e.data, e.id) for e in events] == [
        ("log", '{"line":\n"x"}', "4"),
        ("message", "no-space", "4"),  # the last id sticks until the server sends another
        ("end", "", "4"),
    ]
    assert decoder.retry_ms == 1500


def test_follow_logs_yields_lines_and_stops_at_end() -> None:
    body = (
        'event: log\r\nid: 1\r\ndata: {"sequence": 1, "stream": "stdout", "line": "hello"}\r\n\r\n'
        ": ping\r\n\r\n"
        'event: log\ndata: {"sequence": 2, "stream": "stderr", "line": "oops"}\n\n'
        'event: end\ndata: {"state": "completed"}\n\n'
        'event: log\ndata: {"line": "never read"}\n\n'
    )
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sse(body)

    lines = [item["line"] for item in client(handler).follow_logs(AGENT_ID, tail=10)]
    assert lines == ["hello", "oops"]
    assert seen[0].url.params["follow"] == "true" and seen[0].url.params["tail"] == "10"
    assert seen[0].headers["accept"] == "text/event-stream"


def test_stream_events_resumes_with_last_event_id() -> None:
    def event(seq: int) -> str:
        return f'id: {seq}\nevent: agent:start\ndata: {{"sequence": {seq}, "type": "agent:start"}}\n\n'

    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            return sse("retry: 0\n\n" + event(1) + event(2))  # then the connection drops
        if len(requests) == 2:
            return sse(event(3))
        raise httpx.ConnectError("refused", request=request)

    received: list[int] = []
    with pytest.raises(ServerNotRunningError):
        for item in client(handler).stream_events(["agent:*"], since=0, max_reconnects=0):
            received.append(item["sequence"])
    assert received == [1, 2, 3]
    first, second = requests[0], requests[1]
    assert "last-event-id" not in first.headers and first.url.params["since"] == "0"
    assert first.url.params.get_list("type") == ["agent:*"]
    assert second.headers["last-event-id"] == "2" and second.url.params["since"] == "2"
    assert requests[2].headers["last-event-id"] == "3"


def test_stream_that_never_opened_fails_at_once() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ServerNotRunningError):
        list(client(handler).stream_events())
    assert len(calls) == 1


def test_stream_error_envelope_raises_api_error() -> None:
    godel = client(lambda r: fail(404, "AGENT_NOT_FOUND", "agent 'x' not found"))
    with pytest.raises(AgentNotFoundError):
        list(godel.follow_logs("x"))


def test_closed_port_means_server_not_running() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(ServerNotRunningError) as caught, GodelClient(url, timeout=5) as godel:
        godel.health()
    assert str(caught.value) == f"Godel server is not running at {url} (start it with `godel serve`)"
    assert caught.value.code == "SERVER_NOT_RUNNING"


def test_read_timeout_says_the_server_did_not_answer() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(ServerNotRunningError, match="did not answer in time"):
        client(handler).list_agents()


def test_default_url_comes_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GODEL_URL", "http://example.test:1234/")
    assert GodelClient().base_url == "http://example.test:1234"


async def test_async_client_shares_the_envelope_and_streams() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/logs"):
            return sse('event: log\ndata: {"line": "hi"}\n\nevent: end\n\n')
        if request.url.path.endswith("/missing"):
            return fail(404, "AGENT_NOT_FOUND", "agent 'missing' not found")
        return ok({"id": AGENT_ID})

    async with AsyncGodelClient(BASE, transport=httpx.MockTransport(handler)) as godel:
        assert await godel.get_agent(AGENT_ID) == {"id": AGENT_ID}
        assert [item["line"] async for item in godel.follow_logs(AGENT_ID)] == ["hi"]
        with pytest.raises(AgentNotFoundError):
            await godel.get_agent("missing")
