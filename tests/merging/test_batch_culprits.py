"""Batch mode must end where sequential mode ends: a branch whose fate hung on a culprit that bisection threw out
(it conflicted only with the culprit, or was "already in" only through it) goes round again instead of being
reported against a merge that did not stay. And a gate that exits 0 is a pass, even if it left a child behind."""

from __future__ import annotations

import time
from pathlib import Path

from godel.merging.engine import MergeQueue
from godel.merging.plan import make_plan
from godel.merging.verify import run_gate
from tests.conftest import make_repo, run_git
from tests.merging.conftest import commit_branch

VERIFY = "! grep -q BROKEN app.txt"


async def outcomes(repo: Path, workdir: Path, branches: list[str], *, batch: bool) -> dict[str, str]:
    into = "int-batch" if batch else "int-seq"
    plan = await make_plan(repo, into, branches, verify=VERIFY, verify_timeout=30, batch=batch)
    results = await MergeQueue(plan, workdir=workdir / into).run()
    return {r.branch: r.status.value for r in results}


async def test_a_branch_that_only_conflicts_with_the_culprit_is_merged(fast_tmp: Path) -> None:
    repo = make_repo(fast_tmp / "repo", {"app.txt": "app\n", "shared.txt": "base\n"})
    commit_branch(repo, "culprit", {"app.txt": "app\nBROKEN\n", "shared.txt": "culprit\n"})
    commit_branch(repo, "fine", {"shared.txt": "fine\n"})  # conflicts with the culprit, not with main
    expected = {"culprit": "gate-failed", "fine": "merged"}
    assert await outcomes(repo, fast_tmp, ["culprit", "fine"], batch=False) == expected
    assert await outcomes(repo, fast_tmp, ["culprit", "fine"], batch=True) == expected
    assert run_git(repo, "show", "int-batch:shared.txt") == "fine"


async def test_a_branch_inside_the_culprit_is_merged_not_skipped(fast_tmp: Path) -> None:
    repo = make_repo(fast_tmp / "repo", {"app.txt": "app\n"})
    base = commit_branch(repo, "base-work", {"good.txt": "good\n"})
    commit_branch(repo, "culprit", {"app.txt": "app\nBROKEN\n"}, start="base-work")  # base-work + a breakage
    expected = {"culprit": "gate-failed", "base-work": "merged"}
    assert await outcomes(repo, fast_tmp, ["culprit", "base-work"], batch=True) == expected
    run_git(repo, "merge-base", "--is-ancestor", base, "int-batch")  # raises unless it is really in


async def test_a_gate_that_exits_0_with_a_background_child_passes_at_once(fast_tmp: Path) -> None:
    started = time.monotonic()
    gate = await run_gate("(sleep 30 &) ; echo done; exit 0", fast_tmp, timeout=10)
    assert gate.ok and gate.output == "done\n" and time.monotonic() - started < 5
