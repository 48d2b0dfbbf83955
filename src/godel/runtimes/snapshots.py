"""Snapshots of a workspace as git refs.

A snapshot is an ordinary commit whose tree is the *whole* working tree (tracked changes and untracked files;
ignored files are left out, like build output), whose parent is the branch HEAD at the time, and which is
kept alive by ``refs/godel/snapshots/<id>`` in the user's repository. Taking one changes nothing the agent can
see: not HEAD, not its branch, not its index, not its files. The agent's commits (HEAD's history) are fetched into
the user's repository first (``gitdir.bring_back``, objects checked), then the tree is hashed by Godel's own git
into the user's store (``changes.workdir_tree``): only changed blobs are new, ``git gc`` keeps it (the ref holds
it), a fork in another workspace can start from it, and it survives the removal of the workspace it came from.

Each snapshot commit names its agent in a ``Godel-Agent:`` trailer; listing, restoring and deleting go
through that, so one agent cannot rewind another's workspace to a foreign state by id. Forking (a new
workspace from a snapshot) deliberately may use any agent's snapshot.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

from godel.core.ids import snapshot_ref
from godel.core.ports import RuntimeHandle, SnapshotInfo
from godel.errors import ConflictError, FieldError, SnapshotNotFoundError, ValidationError
from godel.runtimes.git import GODEL_IDENTITY, git, git_bytes, ref_exists
from godel.runtimes.workspaces import changes, gitdir, safegit
from godel.runtimes.workspaces.gitdir import AgentDirs, WorkspaceMeta

REFS = "refs/godel/snapshots/"
_TRAILER = "Godel-Agent: "
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def check_id(snapshot_id: str) -> None:
    """Snapshot ids become ref names; accept only a conservative, unambiguous subset."""
    if not _SAFE_ID.fullmatch(snapshot_id) or ".." in snapshot_id or snapshot_id.endswith((".lock", ".")):
        raise ValidationError(
            f"invalid snapshot id {snapshot_id!r}",
            [FieldError("snapshot_id", "use letters, digits, '.', '_' and '-', starting with a letter or digit")],
        )


def _owner(message: str) -> str | None:
    for line in message.splitlines():
        if line.startswith(_TRAILER):
            return line[len(_TRAILER) :].strip()
    return None


async def snapshot_commit(repo: Path, snapshot_id: str) -> str:
    """The commit behind a snapshot id; SnapshotNotFoundError when there is none."""
    check_id(snapshot_id)
    rc, out, _ = await git_bytes(
        "rev-parse", "--verify", "--quiet", f"{snapshot_ref(snapshot_id)}^{{commit}}", cwd=repo, check=False
    )
    if rc != 0:
        raise SnapshotNotFoundError(snapshot_id)
    return out.decode().strip()


async def _own_commit(handle: RuntimeHandle, snapshot_id: str) -> str:
    commit = await snapshot_commit(handle.repo, snapshot_id)
    message = await git("show", "-s", "--format=%B", commit, cwd=handle.repo)
    if _owner(message) != handle.agent_id:
        raise SnapshotNotFoundError(snapshot_id)  # another agent's snapshot is not this agent's to touch
    return commit


async def take(
    handle: RuntimeHandle, snapshot_id: str, dirs: AgentDirs, meta: WorkspaceMeta, *, ignored: bool = False
) -> SnapshotInfo:
    check_id(snapshot_id)
    ref = snapshot_ref(snapshot_id)
    if await ref_exists(handle.repo, ref):
        raise ConflictError(f"snapshot {snapshot_id!r} already exists", details={"snapshotId": snapshot_id})
    head = await gitdir.resolve(dirs, "HEAD")
    if head is None:
        raise ConflictError(f"the workspace of agent {handle.agent_id} has no HEAD commit to snapshot on",
                            details={"snapshotId": snapshot_id})  # fmt: skip
    await gitdir.bring_back(dirs, meta, also=(head,))  # the parent and its history, checked, into the user's store
    now = int(time.time())  # commit dates have second precision; created_at must read back the same
    env = {**GODEL_IDENTITY, "GIT_AUTHOR_DATE": f"{now} +0000", "GIT_COMMITTER_DATE": f"{now} +0000"}
    message = f"godel snapshot {snapshot_id}\n\n{_TRAILER}{handle.agent_id}\n"
    objects = meta.git_common / "objects"
    async with changes.workdir_tree(dirs, meta, handle.workspace, objects=objects, ignored=ignored) as (tree, _):
        commit = await safegit.text(["commit-tree", tree, "-p", head, "-m", message], git_dir=meta.git_common, env=env)
    # The empty old value makes the update fail if the ref appeared meanwhile, instead of overwriting it.
    rc, _, err = await safegit.run(["update-ref", ref, commit, ""], git_dir=meta.git_common, check=False)
    if rc != 0:
        raise ConflictError(
            f"snapshot {snapshot_id!r} could not be recorded: {err.decode(errors='replace').strip()}",
            details={"snapshotId": snapshot_id},
        )
    return SnapshotInfo(snapshot_id, ref, commit, head, datetime.fromtimestamp(now, UTC))


async def free_final_id(handle: RuntimeHandle) -> str:
    """``final-<agent-id>``, or ``final-<agent-id>-N`` when earlier cleanups already used it."""
    base = f"final-{handle.agent_id}"
    candidate, n = base, 1
    while await ref_exists(handle.repo, snapshot_ref(candidate)):
        n += 1
        candidate = f"{base}-{n}"
    return candidate


async def restore(handle: RuntimeHandle, snapshot_id: str, dirs: AgentDirs, meta: WorkspaceMeta) -> None:
    """Make the workspace exactly the snapshot: the branch moves back to the snapshot's parent, files added
    since are removed (ignored ones are kept), deleted ones come back; its changes are left uncommitted. Through the
    agent's git directory, neutralised; the rewound branch is brought back into the user's repository."""
    commit = await _own_commit(handle, snapshot_id)
    drivers = await safegit.configured_drivers(dirs.git, private=True)
    for args in (["reset", "-q", "--hard", f"{commit}^"], ["clean", "-fdq"]):
        await safegit.run(args, git_dir=dirs.git, work_tree=handle.workspace, drivers=drivers, private=True)
    await changes.lay_tree(dirs, handle.workspace, commit)
    await gitdir.bring_back(dirs, meta)


async def list_for(handle: RuntimeHandle) -> list[SnapshotInfo]:
    """This agent's snapshots, oldest first. Works after the workspace is gone (refs live in the repo)."""
    fmt = "%01%(refname)%00%(objectname)%00%(parent)%00%(committerdate:unix)%00%(contents)"
    out = await git("for-each-ref", f"--format={fmt}", REFS, cwd=handle.repo)
    infos = []
    for record in out.split("\x01")[1:]:
        ref, commit, parents, date, message = record.split("\x00", 4)
        if _owner(message) != handle.agent_id:
            continue
        created = datetime.fromtimestamp(int(date or 0), UTC)
        parent = parents.split(" ")[0] if parents else ""
        infos.append(SnapshotInfo(ref[len(REFS) :], ref, commit, parent, created))
    infos.sort(key=lambda s: (s.created_at, s.id))
    return infos


async def delete(handle: RuntimeHandle, snapshot_id: str) -> None:
    commit = await _own_commit(handle, snapshot_id)
    # Passing the old value deletes exactly the snapshot we checked, not one recreated in between.
    await git("update-ref", "-d", snapshot_ref(snapshot_id), commit, cwd=handle.repo)
