"""Fixtures for driving the real ``godel`` CLI, as a subprocess, against a real ``godel serve`` subprocess.

Fixture names start with ``cli_`` so they never shadow the per-test ``server`` fixtures of other e2e modules.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import TMPFS, make_repo, remove_tree
from tests.e2e.serverproc import ServerProcess
from tests.pg import PG_SERVER, pg_admin


@pytest.fixture(scope="session")
def cli_home() -> Iterator[Path]:
    # On tmpfs when there is one: worktrees there cost milliseconds instead of seconds.
    path = Path(tempfile.mkdtemp(prefix="godel-cli-e2e-", dir=TMPFS))
    yield path
    remove_tree(path)


@pytest.fixture(scope="session")
def cli_server(cli_home: Path) -> Iterator[ServerProcess]:
    # `terminate`: the sleeping agents some tests leave behind must not outlive the session.
    server = ServerProcess(cli_home / "home", GODEL_ON_SHUTDOWN="terminate").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def cli_repo(cli_home: Path) -> Path:
    return make_repo(cli_home / "repo", {"README.md": "# demo\n", "src/app.py": "print('hi')\n", "notes.txt": "a\n"})


@dataclass(frozen=True)
class Godel:
    """Runs ``python -m godel …`` the way a user would, pointed at the test server through GODEL_URL."""

    url: str
    cwd: Path
    home: Path

    def run(self, *args: str, expect: int | None = 0, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        # The CLI finds the server's credentials in $GODEL_HOME/credentials, as it would on the user's machine.
        env = {**os.environ, "GODEL_URL": self.url, "GODEL_HOME": str(self.home)}
        result = subprocess.run(
            [sys.executable, "-m", "godel", *args],
            env=env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if expect is not None:
            assert result.returncode == expect, (
                f"godel {' '.join(args)} exited {result.returncode}, not {expect}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)


@pytest.fixture
def godel(cli_server: ServerProcess, cli_home: Path) -> Godel:
    # A neutral cwd, so no ./godel.toml of the checkout changes what the CLI does.
    return Godel(cli_server.url, cli_home, cli_server.home)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The server's store: SQLite under GODEL_HOME (embedded mode), or a fresh database on the machine's
    PostgreSQL (server mode), so the crash test runs against both."""
    if request.param == "sqlite":
        yield {}
        return
    name = f"godel_e2e_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"PostgreSQL at {PG_SERVER} is not reachable: {exc}")
    try:
        yield {"GODEL_DATABASE_URL": f"postgresql+asyncpg://{PG_SERVER}/{name}"}
    finally:
        asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
