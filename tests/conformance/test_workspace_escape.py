"""The attacker's move on ``.worktreeinclude``: a symlink committed in the base ref, pointing out of the workspace,
with an included file "under" it. Copying the file into the checkout would create it wherever the link points.

Chosen behaviour: the spawn is refused with a 400 (``PATH_OUTSIDE_WORKSPACE``) before the agent exists, and the copy
itself refuses to write through any symlink (the backstop for trees the spawn did not see, a snapshot's).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from godel.api.app import create_app
from godel.errors import PathOutsideWorkspaceError
from godel.runtimes.worktrees import copy_includes, include_escapes
from godel.scheduler.plane import ControlPlane
from tests.api.conftest import settings_for
from tests.conftest import admin_headers, make_repo, run_git


@pytest.fixture
def trap(fast_tmp: Path) -> tuple[Path, Path]:
    """A repo whose ``main`` has a real ``sub/`` (with an untracked ``sub/.env`` to include) and whose ``evil``
    branch has ``sub`` as a symlink to a folder outside; returns (repo, outside)."""
    outside = fast_tmp / "outside"
    outside.mkdir()
    repo = make_repo(fast_tmp / "repo", {"README.md": "hi\n", "sub/keep": "x\n", ".worktreeinclude": "sub/.env\n"})
    run_git(repo, "checkout", "-q", "-b", "evil")
    run_git(repo, "rm", "-q", "-r", "sub")
    os.symlink(outside, repo / "sub")
    run_git(repo, "add", "sub")
    run_git(repo, "commit", "-q", "-m", "sub is a link out")
    run_git(repo, "checkout", "-q", "main")
    (repo / "sub" / ".env").write_text("TOKEN=1\n")
    return repo, outside


@pytest.fixture
async def client(fast_tmp: Path) -> AsyncIterator[httpx.AsyncClient]:
    plane = ControlPlane(settings_for(fast_tmp / "home"))
    await plane.start()
    try:
        transport = httpx.ASGITransport(app=create_app(plane=plane))
        headers = await admin_headers(plane)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers) as c:
            yield c
    finally:
        await plane.stop()


async def test_spawn_on_a_base_with_a_symlink_out_is_400_and_creates_nothing(
    client: httpx.AsyncClient, trap: tuple[Path, Path]
) -> None:
    repo, outside = trap
    r = await client.post("/api/v1/agents", json={"task": "t", "repo": str(repo), "baseRef": "evil", "command": "true"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "PATH_OUTSIDE_WORKSPACE"
    assert "sub" in r.json()["error"]["message"]
    assert list(outside.iterdir()) == []
    assert (await client.get("/api/v1/agents")).json()["data"]["items"] == []
    # The same repo on its own main (a real folder) spawns as before.
    ok = await client.post("/api/v1/agents", json={"task": "t", "repo": str(repo), "command": "true"})
    assert ok.status_code == 201, ok.text


async def test_the_copy_never_writes_through_a_symlink(trap: tuple[Path, Path], fast_tmp: Path) -> None:
    repo, outside = trap
    dest = fast_tmp / "workspace"
    run_git(repo, "worktree", "add", "-q", str(dest), "evil")  # what a checkout of the base ref holds
    assert (dest / "sub").is_symlink()
    with pytest.raises(PathOutsideWorkspaceError, match="sub"):
        copy_includes(repo, dest)
    assert list(outside.iterdir()) == []
    assert await include_escapes(repo, run_git(repo, "rev-parse", "evil")) == ["sub"]
    assert await include_escapes(repo, run_git(repo, "rev-parse", "main")) == []


def test_the_copy_still_copies_and_never_overwrites(trap: tuple[Path, Path], fast_tmp: Path) -> None:
    repo, _ = trap
    dest = fast_tmp / "workspace"
    run_git(repo, "worktree", "add", "-q", "--detach", str(dest), "main")
    assert copy_includes(repo, dest) == [Path("sub/.env")]
    assert (dest / "sub" / ".env").read_text() == "TOKEN=1\n"
    (dest / "sub" / ".env").write_text("mine\n")
    assert copy_includes(repo, dest) == []  # something is there already: left alone
    assert (dest / "sub" / ".env").read_text() == "mine\n"
