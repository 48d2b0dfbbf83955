"""The agent's private git directory, Godel's own view of the workspace, and the fetch that brings the branch back.

Per agent, under ``$GODEL_HOME/workspaces/<agent-id>/``:

* ``git/`` -- the agent's git directory, made by hand (no ``git init``, no template, no hooks): ``HEAD`` on its
  branch, the branch as its only ref, a configuration Godel writes (the user's identity, nothing that runs a
  program), ``objects/info/alternates`` naming the user's object store (read, never written: the agent's new
  objects land in ``git/objects``), the index of the checkout. The workspace's ``.git`` file points here. In the
  sandbox the agent may write objects, refs, logs, ``HEAD`` and the index, but not ``config``, ``commondir``,
  ``hooks``, ``info`` or ``objects/info`` (bound read-only over the writable folder).
* ``view/`` -- Godel's own git directory for reading the work tree (snapshots, diffs, the dirty check). Its
  configuration and attributes are Godel's and no sandbox ever sees it; its alternates name the user's store.
* ``workspace.json`` -- what Godel needs to find everything again after a restart.

``bring_back`` fetches the agent's branch (and any other commit a snapshot needs) into the user's repository with
``git fetch``, with ``transfer.fsckObjects`` on: objects reach the user's store only through ``index-pack``/
``unpack-objects --strict``, never as copied files, so a corrupt or malformed object the agent planted fails the
fetch and the user's branch stays where it was.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from godel.errors import GitError
from godel.runtimes.workspaces import safegit

log = structlog.get_logger("godel.runtime")

# Read-only inside a sandbox: what would let the agent change what Godel's own git does in this directory.
PROTECTED = ("config", "commondir", "hooks", "info", "objects/info")
_FSCK = {"transfer.fsckObjects": "true", "fetch.fsckObjects": "true", "fetch.writeCommitGraph": "false"}


@dataclass(frozen=True)
class AgentDirs:
    """Where one agent's workspace state lives (never inside the workspace)."""

    root: Path

    @property
    def git(self) -> Path:
        return self.root / "git"

    @property
    def view(self) -> Path:
        return self.root / "view"

    @property
    def upper(self) -> Path:
        return self.root / "upper"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def index(self) -> Path:
        """Godel's stat cache of the checkout (seeds the index of a snapshot; the agent's own is ``git/index``)."""
        return self.root / "index"

    @property
    def meta(self) -> Path:
        return self.root / "workspace.json"


@dataclass(frozen=True)
class WorkspaceMeta:
    repo: Path
    git_common: Path  # the user's repository's (common) git directory
    branch: str
    base: str
    checkout: str  # the commit the files were checked out at
    mode: str  # "overlay" or "checkout"
    lower: Path | None = None  # the cached checkout an overlay reads

    def dump(self) -> str:
        data: dict[str, Any] = {
            "repo": str(self.repo), "gitCommon": str(self.git_common), "branch": self.branch, "base": self.base,
            "checkout": self.checkout, "mode": self.mode, "lower": str(self.lower) if self.lower else None,
        }  # fmt: skip
        return json.dumps(data)

    @classmethod
    def load(cls, path: Path) -> WorkspaceMeta | None:
        try:
            data = json.loads(path.read_text())
            return cls(
                Path(data["repo"]), Path(data["gitCommon"]), data["branch"], data["base"], data["checkout"],
                data["mode"], Path(data["lower"]) if data.get("lower") else None,
            )  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _config(commit: str, extra: str = "") -> str:
    version, extensions = ("1", "[extensions]\n\tobjectformat = sha256\n") if len(commit) == 64 else ("0", "")
    return (
        f"[core]\n\trepositoryformatversion = {version}\n\tfilemode = true\n\tbare = false\n"
        f"\tlogallrefupdates = true\n{extensions}{extra}"
    )


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def make_git_dirs(
    dirs: AgentDirs, meta: WorkspaceMeta, tip: str, identity: dict[str, str], exclude: str,
    refs: Sequence[tuple[str, str]] = (),
) -> None:  # fmt: skip
    """Write the private git directory (its branch at ``tip``) and Godel's view; no index yet. ``refs``: (name,
    object) of the user's branches and tags as they stand, copied in so the agent can read, diff and merge them
    (``git merge godel/<another agent>``, as a refinery does); only the agent's own branch is ever brought back."""
    alternates = f"{meta.git_common / 'objects'}\n"
    for gitdir in (dirs.git, dirs.view):
        for sub in ("objects/pack", "objects/info", "refs/heads", "refs/tags", "info"):
            (gitdir / sub).mkdir(parents=True, exist_ok=True)
        _write(gitdir / "objects/info/alternates", alternates)
        _write(gitdir / "info/exclude", exclude)
    user = "".join(f"\t{key} = {_quote(value)}\n" for key, value in identity.items())
    _write(dirs.git / "config", _config(tip, f"[user]\n{user}" if user else ""))
    (dirs.git / "hooks").mkdir(exist_ok=True)
    (dirs.git / "logs/refs/heads").mkdir(parents=True, exist_ok=True)
    _write(dirs.git / "HEAD", f"ref: refs/heads/{meta.branch}\n")
    _write(dirs.git / "refs/heads" / meta.branch, f"{tip}\n")
    others = [(name, obj) for name, obj in refs if name != f"refs/heads/{meta.branch}"]
    if others:
        packed = "".join(f"{obj} {name}\n" for name, obj in sorted(others))
        _write(dirs.git / "packed-refs", "# pack-refs with: sorted\n" + packed)
    _write(dirs.git / "description", "Godel agent workspace\n")
    _write(dirs.git / "commondir", ".\n")  # its own common directory (see safegit.pin_commondir)
    _write(dirs.view / "config", _config(tip))
    _write(dirs.view / "HEAD", f"{tip}\n")
    _write(dirs.meta, meta.dump())


