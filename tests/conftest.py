"""Fixtures shared by every test: real git repositories on tmpfs (see ../shared isolation notes: worktrees on
the root disk cost ~1.5 s each here, on /dev/shm ~50 ms)."""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

TMPFS = Path("/dev/shm") if Path("/dev/shm").is_dir() else None


def pytest_configure(config: pytest.Config) -> None:
    """The tests, the servers and the agents they start get an empty home of their own: nothing in the user's
    dotfiles reaches them (a login shell an agent CLI runs reads ``~/.bashrc``: one that waits 60 s on a stale lock,
    as pyenv's rehash does after a kill, made every codex command time out), and nothing they write (``godel login``,
    ``~/.gitconfig``) lands in the user's home. The per-user caches stay where they are: the agent CLIs, the npm
    packages the OIDC tests install."""
    if os.environ.get("GODEL_TEST_HOME"):  # set once, by the first process (xdist workers inherit it)
        return
    real = Path.home()
    os.environ.setdefault("XDG_CACHE_HOME", str(real / ".cache"))
    os.environ.setdefault("npm_config_cache", str(real / ".npm"))
    home = Path(tempfile.mkdtemp(prefix="godel-test-home-", dir=TMPFS))
    # A git identity, as a developer's machine has one: commands the tests' agents run commit with it.
    (home / ".gitconfig").write_text("[user]\n\tname = Godel Test\n\temail = test@godel.invalid\n")
    os.environ["HOME"] = os.environ["GODEL_TEST_HOME"] = str(home)
    # The default runtime is the sandbox where bubblewrap is installed (``auto``). Most tests are about something else
    # and their agents touch files outside the workspace (gates the test opens): they run on ``local``. The sandbox's
    # own tests name it, and the README's server runs on the real default (tests/e2e/test_readme.py).
    os.environ.setdefault("GODEL_RUNTIME", "local")
    config.stash[_OWN_HOME] = home


_OWN_HOME = pytest.StashKey[Path]()


def pytest_unconfigure(config: pytest.Config) -> None:
    factory = getattr(config, "_tmp_path_factory", None)  # this process's pytest tmp_path root, if it made one
    basetemp = getattr(factory, "_basetemp", None)
    if isinstance(basetemp, Path) and basetemp.exists():
        from godel.runtimes.workspaces.overlay import unmount_under

        unmount_under(basetemp)  # workspaces a test made under tmp_path and did not clean up
    if (home := config.stash.get(_OWN_HOME, None)) is not None:
        shutil.rmtree(home, ignore_errors=True)


def remove_tree(path: Path) -> None:
    """``rm -rf`` of a scratch folder, after unmounting the workspace overlays a runtime left mounted in it (a
    mount outlives its folder's removal otherwise)."""
    from godel.runtimes.workspaces.overlay import unmount_under

    if path.exists():
        unmount_under(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fast_tmp() -> Iterator[Path]:
    """A fresh directory on tmpfs when the machine has one."""
    base = (TMPFS / "godel-tests") if TMPFS else Path(os.environ.get("TMPDIR", "/tmp")) / "godel-tests"
    path = base / uuid.uuid4().hex[:12]
    path.mkdir(parents=True)
    yield path
    remove_tree(path)


def held_by_vfork(pid: int) -> bool:
    """Whether ``pid`` waits uninterruptibly (D) in vfork for a child stopped before its exec: a pause holds it as
    surely as a stop, and it shows no T until that child runs again (37 of 300 group stops of a shell loop here)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        wchan = Path(f"/proc/{pid}/wchan").read_text()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        child_states = [Path(f"/proc/{c}/stat").read_text().rsplit(")", 1)[1].split()[0] for c in children]
    except (OSError, IndexError):
        return False
    vforking = wchan in ("kernel_clone", "wait_for_vfork_done")
    return state == "D" and vforking and bool(child_states) and all(c in ("T", "t") for c in child_states)


def run_git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def make_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    env_args = ["-c", "user.name=Godel Test", "-c", "user.email=test@godel.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    for name, text in (files or {"README.md": "# demo\n", "src/app.py": "print('hi')\n"}).items():
        f = path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    subprocess.run(["git", "add", "-A"], cwd=path, check=True)
    subprocess.run(["git", *env_args, "commit", "-q", "-m", "initial"], cwd=path, check=True)
    return path


@pytest.fixture
def git_repo(fast_tmp: Path) -> Path:
    return make_repo(fast_tmp / "repo")


@pytest.fixture(autouse=True)
def _git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    # Agents commit in their worktrees; give git an identity without touching the user's config.
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Godel Test")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "test@godel.invalid")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Godel Test")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "test@godel.invalid")


async def admin_headers(
    plane: Any, name: str = "admin", roles: tuple[str, ...] = ("admin",), team: str | None = None
) -> dict[str, str]:
    """Headers that authenticate as user ``name`` (made with ``roles`` if missing) on an app built over ``plane``:
    a real access token signed by the server's own key (no password, no argon2 hash: fast enough per test)."""
    from godel.auth.accounts import Accounts

    auth = plane.auth
    if await auth.store.get_user(name) is None:
        await Accounts(auth).create_user(name, roles=list(roles), team=team)
    token, _ = auth.signer.issue(f"user:{name}", f"test-{name}", auth.clock.now(), 3600)
    return {"Authorization": f"Bearer {token}"}


def local_admin_headers(home: Path) -> dict[str, str]:
    """The key ``godel serve`` wrote to ``home/credentials`` on its first start (read as the CLI reads it)."""
    import json

    return {"X-API-Key": json.loads((home / "credentials").read_text())["apiKey"]}


@pytest.fixture
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fails a test that leaves an asyncio task of its own running: every task the code under test starts must be
    stopped by the code that started it (set up first, so it is checked after every other fixture is torn down)."""
    before = {t for t in asyncio.all_tasks() if not t.done()}
    yield
    for _ in range(3):  # tasks cancelled during teardown finish on their next turns of the loop
        await asyncio.sleep(0)
    left = {t for t in asyncio.all_tasks() if not t.done()} - before - {asyncio.current_task()}
    assert not left, f"tasks left running: {sorted(t.get_name() + ' ' + repr(t.get_coro()) for t in left)}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and inspect.iscoroutinefunction(function) and hasattr(item, "fixturenames"):
            item.fixturenames.insert(0, "_no_leaked_tasks")
