"""Which branches a team's or a workflow's merge takes: its agents' branches, oldest agent first.

An agent counts when its branch exists in the repository being merged and has commits beyond the agent's base
commit; agents of another repository, agents whose branch is gone, and agents that changed nothing are left
out. A branch is taken at its tip when the merge is asked for, so an agent that is still running contributes
what it has committed so far: its branch is brought back from its workspace first (``WorkspaceGit``).

A workflow's agents are the ones its steps name (``workflow_steps.agent_id``) and the ones spawned with
``metadata.workflowId`` (the workflow engine sets both on the agents it starts, as well as ``team_id``).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from godel.core.models import Agent
from godel.core.ports import AgentQuery, Store
from godel.errors import AgentNotFoundError, FieldError, ValidationError
from godel.merging.plan import Candidate
from godel.runtimes.git import git_bytes
from godel.store import SqlStore
from godel.store.merging import workflow_agent_ids

_PAGE = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


BringBack = Callable[[Path, Sequence[str]], Awaitable[None]]


async def team_candidates(
    store: Store, repo: Path, team_id: str, bring_back: BringBack | None = None
) -> list[Candidate]:
    agents: list[Agent] = []
    cursor: str | None = None
    while True:
        page = await store.list_agents(AgentQuery(team_id=team_id, limit=_PAGE, cursor=cursor))
        agents.extend(page.items)
        if not page.has_more or page.cursor is None:
            break
        cursor = page.cursor
    found = await _with_commits(repo, agents, bring_back)
    if not found:
        raise ValidationError(
            f"no agent of team {team_id} has commits on its branch in {repo}",
            [FieldError("teamId", "no agent of this team has a branch with commits to merge")],
        )
    return found


async def workflow_candidates(
    store: Store, repo: Path, workflow_id: str, bring_back: BringBack | None = None
) -> list[Candidate]:
    if not isinstance(store, SqlStore):  # the only store there is; a test double would not know workflows
        raise ValidationError("this store cannot list a workflow's agents", [FieldError("workflowId", "unsupported")])
    agents = []
    for agent_id in await workflow_agent_ids(store, workflow_id):
        try:
            agents.append(await store.get_agent(agent_id))
        except AgentNotFoundError:  # deleted between the two reads
            continue
    found = await _with_commits(repo, agents, bring_back)
    if not found:
        raise ValidationError(
            f"no agent of workflow {workflow_id} has commits on its branch in {repo}",
            [FieldError("workflowId", "no agent of this workflow has a branch with commits to merge")],
        )
    return found


async def _with_commits(repo: Path, agents: Iterable[Agent], bring_back: BringBack | None) -> list[Candidate]:
    ordered = sorted(agents, key=lambda a: (a.spawned_at or _EPOCH, a.id))
    mine = [a for a in ordered if a.branch and a.repo and _same_path(Path(a.repo), repo)]
    if bring_back is not None and mine:
        await bring_back(repo, [a.branch for a in mine if a.branch])
    out = []
    for agent in mine:
        assert agent.branch is not None
        base = agent.base_commit or agent.base_ref
        rc, count, _ = await git_bytes(
            "rev-list", "--count", f"{base}..refs/heads/{agent.branch}", "--", cwd=repo, check=False
        )
        if rc == 0 and int(count.strip() or 0) > 0:
            out.append(Candidate(agent.branch, agent_id=agent.id))
    return out


def _same_path(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
