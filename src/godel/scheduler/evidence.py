"""The evidence a run leaves in its workspace (changed files, commits), read when it is judged, and the commit of
what a successful agent left uncommitted."""

from __future__ import annotations

import re

import structlog

from godel.core.ports import RuntimeHandle, WorkspaceGit
from godel.errors import GodelError
from godel.scheduler.deps import RunDeps

log = structlog.get_logger("godel.verdict")
_DIFF_FILE = re.compile(r"^diff --git ", re.MULTILINE)


async def commit_leftovers(deps: RunDeps, handle: RuntimeHandle) -> list[str]:
    """Commit what a successful agent left uncommitted, so its whole change is on its branch. Returns the
    branch's commits since the base afterwards ([] if nothing could be committed). A runtime whose workspaces Godel
    can run git on safely (``WorkspaceGit``) commits on the host with nothing the agent wrote able to run; any other
    commits through ``exec``, inside its own isolation."""
    message = f"godel: work of agent {handle.agent_id}\n\nCommitted by Godel when the agent completed."
    if isinstance(deps.runtime, WorkspaceGit):
        try:
            await deps.runtime.commit_all(handle, message)
        except GodelError as exc:
            log.warning("could not commit the agent's work", agent=handle.agent_id, error=exc.message)
            return []
        return await deps.runtime.commits(handle)
    identity: list[str] = []
    probe = await deps.runtime.exec(handle, ["git", "config", "user.email"], timeout=30)
    if probe.exit_code != 0 or not probe.stdout.strip():
        identity = ["-c", "user.name=Godel", "-c", "user.email=godel@localhost"]  # the repo has no identity
    added = await deps.runtime.exec(handle, ["git", "add", "-A"], timeout=120)
    if added.exit_code == 0:
        staged = await deps.runtime.exec(handle, ["git", "diff", "--cached", "--quiet"], timeout=120)
        if staged.exit_code == 0:  # the change was committed already (what counted was against the base)
            return await deps.runtime.commits(handle)
        added = await deps.runtime.exec(
            handle, ["git", *identity, "commit", "-q", "--no-verify", "-m", message], timeout=120
        )
    if added.exit_code != 0:
        log.warning("could not commit the agent's work", agent=handle.agent_id, error=added.stderr.strip())
        return []
    return await deps.runtime.commits(handle)


async def workspace_evidence(deps: RunDeps, handle: RuntimeHandle) -> tuple[int, list[str]]:
    try:
        diff = await deps.runtime.diff(handle)
        commits = await deps.runtime.commits(handle)
    except GodelError as exc:
        log.warning("could not read workspace evidence", agent=handle.agent_id, error=exc.message)
        return 0, []
    return len(_DIFF_FILE.findall(diff)), commits
