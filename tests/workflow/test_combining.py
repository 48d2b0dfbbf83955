"""A step that depends on several steps starts from their work combined: Godel merges their branches with git
(``godel.workflow.combining``), and a conflict fails the step by name, leaving nothing half-merged behind."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import run_git
from tests.workflow.conftest import steps_by_id, submit, wait_finished

COMMIT = "git add -A && git commit -qm"

FAN_IN = f"""
name: fan-in
steps:
  - id: left
    command: 'echo from-left > left.txt && {COMMIT} left'
  - id: right
    command: 'echo from-right > right.txt && {COMMIT} right'
  - id: join
    dependsOn: [left, right]
    command: 'echo "GODEL_RESULT: $(cat left.txt) $(cat right.txt) $(cat README.md)"'
"""


async def test_a_step_after_two_parallel_steps_sees_both_files(client: httpx.AsyncClient, git_repo: Path) -> None:
    heads_before = run_git(git_repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/main")
    done = await wait_finished(client, (await submit(client, FAN_IN, git_repo))["id"])
    steps = steps_by_id(done)
    assert done["status"] == "completed", steps
    assert steps["join"]["output"] == "from-left from-right # demo"
    # join's branch starts at (and, join having committed nothing, is) a merge commit whose parents are the two
    # steps' branches, in dependsOn order.
    left, right, join = (steps[s]["branch"] for s in ("left", "right", "join"))
    assert run_git(git_repo, "rev-list", "--parents", "-n1", join).split()[1:] == [
        run_git(git_repo, "rev-parse", left),
        run_git(git_repo, "rev-parse", right),
    ]
    # The user's branch did not move; Godel made no branch of its own for the merge.
    assert run_git(git_repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/main") == heads_before


CONFLICT = f"""
name: clash
steps:
  - id: left
    command: 'echo from-left > same.txt && echo mine > README.md && {COMMIT} left'
  - id: right
    command: 'echo from-right > same.txt && echo theirs > README.md && echo ok > other.txt && {COMMIT} right'
  - id: join
    dependsOn: [left, right]
    command: 'echo "GODEL_RESULT: joined"'
"""


async def test_conflicting_work_fails_the_step_naming_the_files(client: httpx.AsyncClient, git_repo: Path) -> None:
    refs_before = run_git(git_repo, "for-each-ref", "--format=%(refname)")
    done = await wait_finished(client, (await submit(client, CONFLICT, git_repo))["id"])
    steps = steps_by_id(done)
    assert done["status"] == "failed"
    assert steps["left"]["status"] == steps["right"]["status"] == "completed"
    join = steps["join"]
    assert join["status"] == "failed" and join["agentId"] is None  # no agent was started on a broken base
    assert "merging 'right' into 'left' conflicts in" in join["error"]
    assert "README.md" in join["error"] and "same.txt" in join["error"] and "other.txt" not in join["error"]
    # Nothing half-merged: no new ref besides the two steps' own branches, the user's worktree untouched.
    refs_after = set(run_git(git_repo, "for-each-ref", "--format=%(refname)").split())
    assert refs_after - set(refs_before.split()) == {f"refs/heads/{steps[s]['branch']}" for s in ("left", "right")}
    assert run_git(git_repo, "status", "--porcelain") == ""
    assert not (git_repo / ".git" / "MERGE_HEAD").exists()


LOOK_THROUGH = f"""
name: look-through
steps:
  - id: write
    command: 'echo written > work.txt && {COMMIT} write'
  - id: check
    dependsOn: [write]
    when: 'false'
    command: 'echo never'
  - id: read
    dependsOn: [check]
    command: 'echo "GODEL_RESULT: $(cat work.txt)"'
"""


async def test_a_skipped_dependency_passes_on_the_work_before_it(client: httpx.AsyncClient, git_repo: Path) -> None:
    done = await wait_finished(client, (await submit(client, LOOK_THROUGH, git_repo))["id"])
    steps = steps_by_id(done)
    assert done["status"] == "completed", steps
    assert steps["check"]["status"] == "skipped"
    assert steps["read"]["output"] == "written"
