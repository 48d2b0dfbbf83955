"""A refinery agent: a conflict handed to a real agent CLI, resolved on the agent's own branch.

The agent is spawned like any other (its own worktree and branch ``godel/<agent-id>``, through the gateway) at
the conflicting branch's tip; its setup starts ``git merge --no-commit`` of the integration commit, so the agent
finds the conflict in progress, with the markers in the files. Its task says which files conflict and asks for
the markers to be resolved, nothing committed. When it completes, Godel commits what it left -- which concludes
the merge, so the branch holds both sides -- and the queue checks that before merging it: both commits are
ancestors, and no conflict marker is left in the files. The conflicting agent's branch is never touched.
"""

from __future__ import annotations

import contextlib
import shlex
from dataclasses import dataclass

from godel.core.models import Agent
from godel.core.ports import WorkspaceGit
from godel.core.states import AgentState
from godel.errors import GodelError
from godel.merging.resolver import Conflict, Resolution, ResolutionFailed
from godel.runtimes.git import git_bytes
from godel.scheduler.handles import handle_of
from godel.scheduler.plane import ControlPlane
from godel.scheduler.requests import SpawnRequest

DEFAULT_TIMEOUT = 1800.0


@dataclass(frozen=True)
class RefineryConfig:
    agent: str  # the adapter: "pi", "claude", …
    model: str = ""  # "provider/model"
    timeout: float = DEFAULT_TIMEOUT


async def _conclude_merge(plane: ControlPlane, agent: Agent) -> None:
    """Commit a merge the agent resolved but Godel did not commit (nothing differed from the branch's side, or
    ``commit_on_complete`` is off): only when no path is left unmerged. Through the runtime: Godel's neutralised
    git on the host (``WorkspaceGit``, which brings the branch back), or ``exec`` inside the runtime's isolation."""
    if not agent.worktree:
        return
    runtime = plane.runtime
    handle = handle_of(agent, runtime.name, plane.settings.worktrees_dir)
    if isinstance(runtime, WorkspaceGit):
        await runtime.commit_all(handle, None)
        return
    probe = await runtime.exec(handle, ["git", "rev-parse", "-q", "--verify", "MERGE_HEAD"], timeout=60)
    if probe.exit_code != 0:
        return  # no merge in progress: Godel's commit concluded it (or the agent did)
    unmerged = await runtime.exec(handle, ["git", "diff", "--name-only", "--diff-filter=U"], timeout=60)
    if unmerged.exit_code != 0 or unmerged.stdout.strip():
        return  # still conflicted: the checks below say so
    identity = ["-c", "user.name=Godel", "-c", "user.email=godel@localhost"]
    await runtime.exec(handle, ["git", "add", "-A"], timeout=120)
    await runtime.exec(handle, ["git", *identity, "commit", "-q", "--no-edit", "--no-verify"], timeout=120)
    await runtime.commits(handle)


def refinery_task(conflict: Conflict) -> str:
    files = "\n".join(f"- {f}" for f in conflict.files) or "- (see `git status`)"
    return (
        f"You are the refinery of a merge queue. This workspace is branch {conflict.branch} with the integration "
        f"branch {conflict.into} being merged into it, and the merge stopped on conflicts in:\n{files}\n\n"
        "Resolve every conflict so that the intent of both sides is kept: edit each file, remove every conflict "
        "marker (<<<<<<<, =======, >>>>>>>), and leave the files saved. Do not commit, abort or reset the merge: "
        "Godel commits your resolution when you are done."
    )


class AgentResolver:
    name = "agent"

    def __init__(self, plane: ControlPlane, config: RefineryConfig, *, team_id: str | None = None) -> None:
        self.plane = plane
        self.config = config
        self.team_id = team_id

    async def resolve(self, conflict: Conflict) -> Resolution | None:
        request = SpawnRequest(
            task=refinery_task(conflict), repo=str(conflict.repo), base_ref=conflict.tip, agent=self.config.agent,
            model=self.config.model, timeout=self.config.timeout, team_id=self.team_id,
            # The merge is started before the agent: it must find the conflict as it is, markers and all.
            setup=f"git merge --no-commit --no-ff {shlex.quote(conflict.onto)} >/dev/null 2>&1 || true",
            label=f"refinery:{conflict.branch}"[:255],
            metadata={"role": "refinery", "conflict": {"branch": conflict.branch, "into": conflict.into,
                                                       "files": list(conflict.files)}},
        )  # fmt: skip
        agent = await self.plane.spawn(request, actor="refinery")
        try:
            done = await self.plane.wait_for_end(agent.id, timeout=self.config.timeout + 300)
        except BaseException as exc:  # waited too long (paused by its budget, say), or the merge run is stopping
            with contextlib.suppress(GodelError):
                await self.plane.kill(agent.id, actor="refinery", reason="the merge no longer waits for it")
            if isinstance(exc, TimeoutError):
                raise ResolutionFailed(f"the refinery agent {agent.id} did not end in time") from None
            raise
        if done.state != AgentState.COMPLETED or not done.branch:
            raise ResolutionFailed(f"the refinery agent {agent.id} ended {done.state.value}: {done.last_error}")
        branch = done.branch
        repo = conflict.repo
        await _conclude_merge(self.plane, done)
        for commit in (conflict.tip, conflict.onto):
            rc, _, _ = await git_bytes("merge-base", "--is-ancestor", commit, branch, cwd=repo, check=False)
            if rc != 0:
                raise ResolutionFailed(f"the refinery agent {agent.id} left {branch} without commit {commit[:12]}")
        rc, found, _ = await git_bytes("grep", "-n", "-E", "^(<<<<<<<|>>>>>>>)( |$)", branch, "--", *conflict.files,
                                       cwd=repo, check=False)  # fmt: skip
        if rc == 0:
            markers = found.decode(errors="replace")[:500]
            raise ResolutionFailed(f"the refinery agent {agent.id} left conflict markers: {markers}")
        return Resolution(branch, note=f"resolved by {self.config.agent} agent {agent.id}")
