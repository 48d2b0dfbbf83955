"""Secrets at rest (issue 10, item 12): a spawn's env values are in ``godel.db`` only sealed, the agent's process
still sees them, the API shows names only, and the files around them are private."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from godel.api.app import create_app
from godel.errors import StoreError
from godel.scheduler.plane import ControlPlane
from godel.store.secrets import PREFIX, SecretBox, load_or_create_key
from tests.api.conftest import settings_for, wait_state
from tests.conftest import admin_headers

SECRET = "hunter2-xyz"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_seal_and_open_round_trip_and_plain_rows_still_read(tmp_path: Path) -> None:
    box = SecretBox.from_file(tmp_path / "k" / "secret.key")
    sealed = box.seal(SECRET)
    assert sealed.startswith(PREFIX) and SECRET not in sealed
    assert box.open(sealed) == SECRET
    assert box.seal(sealed) == sealed  # sealing twice is a no-op (a fork copies sealed values)
    assert box.open("plain-old-row") == "plain-old-row"
    assert mode(tmp_path / "k" / "secret.key") == 0o600
    assert SecretBox.from_file(tmp_path / "k" / "secret.key").open(sealed) == SECRET  # the same key next time


def test_another_key_cannot_open_and_says_why(tmp_path: Path) -> None:
    sealed = SecretBox.from_file(tmp_path / "a.key").seal(SECRET)
    with pytest.raises(StoreError, match="secret_key_file"):
        SecretBox.from_file(tmp_path / "b.key").open(sealed)


def test_a_key_file_left_readable_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    load_or_create_key(path)
    path.chmod(0o644)
    load_or_create_key(path)
    assert mode(path) == 0o600


@pytest.fixture
async def plane(fast_tmp: Path) -> AsyncIterator[ControlPlane]:
    p = ControlPlane(settings_for(fast_tmp / "home"))
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture
async def client(plane: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(plane=plane))
    headers = await admin_headers(plane)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers) as c:
        yield c


async def test_spawn_env_is_sealed_in_the_database_and_open_in_the_process(
    client: httpx.AsyncClient, plane: ControlPlane, git_repo: Path
) -> None:
    body = {"task": "t", "repo": str(git_repo), "env": {"SECRET": SECRET},
            "command": 'printf "%s" "$SECRET" > seen.txt'}  # fmt: skip
    r = await client.post("/api/v1/agents", json=body)
    assert r.status_code == 201, r.text
    agent = r.json()["data"]
    assert agent["config"]["env"] == {"SECRET": "<redacted>"}
    done = await wait_state(client, agent["id"], "completed", "failed")
    assert done["state"] == "completed", done
    assert (Path(done["worktree"]) / "seen.txt").read_text() == SECRET  # the process saw the value

    home = plane.settings.home
    db = home / "godel.db"
    raw = b"".join(p.read_bytes() for p in home.glob("godel.db*"))
    assert SECRET.encode() not in raw  # not in the file, its WAL or its shared memory
    with sqlite3.connect(db) as conn:  # nor in any row of any table
        for (table,) in conn.execute("select name from sqlite_master where type = 'table'"):
            for row in conn.execute(f'select * from "{table}"'):  # table names from the schema
                assert SECRET not in repr(row), table
    stored = await plane.store.get_agent(agent["id"])
    assert stored.config["env"]["SECRET"].startswith(PREFIX)

    for path in ("/api/v1/agents", f"/api/v1/agents/{agent['id']}", f"/api/v1/agents/{agent['id']}/events",
                 "/api/v1/events"):  # fmt: skip
        assert SECRET not in (await client.get(path, params={"limit": 500} if "events" in path else None)).text

    assert mode(home) == 0o700
    for name in ("godel.db", "godel.db-wal", "godel.db-shm", "secret.key"):
        if (home / name).exists():
            assert mode(home / name) == 0o600, name
    for log in (home / "logs").rglob("*.log"):
        assert mode(log) == 0o600, log
    assert mode(home / "logs" / agent["id"]) == 0o700


async def test_a_fork_keeps_the_sealed_env_working(
    client: httpx.AsyncClient, plane: ControlPlane, git_repo: Path
) -> None:
    body = {"task": "t", "repo": str(git_repo), "env": {"SECRET": SECRET}, "command": "true"}
    first = (await client.post("/api/v1/agents", json=body)).json()["data"]
    await wait_state(client, first["id"], "completed")
    fork = await client.post(f"/api/v1/agents/{first['id']}/fork", json={"command": 'printf "%s" "$SECRET" > seen.txt'})
    assert fork.status_code == 201, fork.text
    done = await wait_state(client, fork.json()["data"]["id"], "completed", "failed")
    assert done["state"] == "completed", done
    assert (Path(done["worktree"]) / "seen.txt").read_text() == SECRET
