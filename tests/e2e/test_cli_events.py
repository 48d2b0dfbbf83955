"""``godel events tail`` as the README shows it: the recent past first, then what happens, against a real server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from typing import IO

import httpx

from tests.e2e.conftest import Godel
from tests.e2e.serverproc import ServerProcess, ctrl_c_works


def publish(godel: Godel, server: ServerProcess, kind: str, i: int) -> int:
    r = httpx.post(f"{godel.url}/api/v1/events", json={"type": kind, "payload": {"i": i}}, headers=server.headers,
                   timeout=30)  # fmt: skip
    assert r.status_code == 201, r.text
    return int(r.json()["data"]["sequence"])


def tail(godel: Godel, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "godel", "events", "tail", *args],
                            env={**os.environ, "GODEL_URL": godel.url, "GODEL_HOME": str(godel.home)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_works)  # fmt: skip


def payloads(out: IO[str], n: int) -> list[str]:
    return [out.readline().rstrip("\n").split("\t")[4] for _ in range(n)]


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(30)


def test_tail_starts_with_the_last_events_then_follows(godel: Godel, cli_server: ServerProcess) -> None:
    kind = f"custom:recent{uuid.uuid4().hex[:8]}"
    for i in range(25):
        publish(godel, cli_server, f"{kind}:old", i)
    proc = tail(godel, "--pattern", f"{kind}:*")
    try:
        assert proc.stdout is not None
        # The default 20 past events, oldest first: the first 5 of 25 are left out.
        assert payloads(proc.stdout, 20) == [f'{{"i":{i}}}' for i in range(5, 25)]
        # Then live: the past is printed before the stream is opened, so this one comes after it, once.
        publish(godel, cli_server, f"{kind}:new", 99)
        assert payloads(proc.stdout, 1) == ['{"i":99}']
    finally:
        assert stop(proc) == 0


def test_n_chooses_how_many_and_since_overrides_it(godel: Godel, cli_server: ServerProcess) -> None:
    kind = f"custom:recent{uuid.uuid4().hex[:8]}"
    sequences = [publish(godel, cli_server, f"{kind}:old", i) for i in range(6)]
    three = tail(godel, "--pattern", f"{kind}:*", "-n", "3")
    since = tail(godel, "--pattern", f"{kind}:*", "-n", "1", "--since", str(sequences[1]))
    try:
        assert three.stdout is not None and since.stdout is not None
        assert payloads(three.stdout, 3) == ['{"i":3}', '{"i":4}', '{"i":5}']
        assert payloads(since.stdout, 4) == ['{"i":2}', '{"i":3}', '{"i":4}', '{"i":5}']
    finally:
        assert stop(three) == 0 and stop(since) == 0
