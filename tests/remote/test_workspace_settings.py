"""The remote runtimes make the server's copy of a workspace as the settings say (``workspace_mode``,
``workspace_cache_size``), as the local and sandbox runtimes do: built from the settings, not from defaults.

Only the server's side is exercised (prepare and cleanup make no remote call), so no fake is needed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from godel.core.ids import new_id
from godel.core.ports import RuntimeHandle, WorkspaceSpec
from godel.runtimes import runtime_for
from godel.runtimes.remote.base import RemoteRuntime
from godel.settings import Settings
from tests.conftest import make_repo, run_git

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="overlayfs is mounted on the host by root only")
KEY_ENV = "GODEL_TEST_E2B_KEY"


def _built(name: str, home: Path, **workspace: object) -> RemoteRuntime:
    """The runtime ``name`` as ``runtime_for`` builds it from settings that set only ``workspace``'s options."""
    options: dict[str, object] = {"home": home, "use_gateway": False, **workspace}
    if name == "kubernetes":
        home.mkdir(parents=True, exist_ok=True)
        kubeconfig = home / "kubeconfig"  # never contacted: preparing a workspace is the server's own work
        kubeconfig.write_text(
            json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": "https://cluster.invalid"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            })
        )  # fmt: skip
        options |= {"kubernetes_image": "godel-agent:test", "kubernetes_kubeconfig": kubeconfig}
    else:
        options["e2b_api_key_env"] = KEY_ENV
    runtime = runtime_for(Settings(**options), name)  # type: ignore[arg-type]
    assert isinstance(runtime, RemoteRuntime)
    return runtime


async def _prepare(runtime: RemoteRuntime, repo: Path) -> RuntimeHandle:
    return await runtime.prepare(WorkspaceSpec(agent_id=new_id(), repo=repo))


@pytest.fixture(autouse=True)
def _e2b_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "e2b_test_key")


@needs_root
@pytest.mark.parametrize("name", ["kubernetes", "e2b"])
async def test_workspace_mode_checkout_makes_plain_checkouts(name: str, fast_tmp: Path) -> None:
    repo = make_repo(fast_tmp / "repo")
    runtime = _built(name, fast_tmp / "home", workspace_mode="checkout")
    assert runtime.capabilities().workspace == "checkout"
    handle = await _prepare(runtime, repo)
    assert not os.path.ismount(handle.workspace)  # the default, as root, would be an overlay mount
    assert (handle.workspace / "README.md").read_text() == "# demo\n"
    cache = runtime.worktrees_root.parent / "cache" / "checkouts"
    assert not cache.exists() or not any(cache.iterdir())  # nothing cached for overlays
    await runtime.cleanup(handle)
    assert not handle.workspace.exists()


@needs_root
@pytest.mark.parametrize("name", ["kubernetes", "e2b"])
async def test_workspace_cache_size_bounds_the_cached_checkouts(name: str, fast_tmp: Path) -> None:
    repo = make_repo(fast_tmp / "repo")
    runtime = _built(name, fast_tmp / "home", workspace_cache_size=1)
    assert runtime.capabilities().workspace == "overlay"
    first = await _prepare(runtime, repo)
    assert os.path.ismount(first.workspace)
    (repo / "more.txt").write_text("2\n")
    run_git(repo, "add", "-A")
    run_git(repo, "-c", "user.name=T", "-c", "user.email=t@x", "commit", "-qm", "second")
    second = await _prepare(runtime, repo)
    cache = runtime.worktrees_root.parent / "cache" / "checkouts"
    assert {e.name for e in cache.iterdir()} == {first.base_commit, second.base_commit}  # both mounted
    await runtime.cleanup(first)  # one over the bound of 1 (the default keeps 16), and no longer mounted
    assert {e.name for e in cache.iterdir()} == {second.base_commit}
    await runtime.cleanup(second)
