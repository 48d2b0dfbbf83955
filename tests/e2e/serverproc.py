"""A real ``godel serve`` in a subprocess, for tests that need uvicorn, SSE, WebSockets or a SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import local_admin_headers


def ctrl_c_works() -> None:
    """``preexec_fn`` for a command a test stops with SIGINT, as a user presses Ctrl-C: SIGINT back to its default.
    A test run launched in the background of a non-interactive shell (``nohup … &``) inherits SIGINT ignored, and a
    program started with SIGINT ignored keeps it so (Python then installs no KeyboardInterrupt): the test would wait
    for a stop that never comes."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, home: Path, port: int | None = None, *, cwd: Path | None = None, **env: str) -> None:
        self.home = home
        self.cwd = cwd  # where it looks for ./godel.toml (None: the test's own cwd)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "GODEL_HOME": str(home),
            "GODEL_WATCH_INTERVAL": "0.02",
            "GODEL_RECONCILE_INTERVAL": "0.05",
            "GODEL_KILL_GRACE": "1",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home / "server.log"

    def start_tls(self, ca: Path, timeout: float = 60.0) -> ServerProcess:
        """Start a server that serves HTTPS with a certificate signed by ``ca`` (its own, self-signed)."""
        return self.start(timeout, verify=ssl.create_default_context(cafile=str(ca)))

    def start(self, timeout: float = 60.0, verify: ssl.SSLContext | bool = True) -> ServerProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "godel", "serve", "--port", str(self.port)],
            env=self.env,
            cwd=self.cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1, verify=verify).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)  # waiting for the server to come up
        self.proc.kill()  # never leave a server behind that no test will stop
        self.proc.wait(10)
        raise RuntimeError(f"server not ready:\n{self.log.read_text()[-3000:]}")

    @property
    def headers(self) -> dict[str, str]:
        """The first administrator's key, which the server wrote to ``$GODEL_HOME/credentials`` on its first start."""
        # None when authentication is off (GODEL_AUTH_ENABLED=false): the server then wrote no credentials.
        return local_admin_headers(self.home) if (self.home / "credentials").exists() else {}

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def api(self, method: str, path: str, **kw: Any) -> Any:
        kw.setdefault("headers", self.headers)
        r = httpx.request(method, f"{self.url}{path}", timeout=15, **kw)
        body = r.json()
        if not body.get("success"):
            raise AssertionError(f"{method} {path} -> {r.status_code} {body}")
        return body["data"]