def write_gitfile(workspace: Path, gitdir: Path) -> None:
    """The workspace's ``.git`` file, for the agent's own git (Godel never reads it)."""
    path = workspace / ".git"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(f"gitdir: {gitdir}\n")


async def resolve(dirs: AgentDirs, rev: str) -> str | None:
    """The commit ``rev`` names in the agent's git directory (HEAD, its branch), or None."""
    rc, out, _ = await safegit.run(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], git_dir=dirs.git,
                                   check=False, private=True)  # fmt: skip
    return out.decode().strip() or None if rc == 0 else None


async def has_commit(git_common: Path, commit: str) -> bool:
    rc, _, _ = await safegit.run(["cat-file", "-e", f"{commit}^{{commit}}"], git_dir=git_common, check=False)
    return rc == 0


async def user_tip(git_common: Path, branch: str) -> str | None:
    rc, out, _ = await safegit.run(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], git_dir=git_common,
                                   check=False)  # fmt: skip
    return out.decode().strip() or None if rc == 0 else None


_LOCKS: dict[Path, asyncio.Lock] = {}  # one fetch at a time per workspace: two would race for the branch's lock


async def bring_back(dirs: AgentDirs, meta: WorkspaceMeta, *, also: tuple[str, ...] = ()) -> str | None:
    """Fetch the agent's branch into the user's repository (``refs/heads/<branch>`` moves to the agent's tip,
    forced: the branch is the agent's, rewinds included), with the objects of the commits in ``also``. Returns
    the tip brought back (None when the agent's git directory has no such branch any more: the user's branch is
    left as it is). GitError when the fetch fails (an object that does not pass fsck, say): nothing changed."""
    async with _LOCKS.setdefault(dirs.root, asyncio.Lock()):
        return await _bring_back(dirs, meta, also)


def forget(dirs: AgentDirs) -> None:
    """The workspace is gone: its lock too."""
    _LOCKS.pop(dirs.root, None)


async def _bring_back(dirs: AgentDirs, meta: WorkspaceMeta, also: tuple[str, ...]) -> str | None:
    tip = await resolve(dirs, f"refs/heads/{meta.branch}")
    wanted = [c for c in also if c and c != tip]
    missing = [c for c in wanted if not await has_commit(meta.git_common, c)]
    if tip is None and not missing:
        return None
    refspecs = list(missing)
    if tip is not None and await user_tip(meta.git_common, meta.branch) != tip:
        refspecs.insert(0, f"+{tip}:refs/heads/{meta.branch}")
    if refspecs:
        await asyncio.to_thread(safegit.pin_commondir, dirs.git)  # upload-pack finds its repository by itself
        args = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules",
                f"--upload-pack={safegit.upload_pack_command()}", "--", str(dirs.git), *refspecs]  # fmt: skip
        await safegit.run(args, git_dir=meta.git_common, config=_FSCK)
    return tip


async def bring_back_quietly(dirs: AgentDirs, meta: WorkspaceMeta, agent_id: str) -> str | None:
    """``bring_back`` for the moments that must go on when it fails (logged with the reason)."""
    try:
        return await bring_back(dirs, meta)
    except GitError as exc:
        log.warning("agent branch not brought back", agent=agent_id, branch=meta.branch, error=exc.stderr[-500:])
        return None
