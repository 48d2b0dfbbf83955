"""Where a step's workspace starts: the work of the steps it depends on, combined by Godel with git.

The rule (docs/workflows.md, "Where a step starts"):

* a step's own ``baseRef`` wins;
* else it starts from the branches of its dependencies that *completed* -- each such branch holds that step's
  work on top of where it started, so work flows down the whole graph. A dependency that did not complete
  (skipped, failed with ``onError: continue``, or ran no agent) is looked through: its own dependencies count in
  its place. None at all: the workflow's base ref;
* one branch (or several where the others are already contained in one): that branch, as it is;
* several: a merge commit made by Godel, the first branch (in ``dependsOn`` order) merged with each next one in
  turn. The merges are computed by ``git merge-tree --write-tree``, which touches no working tree, index or
  branch: nothing is published unless every merge is clean, so a conflict leaves nothing half-merged behind,
  and the step fails naming the steps and files in conflict.

Cost: no git process for a step with at most one branch to start from, nor for one whose dependencies' branches
all ended at the same commit (each step records its branch's head when it completes, ``head``: steps that commit
nothing leave their branch where it started, so a wide DAG of checks or reviews never forks). Otherwise two, plus
two per merge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from godel.core.models import WorkflowStep
from godel.errors import GitError
from godel.runtimes.git import GODEL_IDENTITY, git, git_bytes
from godel.workflow.definition import StepDefinition, WorkflowDefinition
from godel.workflow.graph import StepStatus

MAX_FILES_NAMED = 20  # a conflict names this many files, then "and N more"


class CombineConflict(Exception):
    """The dependencies' branches cannot be merged without a conflict."""

    def __init__(self, merged: Sequence[str], step_id: str, files: Sequence[str]) -> None:
        shown = ", ".join(files[:MAX_FILES_NAMED]) + (
            f" and {len(files) - MAX_FILES_NAMED} more" if len(files) > MAX_FILES_NAMED else ""
        )
        self.files = list(files)
        self.message = (
            f"the work of the steps it depends on conflicts: merging {step_id!r} into "
            f"{' + '.join(repr(s) for s in merged)} conflicts in {shown or 'the tree'}"
        )
        super().__init__(self.message)


class Branch(NamedTuple):
    """A completed dependency's branch, and the commit it ended at (None: recorded by an older version)."""

    step_id: str
    branch: str
    head: str | None = None


def dependency_branches(
    definition: WorkflowDefinition, step: StepDefinition, rows: Mapping[str, WorkflowStep]
) -> list[Branch]:
    """The branches of the completed steps ``step`` builds on, in ``dependsOn`` order, each once."""
    out: list[Branch] = []
    seen: set[str] = set()

    def visit(step_id: str) -> None:
        if step_id in seen:
            return
        seen.add(step_id)
        row = rows[step_id]
        result = row.result or {}
        branch, head = result.get("branch"), result.get("head")
        if row.status == StepStatus.COMPLETED.value and branch:
            out.append(Branch(step_id, str(branch), str(head) if head else None))
            return
        for dep in definition.step(step_id).depends_on:  # looked through: its own dependencies count
            visit(dep)

    for dep in step.depends_on:
        visit(dep)
    return out


async def starting_point(repo: Path, base_ref: str, branches: Sequence[Branch], *, for_step: str) -> str:
    """The ref (or commit) a step's workspace starts from, given ``dependency_branches``; raises
    ``CombineConflict`` when they conflict and ``GitError`` when git cannot read them."""
    if not branches:
        return base_ref
    heads = {b.head for b in branches}
    if len(branches) == 1 or (len(heads) == 1 and None not in heads):
        return branches[0].branch  # one commit to start from, whichever branch names it: no git needed
    refs = [f"refs/heads/{b.branch}" for b in branches]
    commits = (await git("rev-parse", *refs, cwd=repo)).split()
    # The tips not contained in another one: only those need merging (a step that built on another's branch
    # already holds its work).
    independent = set((await git("merge-base", "--independent", *commits, cwd=repo)).split())
    tips: list[tuple[str, str, str]] = []  # (step id, branch, commit), dependsOn order, each commit once
    for (step_id, branch, _), commit in zip(branches, commits, strict=True):
        if commit in independent and all(commit != c for _, _, c in tips):
            tips.append((step_id, branch, commit))
    if len(tips) == 1:
        return tips[0][1]
    head, merged = tips[0][2], [tips[0][0]]
    for step_id, _, commit in tips[1:]:
        rc, out, err = await git_bytes(
            "merge-tree", "--write-tree", "--name-only", "--no-messages", head, commit, cwd=repo, check=False
        )
        lines = out.decode("utf-8", errors="replace").splitlines()
        if rc == 1:
            raise CombineConflict(merged, step_id, [line for line in lines[1:] if line])
        if rc != 0 or not lines:
            raise GitError(("merge-tree", head, commit), rc, err.decode("utf-8", errors="replace"))
        merged.append(step_id)
        message = f"Godel: combine the work of {', '.join(merged)} for step {for_step}"
        head = await git("commit-tree", lines[0], "-p", head, "-p", commit, "-m", message, cwd=repo,
                         env=GODEL_IDENTITY)  # fmt: skip
    return head
