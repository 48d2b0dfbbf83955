"""A repository with five agent branches for the merge queue: two clean, two that conflict with each other,
one that breaks the verify command."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import make_repo, run_git

# Passes on main; fails once app.txt says BROKEN (feature/broken) or `ok` is gone.
VERIFY = "test -f ok && ! grep -q BROKEN app.txt"

BRANCHES = ["feature/one", "feature/two", "feature/three", "feature/broken", "feature/five"]


def commit_branch(repo: Path, branch: str, files: dict[str, str], *, start: str = "main") -> str:
    """A branch with one commit, made with plumbing (a private index, no checkout), so that building it never
    touches the user's checkout."""
    parent = run_git(repo, "rev-parse", f"{start}^{{commit}}")
    tree = _tree_with(repo, parent, files)
    commit = run_git(repo, "commit-tree", tree, "-p", parent, "-m", f"work on {branch}")
    run_git(repo, "branch", branch, commit)
    return commit


def _hash(repo: Path, text: str) -> str:
    return subprocess.run(
        ["git", "hash-object", "-w", "--stdin"], cwd=repo, input=text, capture_output=True, text=True, check=True
    ).stdout.strip()


def _tree_with(repo: Path, parent: str, files: dict[str, str]) -> str:
    with tempfile.TemporaryDirectory(dir=repo.parent) as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        subprocess.run(["git", "read-tree", parent], cwd=repo, env=env, check=True)
        for name, text in files.items():
            blob = _hash(repo, text)
            subprocess.run(
                ["git", "update-index", "--add", "--cacheinfo", f"100644,{blob},{name}"], cwd=repo, env=env, check=True
            )
        return subprocess.run(
            ["git", "write-tree"], cwd=repo, env=env, capture_output=True, text=True, check=True
        ).stdout.strip()


@dataclass
class Fixture:
    repo: Path
    tips: dict[str, str]

    def tip(self, branch: str) -> str:
        return run_git(self.repo, "rev-parse", f"refs/heads/{branch}")

    def show(self, ref: str, path: str) -> str:
        return run_git(self.repo, "show", f"{ref}:{path}")

    def has(self, ref: str, path: str) -> bool:
        return bool(run_git(self.repo, "ls-tree", "--name-only", ref, "--", path))

    def user_state(self) -> tuple[str, str, str, str]:
        """HEAD, the index's tree, the porcelain status and the dirty file's text: the user's checkout."""
        return (
            run_git(self.repo, "rev-parse", "HEAD"),
            run_git(self.repo, "write-tree"),
            run_git(self.repo, "status", "--porcelain", "--untracked-files=all"),
            (self.repo / "README.md").read_text(),
        )


def build_five(path: Path) -> Fixture:
    repo = make_repo(path, {"README.md": "# demo\n", "app.txt": "app\n", "shared.txt": "base\n", "ok": "yes\n"})
    tips = {
        "feature/one": commit_branch(repo, "feature/one", {"one.txt": "one\n"}),
        "feature/two": commit_branch(repo, "feature/two", {"shared.txt": "two\n"}),
        "feature/three": commit_branch(repo, "feature/three", {"shared.txt": "three\n", "three.txt": "3\n"}),
        "feature/broken": commit_branch(repo, "feature/broken", {"app.txt": "app\nBROKEN\n"}),
        "feature/five": commit_branch(repo, "feature/five", {"five.txt": "five\n"}),
    }
    # The user is in the middle of something: an edit, a staged file and an untracked one.
    (repo / "README.md").write_text("# demo, edited by the user\n")
    (repo / "staged.txt").write_text("staged\n")
    run_git(repo, "add", "staged.txt")
    (repo / "scratch.txt").write_text("untracked\n")
    return Fixture(repo, tips)


@pytest.fixture
def five(fast_tmp: Path) -> Fixture:
    return build_five(fast_tmp / "repo")


# The API tests drive a real app over a real plane, and the store tests run on SQLite and PostgreSQL: the same
# fixtures as tests/api and tests/conformance.
from tests.api.conftest import client, plane, settings  # noqa: E402, F401
from tests.conformance.conftest import postgres_url, sqlite_dir, store, store_url  # noqa: E402, F401
