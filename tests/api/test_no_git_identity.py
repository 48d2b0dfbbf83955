"""A server on a machine where git has no identity at all (no ``user.name``/``user.email`` anywhere, no
``GIT_AUTHOR_*``): every commit Godel makes itself — the work an agent left uncommitted, a snapshot, a merge
commit of the queue — still succeeds, under Godel's own identity, and the user's identity is never invented."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import spawn, wait_state
from tests.conftest import run_git
from tests.merging.test_api import finished, start


@pytest.fixture(autouse=True)
def _no_git_identity(monkeypatch: pytest.MonkeyPatch, fast_tmp: Path) -> None:
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(name, raising=False)
    empty = fast_tmp / "empty-home"
    empty.mkdir()
    monkeypatch.setenv("HOME", str(empty))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(empty / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def _git_has_identity(repo: Path) -> bool:
    return subprocess.run(["git", "var", "GIT_COMMITTER_IDENT"], cwd=repo, capture_output=True).returncode == 0


def _author(repo: Path, ref: str) -> str:
    return run_git(repo, "log", "-1", "--format=%an <%ae> / %cn <%ce>", ref)


async def test_godels_own_commits_need_no_git_identity(client: httpx.AsyncClient, git_repo: Path) -> None:
    # The precondition is real: git itself refuses to commit here.
    assert not _git_has_identity(git_repo), "git has an identity here after all: the test would prove nothing"

    first = await spawn(client, git_repo, "echo one > one.txt")  # work left uncommitted: Godel commits it
    second = await spawn(client, git_repo, "echo two > two.txt")
    one = await wait_state(client, first["id"], "completed", timeout=30)
    two = await wait_state(client, second["id"], "completed", timeout=30)
    assert len(one["commits"]) == 1 and len(two["commits"]) == 1
    assert _author(git_repo, one["branch"]) == "Godel <godel@localhost> / Godel <godel@localhost>"

    # A snapshot of a workspace is a commit of Godel's too.
    third = await spawn(client, git_repo, "echo three > three.txt; sleep 30")
    await wait_state(client, third["id"], "running", "executing", timeout=30)
    snap = await client.post(f"/api/v1/agents/{third['id']}/snapshots", json={"label": "no identity"})
    assert snap.status_code == 201, snap.text
    assert run_git(git_repo, "show", f"{snap.json()['data']['commit']}:three.txt") == "three"
    await client.post(f"/api/v1/agents/{third['id']}/kill")

    # Two branches that each add a file: the second merge is a real merge commit, which needs a committer.
    job = await start(client, repo=str(git_repo), into="integration", branches=[one["branch"], two["branch"]])
    report = await finished(client, job["id"])
    assert [r["status"] for r in report["results"]] == ["merged", "merged"], report
    assert run_git(git_repo, "show", "integration:one.txt") == "one"
    assert run_git(git_repo, "show", "integration:two.txt") == "two"
    assert _author(git_repo, "integration").endswith("/ Godel <godel@localhost>")
