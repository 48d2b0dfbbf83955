"""The workspace on its way to a remote runtime and the result on its way back (the server's side of ``entry``).

In: ``pack`` makes ``in.tgz``: a git bundle of the agent's branch (its whole history: the remote clone is a repository
of its own, so the agent gets a private git directory and never touches the user's hooks, config or other refs), a
tar of the working tree as ``prepare`` left it (include files, setup output, a fork's uncommitted changes; symlinks
as links), a tar of the launch's config files at their absolute paths, and the repository's ``user.name`` and
``user.email`` (nothing else of its config travels).

Out: ``out.tgz`` (see ``entry``) holds ``stderr.log``, ``code`` and ``result.bundle``; ``apply_result`` fetches the
bundle into the repository, moves the agent's branch to the agent's HEAD and lays the agent's working tree into the
local workspace, so that after the run the server's copy is the pod's, and diff, commits, snapshots and cleanup work on
it as they do for a local agent. Nothing but objects and the one branch comes back: the remote repository's config
and other refs stay where they are.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from godel.core.ports import LaunchSpec, RuntimeHandle
from godel.errors import RuntimeFailure
from godel.runtimes.git import git, git_bytes
from godel.runtimes.remote.entry import END, MARKER
from godel.runtimes.snapshots import lay_tree

MAX_RESULT = 512 * 1024 * 1024  # bytes of out.tgz unpacked at most (a bundle is data the agent chose)


async def pack(handle: RuntimeHandle, launch: LaunchSpec) -> bytes:
    """``in.tgz`` for the workspace of ``handle`` and the files of ``launch``."""
    with tempfile.TemporaryDirectory(prefix="godel-pack-") as tmp:
        bundle = Path(tmp) / "repo.bundle"
        await git("bundle", "create", str(bundle), f"refs/heads/{handle.branch}", cwd=handle.repo)
        name = await git("config", "user.name", cwd=handle.repo, check=False)
        email = await git("config", "user.email", cwd=handle.repo, check=False)
        return await asyncio.to_thread(_pack, handle.workspace, bundle, f"{name}\n{email}\n", launch.files)


def _pack(workspace: Path, bundle: Path, identity: str, files: dict[Path, str]) -> bytes:
    tree = io.BytesIO()
    with tarfile.open(fileobj=tree, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(os.listdir(workspace)):
            if entry != ".git":  # the remote clone has its own
                tar.add(workspace / entry, arcname=entry, recursive=True)  # symlinks are stored as links
    configs = io.BytesIO()
    with tarfile.open(fileobj=configs, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, content in files.items():  # tar makes the missing folders on the way
            data = content.encode()
            info = tarfile.TarInfo(str(path).lstrip("/"))
            info.size, info.mode = len(data), 0o600  # may hold the agent's gateway key: its owner's only
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        tar.add(bundle, arcname="repo.bundle")
        for name, data in (
            ("tree.tar", tree.getvalue()),
            ("files.tar", configs.getvalue()),
            ("identity", identity.encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# ------------------------------------------------------------------------------------------------ coming back


def split_log(log: bytes, *, final: bool) -> tuple[bytes, bytes | None]:
    """(the agent's stdout, the packed result) from a pod's log: the entry prints the result after ``MARKER``.

    Running (``final`` false), the stdout is cut at the first marker, and a tail that could be the start of one is held
    back, so what is mirrored only ever grows; at the end it is cut at the last marker (the entry prints its own after
    the agent's process group is dead, so an agent printing the marker cannot shadow it)."""
    at = log.rfind(MARKER) if final else log.find(MARKER)
    if at < 0:
        if final:
            return log, None
        keep = len(log)
        for n in range(min(len(MARKER) - 1, len(log)), 0, -1):
            if MARKER.startswith(log[-n:]):
                keep = len(log) - n
                break
        return log[:keep], None
    if not final:
        return log[:at], None
    body = log[at + len(MARKER) :]
    end = body.find(END)
    if end < 0:
        return log[:at], None
    try:
        return log[:at], base64.b64decode(body[:end], validate=False)
    except (binascii.Error, ValueError):
        return log[:at], None


@dataclass(frozen=True)
class Result:
    code: int | None
    stderr: bytes
    bundle: bytes | None


def unpack_result(packed: bytes) -> Result:
    try:
        with tarfile.open(fileobj=io.BytesIO(packed), mode="r:gz") as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
            if sum(m.size for m in members.values()) > MAX_RESULT:
                raise RuntimeFailure("the remote workspace's result is too large to bring back")

            def read(name: str) -> bytes | None:
                member = members.get(name)
                f = tar.extractfile(member) if member is not None else None
                return f.read() if f is not None else None

            code_text = (read("code") or b"").strip()
            return Result(
                code=int(code_text) if code_text.lstrip(b"-").isdigit() else None,
                stderr=read("stderr.log") or b"",
                bundle=read("result.bundle"),
            )
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise RuntimeFailure(f"the remote workspace's result is unreadable: {exc}") from exc


async def apply_result(handle: RuntimeHandle, bundle: bytes) -> None:
    """Bring the agent's commits and working tree home: fetch the bundle into the repository, move the agent's branch
    to the agent's HEAD (only that branch), and lay its working tree into the local workspace."""
    incoming = f"refs/godel/incoming/{handle.agent_id}"
    with tempfile.TemporaryDirectory(prefix="godel-result-") as tmp:
        path = Path(tmp) / "result.bundle"
        path.write_bytes(bundle)
        await git(
            "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", str(path),
            f"+refs/godel/worktree:{incoming}/worktree", cwd=handle.repo,
        )  # fmt: skip
    try:
        # The working-tree commit's parent is the agent's HEAD (a bundle leaves out a ref at a commit the other
        # side has, so HEAD is not fetched by its own ref: an agent that committed nothing has HEAD at the start).
        work = await git("rev-parse", "--verify", f"{incoming}/worktree^{{commit}}", cwd=handle.repo)
        head = await git("rev-parse", "--verify", f"{work}^1", cwd=handle.repo)
        if handle.workspace.is_dir() and (handle.workspace / ".git").is_file():
            # The worktree has the branch checked out: a hard reset there moves the branch and its files together.
            await git("reset", "-q", "--hard", head, cwd=handle.workspace)
            await git("clean", "-fdq", cwd=handle.workspace)
            await lay_tree(handle.workspace, work)
        else:
            await git("update-ref", f"refs/heads/{handle.branch}", head, cwd=handle.repo)
    finally:
        await git_bytes("update-ref", "-d", f"{incoming}/worktree", cwd=handle.repo, check=False)
