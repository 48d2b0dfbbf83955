"""Fuzzing the API from its own OpenAPI document (issue 10, item 14): schemathesis generates requests, valid and
not, for every operation (stateless) and chains of them through the links it infers (stateful), all with a real
administrator's credential so they reach the handlers; none may answer 5xx.

The server is a real one (uvicorn on a loopback port, its own event loop in a thread) over a scratch home. Nothing
the fuzzer asks for can execute: no agent is ever admitted (``max_concurrent_agents=0``), and repositories are
confined to an empty scratch folder (``repo_roots``), so no merge, verify command or setup can run. Routes that end
the fuzzer's own session (logout, deleting users, rewriting roles) are left out: they would only turn the rest
into 401s. The example counts keep the whole file around a minute on two cores.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck
from hypothesis.stateful import run_state_machine_as_test
from schemathesis.checks import not_a_server_error

from godel.api.app import create_app
from godel.api.limits import RequestLimits
from godel.scheduler.plane import ControlPlane
from tests.api.conftest import settings_for
from tests.conftest import admin_headers

STATELESS_EXAMPLES = 12
STATEFUL_STEPS = 8
STATEFUL_EXAMPLES = 15


class Server:
    """A Godel server on a free loopback port, serving from a thread with its own loop."""

    def __init__(self, home: Path, scratch: Path) -> None:
        self.home, self.scratch = home, scratch
        self.ready = threading.Event()
        self.headers: dict[str, str] = {}
        self.document: dict[str, Any] = {}
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: uvicorn.Server | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="fuzz-server", daemon=True)

    async def _serve(self) -> None:
        settings = settings_for(
            self.home, max_concurrent_agents=0, repo_roots=[self.scratch], api_rate_limit="1000000/minute"
        )
        plane = ControlPlane(settings)
        await plane.start()
        try:
            app = create_app(plane=plane)
            app.add_middleware(RequestLimits, max_body_bytes=settings.max_request_bytes)
            self.headers = await admin_headers(plane)
            self.document = app.openapi()
            config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
            self.server = uvicorn.Server(config)
            self.ready.set()
            await self.server.serve()
        finally:
            self.ready.set()
            await plane.stop()

    def __enter__(self) -> Server:
        self.thread.start()
        assert self.ready.wait(30) and self.server is not None, "the fuzz server did not start"
        deadline = time.monotonic() + 30
        while not self.server.started:  # uvicorn says it listens through this flag only
            assert time.monotonic() < deadline and self.thread.is_alive(), "the fuzz server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("fuzz")
    (base / "repos").mkdir()
    with Server(base / "home", base / "repos") as s:
        yield s


def _schema(server: Server) -> Any:
    schema = schemathesis.openapi.from_dict(server.document)
    return (
        schema.exclude(path_regex=r"^/auth/(logout|login|refresh)$")
        .exclude(path_regex=r"^/api/v1/(users|roles)", method=["DELETE", "PUT", "PATCH"])
        .exclude(path_regex=r"/stream$|/logs$")  # endless SSE streams: followed, never answered in full
    )


BASE = hypothesis.settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


def test_no_operation_answers_a_server_error(server: Server) -> None:
    """Every operation, valid and invalid input (schemathesis' default generation modes); all failures at once."""
    failures: dict[str, str] = {}
    for result in _schema(server).get_all_operations():
        operation = result.ok()

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(BASE, max_examples=STATELESS_EXAMPLES, phases=[hypothesis.Phase.generate])
        def check(case: Any) -> None:
            case.call_and_validate(base_url=server.url, headers=server.headers, checks=[not_a_server_error], timeout=30)

        try:
            check()
        except Exception as exc:  # a failed check; collected so one run reports every operation that fails
            failures[operation.label] = str(exc)[:2000]
    assert not failures, "\n\n".join(f"{label}: {why}" for label, why in failures.items())


def test_no_sequence_of_operations_answers_a_server_error(server: Server) -> None:
    machine = _schema(server).as_state_machine()

    class Fuzz(machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": server.url, "headers": server.headers, "timeout": 30}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=[not_a_server_error])

    run_state_machine_as_test(
        Fuzz,
        settings=hypothesis.settings(
            BASE, max_examples=STATEFUL_EXAMPLES, stateful_step_count=STATEFUL_STEPS, phases=[hypothesis.Phase.generate]
        ),
    )
