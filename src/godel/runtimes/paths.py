"""Confining API-supplied paths to an agent's workspace.

Every file operation a client asks for (read, write, upload, download) names a path *relative to the
workspace*. ``confine`` is the one place that decides whether such a path stays inside: it rejects absolute
paths, ``..`` that climbs out, and symlinks (at any level, dangling ones included) whose target leaves the
workspace. It returns the fully resolved path, so the caller acts on the target the check approved rather
than following links a second time.

What this does not protect against: the local runtime isolates the filesystem view only by convention (the
agent runs as the same user and could write anywhere itself), so a symlink swapped in by a running agent
between the check and the use is out of scope here; stronger runtimes confine the agent itself.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path, PurePosixPath

from godel.errors import FieldError, PathOutsideWorkspaceError, ValidationError


def _reject(path: str, why: str) -> PathOutsideWorkspaceError:
    return PathOutsideWorkspaceError(f"path {path!r} {why}", [FieldError("path", why)])


def confine(workspace: Path, path: str) -> Path:
    """The resolved location of ``path`` (relative to ``workspace``), guaranteed inside the workspace.

    The path need not exist (a file about to be written); its existing prefix is resolved through symlinks.
    ``""`` and ``"."`` name the workspace itself.
    """
    if "\0" in path:
        raise _reject(path, "contains a NUL byte")
    if PurePosixPath(path).is_absolute():
        raise _reject(path, "is absolute; paths are relative to the workspace")
    root = workspace.resolve(strict=True)
    try:
        target = (root / path).resolve(strict=False)
    except (RuntimeError, OSError) as exc:  # a symlink loop, or a component that cannot be read
        raise _reject(path, f"cannot be resolved ({exc})") from exc
    if target != root and not target.is_relative_to(root):
        raise _reject(path, "resolves outside the workspace")
    return target


def user_path(text: str, field: str = "repo") -> Path:
    """A path a client gave (``~`` and ``~user`` expanded); a 400 naming ``field`` when it cannot be expanded or
    holds a NUL byte, instead of the ``RuntimeError``/``ValueError`` the standard library raises."""
    if "\0" in text:
        raise ValidationError(f"{field} contains a NUL byte", [FieldError(field, "must not contain a NUL byte")])
    try:
        return Path(text).expanduser()
    except RuntimeError as exc:  # "~nosuchuser"
        why = f"cannot expand {text.split('/')[0]!r}: no such user"
        raise ValidationError(f"{field}: {why}", [FieldError(field, why)]) from exc


def within_roots(path: Path, roots: list[Path], field: str = "repo") -> Path:
    """``path`` (resolved) when ``roots`` is empty or it lies inside one of them; a 400 naming ``field`` otherwise."""
    if not roots:
        return path
    resolved = path.resolve()
    for root in roots:
        top = root.expanduser().resolve()
        if resolved == top or resolved.is_relative_to(top):
            return path
    why = "outside the folders this server accepts repositories from (repo_roots)"
    raise ValidationError(f"{field} {str(path)!r} is {why}", [FieldError(field, why)])


def create_inside(workspace: Path, rel: PurePosixPath, source: Path) -> bool:
    """Copy the file ``source`` to ``workspace/rel`` without following any symlink on the way: each folder of
    ``rel`` is opened (or made) relative to the one before with ``O_NOFOLLOW``, and the file is created with
    ``O_EXCL | O_NOFOLLOW``. False when something is already at ``rel`` (never overwritten);
    PathOutsideWorkspaceError when a folder on the way is a symlink (a checkout may carry one that points out of
    the workspace: writing through it would create files anywhere the server can write)."""
    text = str(rel)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise _reject(text, "is not a plain relative path")
    nofollow_dir = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(workspace, nofollow_dir)
    try:
        for i, part in enumerate(rel.parts[:-1]):
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                nxt = os.open(part, nofollow_dir, dir_fd=fd)
            except (NotADirectoryError, OSError) as exc:  # ELOOP: a symlink; ENOTDIR: a file in the way
                where = "/".join(rel.parts[: i + 1])
                raise _reject(text, f"would be written through {where!r}, which is a symlink or not a folder") from exc
            os.close(fd)
            fd = nxt
        try:
            out = os.open(rel.parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                          stat.S_IMODE(source.stat().st_mode) or 0o600, dir_fd=fd)  # fmt: skip
        except FileExistsError:
            return False
        with os.fdopen(out, "wb") as dst, source.open("rb") as src:
            shutil.copyfileobj(src, dst)
        return True
    finally:
        os.close(fd)
