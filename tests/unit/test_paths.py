"""Confinement of client-supplied paths to a workspace (godel.runtimes.paths.confine)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from godel.errors import PathOutsideWorkspaceError
from godel.runtimes.paths import confine


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    (root / "README.md").write_text("hi\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("s3cret\n")
    return root


def test_plain_relative_paths_resolve_inside(ws: Path) -> None:
    assert confine(ws, "README.md") == ws.resolve() / "README.md"
    assert confine(ws, "src/pkg/mod.py") == ws.resolve() / "src/pkg/mod.py"
    assert confine(ws, "./src//pkg/./mod.py") == ws.resolve() / "src/pkg/mod.py"


def test_empty_and_dot_name_the_workspace(ws: Path) -> None:
    assert confine(ws, "") == ws.resolve()
    assert confine(ws, ".") == ws.resolve()


def test_dotdot_that_stays_inside_is_fine(ws: Path) -> None:
    assert confine(ws, "src/pkg/../../README.md") == ws.resolve() / "README.md"


@pytest.mark.parametrize("path", ["..", "../outside/secret", "src/../../outside", "src/pkg/../../../x"])
def test_dotdot_escaping_is_rejected(ws: Path, path: str) -> None:
    with pytest.raises(PathOutsideWorkspaceError) as info:
        confine(ws, path)
    assert info.value.status_code == 400
    assert info.value.code == "PATH_OUTSIDE_WORKSPACE"
    assert info.value.fields[0].field == "path"


@pytest.mark.parametrize("path", ["/etc/passwd", "/", "//etc"])
def test_absolute_paths_are_rejected(ws: Path, path: str) -> None:
    with pytest.raises(PathOutsideWorkspaceError, match="absolute"):
        confine(ws, path)


def test_absolute_path_inside_the_workspace_is_still_rejected(ws: Path) -> None:
    # Paths are relative by contract; an absolute one is a client bug even when it happens to point inside.
    with pytest.raises(PathOutsideWorkspaceError):
        confine(ws, str(ws / "README.md"))


def test_nul_byte_is_rejected(ws: Path) -> None:
    with pytest.raises(PathOutsideWorkspaceError):
        confine(ws, "README.md\0.txt")


def test_symlink_to_etc_is_rejected(ws: Path) -> None:
    (ws / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(PathOutsideWorkspaceError, match="outside"):
        confine(ws, "passwd")


def test_symlinked_directory_escaping_is_rejected(ws: Path) -> None:
    (ws / "out").symlink_to(ws.parent / "outside", target_is_directory=True)
    with pytest.raises(PathOutsideWorkspaceError):
        confine(ws, "out/secret")
    with pytest.raises(PathOutsideWorkspaceError):
        confine(ws, "out/not-yet-there")  # a write through the link must be refused as well


def test_relative_symlink_climbing_out_is_rejected(ws: Path) -> None:
    (ws / "src" / "up").symlink_to("../../outside")
    with pytest.raises(PathOutsideWorkspaceError):
        confine(ws, "src/up/secret")


def test_dangling_symlink_pointing_outside_is_rejected(ws: Path) -> None:
    (ws / "later").symlink_to(ws.parent / "outside" / "does-not-exist")
    with pytest.raises(PathOutsideWorkspaceError):
        confine(ws, "later")


def test_symlink_inside_the_workspace_is_fine(ws: Path) -> None:
    (ws / "link.md").symlink_to("README.md")
    (ws / "pkg").symlink_to("src/pkg", target_is_directory=True)
    assert confine(ws, "link.md") == ws.resolve() / "README.md"
    assert confine(ws, "pkg/mod.py") == ws.resolve() / "src/pkg/mod.py"


def test_workspace_reached_through_a_symlink_works(ws: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(ws, target_is_directory=True)
    assert confine(alias, "README.md") == ws.resolve() / "README.md"


def test_nonexistent_path_for_write_is_allowed_inside(ws: Path) -> None:
    assert confine(ws, "new/dir/file.txt") == ws.resolve() / "new/dir/file.txt"
    assert not (ws / "new").exists()  # confinement never creates anything


def test_symlink_loop_is_rejected(ws: Path) -> None:
    os.symlink("b", ws / "a")
    os.symlink("a", ws / "b")
    with pytest.raises(PathOutsideWorkspaceError):
        confine(ws, "a/x")


def test_sibling_with_common_prefix_is_outside(ws: Path) -> None:
    # "/x/ws2" starts with the string "/x/ws" but is not inside it.
    sibling = ws.parent / (ws.name + "2")
    sibling.mkdir()
    (ws / "s").symlink_to(sibling, target_is_directory=True)
    with pytest.raises(PathOutsideWorkspaceError):
        confine(ws, "s")
