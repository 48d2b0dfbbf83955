"""What a workspace holds, read by Godel: its tree, its diff against the base, whether it is dirty, its commits;
and the commit of what an agent left uncommitted.

The work tree is read through Godel's own git directory (``view``), whose configuration no agent can write,
with a temporary index seeded from Godel's stat cache of the checkout: ``add -A`` rehashes only the files that
changed, and neither the agent's index nor its configuration is involved. New objects go to a temporary store
(a diff, the dirty check) or to the user's store (a snapshot: blobs and trees hashed by Godel's git from the files'
bytes, well-formed by construction). Committing on the agent's branch goes through the agent's git directory,
neutralised (``safegit``), and the branch is brought back into the user's repository at once.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from godel.runtimes.git import GODEL_IDENTITY
from godel.runtimes.workspaces import safegit
from godel.runtimes.workspaces.gitdir import AgentDirs, WorkspaceMeta, bring_back, resolve
from godel.runtimes.workspaces.jail import Jail

DIFF_OPTIONS = ("diff", "--no-color", "--no-ext-diff", "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/")


def _alternate(path: Path) -> str:
    text = str(path)
    if ":" in text or text.startswith('"'):  # the variable is colon-separated; a quoted entry may hold anything
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


@asynccontextmanager
async def workdir_tree(
    dirs: AgentDirs, meta: WorkspaceMeta, workspace: Path, *, objects: Path | None = None, ignored: bool = False
) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """The id of a tree of the whole working tree (tracked changes and untracked files; ignored ones too with
    ``ignored``), and the environment under which its objects can be read (in ``view``) while the context lasts.
    ``objects``: the store new objects go to (default: a temporary one, gone afterwards)."""
    with tempfile.TemporaryDirectory(prefix="godel-index-") as tmp:
        index = Path(tmp) / "index"
        env = {"GIT_INDEX_FILE": str(index)}
        if objects is None:
            (Path(tmp) / "objects").mkdir()
            env["GIT_OBJECT_DIRECTORY"] = str(Path(tmp) / "objects")
            env["GIT_ALTERNATE_OBJECT_DIRECTORIES"] = _alternate(meta.git_common / "objects")
        else:
            env["GIT_OBJECT_DIRECTORY"] = str(objects)
        if await asyncio.to_thread(_copy_if_exists, dirs.index, index):
            pass  # the stat cache: only changed files are hashed
        else:
            await safegit.run(["read-tree", meta.checkout], git_dir=dirs.view, env=env)
        # The one command that reads the work tree, which the agent may be changing meanwhile: confined (jail).
        seen = Jail(readonly=[dirs.view, meta.git_common / "objects"] if objects is None else [dirs.view],
                    writable=[Path(tmp)] if objects is None else [Path(tmp), objects])  # fmt: skip
        await safegit.run(["add", "-A", *(["--force"] if ignored else [])], git_dir=dirs.view, work_tree=workspace,
                          env=env, confine=seen)  # fmt: skip
        tree = await safegit.text(["write-tree"], git_dir=dirs.view, env=env)
        yield tree, env


async def diff(dirs: AgentDirs, meta: WorkspaceMeta, workspace: Path, base: str) -> str:
    async with workdir_tree(dirs, meta, workspace) as (tree, env):
        _, out, _ = await safegit.run([*DIFF_OPTIONS, base, tree], git_dir=dirs.view, env=env)
    return out.decode("utf-8", errors="replace")


async def branch_diff(git_common: Path, base: str, branch: str) -> str:
    _, out, _ = await safegit.run([*DIFF_OPTIONS, base, f"refs/heads/{branch}"], git_dir=git_common)
    return out.decode("utf-8", errors="replace")


async def commits(git_common: Path, base: str, branch: str) -> list[str]:
    out = await safegit.text(["rev-list", "--reverse", f"{base}..refs/heads/{branch}"], git_dir=git_common)
    return out.split()


async def is_dirty(dirs: AgentDirs, meta: WorkspaceMeta, workspace: Path, head: str) -> bool:
    """True when the working tree differs from the commit ``head`` (which the user's store holds)."""
    async with workdir_tree(dirs, meta, workspace) as (tree, env):
        head_tree = await safegit.text(["rev-parse", f"{head}^{{tree}}"], git_dir=dirs.view, env=env)
    return tree != head_tree


async def commit_all(dirs: AgentDirs, meta: WorkspaceMeta, workspace: Path, message: str | None) -> bool:
    """Commit everything in the workspace on the agent's current branch (``message`` None: conclude a merge in
    progress, and only when no path is left unmerged); True when a commit was made. The branch is brought back."""
    drivers = await safegit.configured_drivers(dirs.git, private=True)
    identity: dict[str, str] = {}

    async def agent_git(*args: str, check: bool = True, confine: Jail | None = None) -> tuple[int, bytes]:
        rc, out, _ = await safegit.run(args, git_dir=dirs.git, work_tree=workspace, drivers=drivers, env=identity,
                                       check=check, private=True, confine=confine)  # fmt: skip
        return rc, out

    rc, email = await agent_git("config", "user.email", check=False)
    identity = {} if rc == 0 and email.strip() else dict(GODEL_IDENTITY)  # the user's, else Godel's
    if message is None:
        if (await agent_git("rev-parse", "-q", "--verify", "MERGE_HEAD", check=False))[0] != 0:
            return False  # no merge in progress
        _, unmerged = await agent_git("diff", "--name-only", "--diff-filter=U", check=False)
        if unmerged.strip():
            return False  # still conflicted
    await agent_git("add", "-A", confine=Jail(readonly=[meta.git_common / "objects"]))  # reads the work tree
    if message is not None and (await agent_git("diff", "--cached", "--quiet", check=False))[0] == 0:
        return False  # nothing to commit
    how = ["-m", message] if message is not None else ["--no-edit"]
    await agent_git("commit", "-q", "--no-verify", *how)
    await bring_back(dirs, meta, also=tuple(filter(None, [await resolve(dirs, "HEAD")])))
    return True


async def lay_tree(dirs: AgentDirs, workspace: Path, commit: str) -> None:
    """Put ``commit``'s tree into the working tree as uncommitted changes on top of the current HEAD (a fork from
    a snapshot, a restore). Through the agent's git directory, neutralised: its drivers run nothing."""
    drivers = await safegit.configured_drivers(dirs.git, private=True)
    await safegit.run(
        ["read-tree", "-u", "--reset", commit], git_dir=dirs.git, work_tree=workspace, drivers=drivers, private=True
    )
    # The index back to HEAD: the changes show as unstaged and untracked.
    await safegit.run(["reset", "-q"], git_dir=dirs.git, work_tree=workspace, drivers=drivers, private=True)


def _copy_if_exists(src: Path, dst: Path) -> bool:
    try:
        shutil.copyfile(src, dst)
    except FileNotFoundError:
        return False
    return True
