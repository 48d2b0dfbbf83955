"""Workspaces as overlays of cached checkouts, and the plain-checkout fallback.

As root (this machine, CI) a workspace is an overlayfs mount over ``cache/checkouts/<commit>/tree``: a mount, not a
checkout, so its cost does not grow with the repository. These tests check what that changes: a second workspace
at the same commit reuses the cached checkout; the overlay survives an unmount (a machine restart) because Godel
mounts it again before it reads it; the cache stays within its bound except for what is mounted; and a runtime told
to make plain checkouts (what a server that is not root gets) keeps every behaviour.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from godel.core.ids import new_id
from godel.core.ports import RuntimeHandle, WorkspaceSpec
from godel.runtimes.local import LocalRuntime
from godel.runtimes.workspaces import overlay
from tests.conftest import make_repo, run_git

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="overlayfs is mounted on the host by root only")


async def _prepare(rt: LocalRuntime, repo: Path, **spec: object) -> RuntimeHandle:
    return await rt.prepare(WorkspaceSpec(agent_id=new_id(), repo=repo, **spec))  # type: ignore[arg-type]


@needs_root
async def test_workspaces_are_overlays_of_one_cached_checkout(fast_tmp: Path) -> None:
    rt = LocalRuntime(fast_tmp / "worktrees", fast_tmp / "logs")
    repo = make_repo(fast_tmp / "repo")
    assert rt.capabilities().workspace == "overlay"
    a, b = await _prepare(rt, repo), await _prepare(rt, repo)
    assert os.path.ismount(a.workspace) and os.path.ismount(b.workspace)
    entries = list((fast_tmp / "cache" / "checkouts").iterdir())
    assert [e.name for e in entries] == [a.base_commit]  # one checkout serves both
    (a.workspace / "README.md").write_text("a's\n")
    assert (b.workspace / "README.md").read_text() == "# demo\n"  # copy-on-write: b and the cache unchanged
    assert (entries[0] / "tree" / "README.md").read_text() == "# demo\n"
    assert run_git(b.workspace, "status", "--porcelain") == ""  # the cached index matches the overlay's files
    assert run_git(a.workspace, "status", "--porcelain") == "M README.md"
    for handle in (a, b):
        await rt.cleanup(handle)
        assert not handle.workspace.exists() and not os.path.ismount(handle.workspace)


@needs_root
async def test_an_unmounted_workspace_is_mounted_again_before_godel_reads_it(fast_tmp: Path) -> None:
    rt = LocalRuntime(fast_tmp / "worktrees", fast_tmp / "logs")
    repo = make_repo(fast_tmp / "repo")
    handle = await _prepare(rt, repo)
    (handle.workspace / "work.txt").write_text("kept in the upper layer\n")
    overlay.unmount(handle.workspace)  # what a reboot does to a kept workspace
    assert not (handle.workspace / "work.txt").exists()
    restarted = LocalRuntime(fast_tmp / "worktrees", fast_tmp / "logs")  # a new server over the same folders
    info = await restarted.snapshot(handle, "after-reboot")
    assert run_git(repo, "show", f"{info.commit}:work.txt") == "kept in the upper layer"
    assert os.path.ismount(handle.workspace)
    await restarted.cleanup(handle)


@needs_root
async def test_the_cache_keeps_its_bound_but_never_drops_a_mounted_checkout(fast_tmp: Path) -> None:
    rt = LocalRuntime(fast_tmp / "worktrees", fast_tmp / "logs", workspace_cache_size=1)
    repo = make_repo(fast_tmp / "repo")
    first = await _prepare(rt, repo)
    (repo / "more.txt").write_text("2\n")
    run_git(repo, "add", "-A")
    run_git(repo, "-c", "user.name=T", "-c", "user.email=t@x", "commit", "-qm", "second")
    second = await _prepare(rt, repo)
    cache = fast_tmp / "cache" / "checkouts"
    assert {e.name for e in cache.iterdir()} == {first.base_commit, second.base_commit}  # both mounted
    await rt.cleanup(first)  # its checkout is one too many now, and no longer mounted
    assert {e.name for e in cache.iterdir()} == {second.base_commit}
    await rt.cleanup(second)
    assert {e.name for e in cache.iterdir()} == {second.base_commit}  # within the bound: kept for the next one


async def test_plain_checkouts_keep_every_behaviour(fast_tmp: Path) -> None:
    rt = LocalRuntime(fast_tmp / "worktrees", fast_tmp / "logs", workspace_mode="checkout")
    assert rt.capabilities().workspace == "checkout"
    repo = make_repo(fast_tmp / "repo")
    handle = await _prepare(rt, repo)
    ws = handle.workspace
    assert not os.path.ismount(ws) and (ws / "README.md").read_text() == "# demo\n"
    assert run_git(ws, "status", "--porcelain") == ""
    (ws / "new.txt").write_text("n\n")
    snap = await rt.snapshot(handle, "s1")
    assert run_git(repo, "show", f"{snap.commit}:new.txt") == "n"
    assert await rt.commit_all(handle, "work") is True
    assert len(await rt.commits(handle)) == 1
    await rt.restore(handle, "s1")
    assert run_git(repo, "rev-parse", handle.branch) == handle.base_commit
    fork = await _prepare(rt, repo, from_snapshot="s1")
    assert (fork.workspace / "new.txt").read_text() == "n\n"
    for h in (handle, fork):
        await rt.cleanup(h)
        assert not h.workspace.exists()
    assert not (fast_tmp / "cache" / "checkouts").exists()
