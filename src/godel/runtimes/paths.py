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

from pathlib import Path, PurePosixPath

from godel.errors import FieldError, PathOutsideWorkspaceError


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
