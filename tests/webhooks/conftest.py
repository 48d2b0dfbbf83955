"""Webhook fixtures: a real SQLite store and bus, a small real ``EventGate``, and an independent receiver process
(``receiver.py``, standard library only) that verifies every signature itself and logs its verdicts."""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from godel.auth.permissions import BUILTIN_ROLES, parse_all
from godel.auth.principal import Principal
from godel.bus.memory import MemoryBus
from godel.core.events import Event
from godel.store import SqlStore, open_store
from godel.webhooks import DeliveryPolicy, WebhookDispatcher

RECEIVER = Path(__file__).with_name("receiver.py")

FAST = DeliveryPolicy(
    max_attempts=3,
    backoff=0.05,
    backoff_max=0.2,
    failure_threshold=2,
    timeout=2.0,
    concurrency=4,
    poll_interval=0.02,
    stop_grace=0.5,
    allow_private=True,  # the receiver runs on loopback
)


def person(name: str, role: str = "developer") -> Principal:
    return Principal(id=f"user:{name}", name=name, kind="user", roles=(role,), grants=parse_all(BUILTIN_ROLES[role]))


class AgentGate:
    """The ``EventGate`` of these tests: a principal may read the events of the agents listed for it."""

    def __init__(self, readable: dict[str, set[str]]) -> None:
        self.readable = readable  # principal id -> agent ids; a principal not listed is gone

    async def principal_of(self, principal_id: str) -> Principal | None:
        if principal_id not in self.readable:
            return None
        return person(principal_id.removeprefix("user:"))

    async def can_read_event(self, principal: Principal, event: Event) -> bool:
        return event.metadata.agent_id in self.readable.get(principal.id, set())


async def eventually(check: Callable[[], Any], *, timeout: float = 10.0) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; fail with its last value after
    ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.02)  # polling interval while waiting for another process
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Receiver:
    """Drives one ``receiver.py`` process; ``records()`` is what it accepted or rejected, in order."""

    def __init__(self, root: Path, port: int = 0) -> None:
        self.root = root
        self.port = port
        self.secrets = root / "secrets.json"
        self.log = root / "log.jsonl"
        self.ready = root / "port.txt"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, hook: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{hook}"

    def add_secret(self, hook: str, secret: str) -> None:
        known = json.loads(self.secrets.read_text()) if self.secrets.exists() else {}
        self.secrets.write_text(json.dumps({**known, hook: secret}))

    async def start(self) -> None:
        self.ready.unlink(missing_ok=True)
        argv = [sys.executable, str(RECEIVER), "--port", str(self.port), "--secrets", str(self.secrets)]
        # Popen returns at once (the receiver outlives this coroutine); readiness is polled below.
        self.proc = subprocess.Popen([*argv, "--log", str(self.log), "--ready", str(self.ready)])  # noqa: ASYNC220

        async def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, "the receiver exited"
            return self.ready.exists()

        await eventually(ready, timeout=10)
        self.port = int(self.ready.read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        self.proc = None

    def records(self, hook: str | None = None) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        found = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [r for r in found if hook is None or r["hook"] == hook]


@pytest.fixture
def receiver(fast_tmp: Path) -> Iterator[Receiver]:
    r = Receiver(fast_tmp / "receiver")
    r.root.mkdir()
    yield r
    r.stop()


@pytest.fixture
def db_url(fast_tmp: Path) -> str:
    return f"sqlite+aiosqlite:///{fast_tmp / 'godel.db'}"


@asynccontextmanager
async def running_store(url: str) -> AsyncIterator[tuple[SqlStore, MemoryBus]]:
    store = open_store(url)
    await store.migrate()
    bus = MemoryBus()
    bus.attach(store)
    try:
        yield store, bus
    finally:
        bus.close()
        await store.close()


@pytest.fixture
async def plane(db_url: str) -> AsyncIterator[tuple[SqlStore, MemoryBus]]:
    async with running_store(db_url) as parts:
        yield parts


@asynccontextmanager
async def dispatching(
    store: SqlStore, bus: MemoryBus, gate: AgentGate, policy: DeliveryPolicy = FAST
) -> AsyncIterator[WebhookDispatcher]:
    """A started dispatcher, stopped on exit; fails if it leaves any of its tasks behind."""
    dispatcher = WebhookDispatcher(store, bus, gate, policy=policy)
    await dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.stop()
        left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("webhooks:") and not t.done()]
        assert not left, f"the dispatcher leaked tasks: {left}"
