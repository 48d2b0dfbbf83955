"""Fixtures shared by every test: real git repositories on tmpfs (see ../shared isolation notes: worktrees on
the root disk cost ~1.5 s each here, on /dev/shm ~50 ms)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

TMPFS = Path("/dev/shm") if Path("/dev/shm").is_dir() else None


@pytest.fixture
def fast_tmp() -> Iterator[Path]:
    """A fresh directory on tmpfs when the machine has one."""
    base = (TMPFS / "godel-tests") if TMPFS else Path(os.environ.get("TMPDIR", "/tmp")) / "godel-tests"
    path = base / uuid.uuid4().hex[:12]
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


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
