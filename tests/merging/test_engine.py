"""The merge queue's engine on real repositories: sequential and batch runs, bisection, the refinery hook, and
what the queue must never touch (agent branches, the user's checkout)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from godel.errors import BranchCheckedOutError, NotAGitRepositoryError, RefNotFoundError, ValidationError
from godel.merging import BranchStatus, CommandResolver, MergeListener, MergeQueue, make_plan
from godel.merging.results import BranchResult
from tests.conftest import make_repo, run_git
from tests.merging.conftest import BRANCHES, VERIFY, Fixture, commit_branch


class Recorder(MergeListener):
    def __init__(self) -> None:
        self.phases: list[tuple[str | None, str]] = []
        self.results: list[tuple[int, str, str]] = []

    async def phase(self, branch: str | None, phase: str) -> None:
        self.phases.append((branch, phase))

    async def result(self, index: int, result: BranchResult) -> None:
        self.results.append((index, result.branch, result.status.value))


def by_branch(results: list[BranchResult]) -> dict[str, BranchResult]:
    return {r.branch: r for r in results}


def merge_subjects(fx: Fixture, ref: str) -> list[str]:
    return run_git(fx.repo, "log", "--first-parent", "--format=%s", f"main..{ref}").splitlines()[::-1]


async def test_five_branches_one_conflict_one_broken_gate(five: Fixture, fast_tmp: Path) -> None:
    user_before = five.user_state()
    plan = await make_plan(five.repo, "integration", BRANCHES, verify=VERIFY, verify_timeout=30)
    recorder = Recorder()
    queue = MergeQueue(plan, workdir=fast_tmp / "merges", listener=recorder)
    results = by_branch(await queue.run())

    assert [r.status for r in queue.results] == [
        BranchStatus.MERGED,
        BranchStatus.MERGED,
        BranchStatus.CONFLICT,
        BranchStatus.GATE_FAILED,
        BranchStatus.MERGED,
    ]
    # Three merged, in order, each as a merge commit on the integration branch.
    assert merge_subjects(five, "integration") == [
        f"Merge branch 'feature/{name}' into integration" for name in ("one", "two", "five")
    ]
    head = five.tip("integration")
    assert head == queue.head == results["feature/five"].commit
    for name in ("feature/one", "feature/two", "feature/five"):
        commit = results[name].commit
        assert commit is not None and run_git(five.repo, "rev-parse", f"{commit}^2") == five.tips[name]
    assert five.has(head, "one.txt") and five.has(head, "five.txt") and not five.has(head, "three.txt")
    assert five.show(head, "shared.txt") == "two"
    assert "BROKEN" not in five.show(head, "app.txt")

    # Two reported, with reasons.
    conflict = results["feature/three"]
    assert conflict.files == ["shared.txt"] and conflict.commit is None
    assert "shared.txt" in (conflict.reason or "")
    broken = results["feature/broken"]
    assert broken.exit_code == 1 and not broken.timed_out and broken.commit is None
    assert broken.reason == "verify command exited with 1"

    # All five branches intact, the user's checkout untouched, no worktree left behind.
    assert {b: five.tip(b) for b in BRANCHES} == five.tips
    assert five.user_state() == user_before
    assert run_git(five.repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert not any((fast_tmp / "merges").iterdir())

    assert [r[1:] for r in recorder.results] == [(r.branch, r.status.value) for r in queue.results]
    assert ("feature/broken", "verifying") in recorder.phases
    assert ("feature/three", "verifying") not in recorder.phases


async def test_gate_output_tail_is_reported(five: Fixture, fast_tmp: Path) -> None:
    verify = "echo running the tests; seq 1 5000; echo 'FAILED test_app' >&2; exit 3"
    plan = await make_plan(five.repo, "integration", ["feature/one"], verify=verify)
    (result,) = await MergeQueue(plan, workdir=fast_tmp / "m").run()
    assert result.status is BranchStatus.GATE_FAILED and result.exit_code == 3
    assert result.output is not None and result.output.rstrip().endswith("FAILED test_app")
    assert len(result.output) <= 4000 and "running the tests" not in result.output  # the tail only
    assert five.tip("integration") == five.tip("main")  # created, and nothing kept on it


async def test_gate_timeout(five: Fixture, fast_tmp: Path) -> None:
    plan = await make_plan(five.repo, "integration", ["feature/one"], verify="sleep 30", verify_timeout=0.3)
    (result,) = await MergeQueue(plan, workdir=fast_tmp / "m").run()
    assert result.status is BranchStatus.GATE_FAILED and result.timed_out and result.exit_code is None
    assert result.reason == "verify command timed out after 0.3s"


async def test_without_a_gate_merges_what_merges_cleanly(five: Fixture, fast_tmp: Path) -> None:
    plan = await make_plan(five.repo, "integration", BRANCHES)
    statuses = [r.status.value for r in await MergeQueue(plan, workdir=fast_tmp / "m").run()]
    assert statuses == ["merged", "merged", "conflict", "merged", "merged"]


async def test_into_an_existing_branch_and_already_merged(five: Fixture, fast_tmp: Path) -> None:
    run_git(five.repo, "branch", "integration", "feature/one")  # already has feature/one
    plan = await make_plan(five.repo, "integration", ["feature/one", "feature/five"], base="feature/two")
    assert not plan.create_into and plan.start == five.tips["feature/one"]  # base only counts for a new branch
    results = await MergeQueue(plan, workdir=fast_tmp / "m").run()
    assert [(r.status.value, r.reason) for r in results] == [
        ("skipped", "already in integration"),
        ("merged", None),
    ]
    assert run_git(five.repo, "rev-parse", "integration^1") == five.tips["feature/one"]


async def test_new_integration_branch_from_base(five: Fixture, fast_tmp: Path) -> None:
    plan = await make_plan(five.repo, "release/next", ["feature/five"], base="feature/one")
    assert plan.create_into and plan.start == five.tips["feature/one"]
    await MergeQueue(plan, workdir=fast_tmp / "m").run()
    head = five.tip("release/next")
    assert five.has(head, "one.txt") and five.has(head, "five.txt")


async def test_a_branch_created_or_checked_out_after_validation(five: Fixture, fast_tmp: Path) -> None:
    plan = await make_plan(five.repo, "integration", ["feature/five"])
    assert plan.create_into
    run_git(five.repo, "branch", "integration", "feature/one")  # another run created it meanwhile: built upon
    queue = MergeQueue(plan, workdir=fast_tmp / "m")
    await queue.run()
    assert queue.start == five.tips["feature/one"] and run_git(five.repo, "rev-parse", "integration^1") == queue.start

    plan = await make_plan(five.repo, "integration", ["feature/two"])
    other = fast_tmp / "elsewhere"
    run_git(five.repo, "worktree", "add", "--quiet", str(other), "integration")  # checked out meanwhile: refused
    queue = MergeQueue(plan, workdir=fast_tmp / "m")
    with pytest.raises(BranchCheckedOutError):
        await queue.run()
    assert [r.status.value for r in queue.results] == ["skipped"] and "checked out" in (queue.results[0].reason or "")
    run_git(five.repo, "worktree", "remove", str(other))


async def test_gate_leftovers_do_not_block_the_next_merge(five: Fixture, fast_tmp: Path) -> None:
    # The gate writes an untracked file that the next branch adds: it must not make that merge fail.
    commit_branch(five.repo, "feature/report", {"report.txt": "from the branch\n"})
    plan = await make_plan(five.repo, "integration", ["feature/one", "feature/report"], verify="echo x > report.txt")
    results = await MergeQueue(plan, workdir=fast_tmp / "m").run()
    assert [r.status.value for r in results] == ["merged", "merged"]
    assert five.show("integration", "report.txt") == "from the branch"


# ------------------------------------------------------------------------------------------------- batch


async def test_batch_bisects_to_the_branch_that_broke_the_gate(fast_tmp: Path) -> None:
    repo = make_repo(fast_tmp / "repo", {"app.txt": "app\n", "ok": "yes\n"})
    names = [f"agent/{i}" for i in range(8)]
    for i, name in enumerate(names):
        commit_branch(repo, name, {f"f{i}.txt": f"{i}\n", **({"app.txt": "app\nBROKEN\n"} if i == 5 else {})})
    counter = fast_tmp / "gate-runs"
    verify = f"echo run >> {counter}; ! grep -q BROKEN app.txt"
    plan = await make_plan(repo, "integration", names, verify=verify, batch=True)
    recorder = Recorder()
    queue = MergeQueue(plan, workdir=fast_tmp / "m", listener=recorder)
    results = await queue.run()

    assert [r.status.value for r in results] == ["merged"] * 5 + ["gate-failed"] + ["merged"] * 2
    culprit = results[5]
    assert culprit.exit_code == 1 and "bisecting a batch of 8" in (culprit.reason or "")
    (bisection,) = queue.bisections
    assert bisection.culprit == "agent/5" and bisection.branches == names
    assert bisection.steps[0] == {"branches": names, "passed": False}
    assert all(not s["passed"] for s in bisection.steps if "agent/5" in s["branches"])
    assert all(s["passed"] for s in bisection.steps if "agent/5" not in s["branches"])
    # 1 batch + 3 bisection steps (8 → 4 → 6 → 5) + 1 for the two branches after the culprit.
    assert len(counter.read_text().splitlines()) == 5
    head = run_git(repo, "rev-parse", "integration")
    assert "BROKEN" not in run_git(repo, "show", f"{head}:app.txt")
    merged_files = run_git(repo, "ls-tree", "--name-only", head).split()
    assert {f"f{i}.txt" for i in (0, 1, 2, 3, 4, 6, 7)} <= set(merged_files) and "f5.txt" not in merged_files
    assert len(run_git(repo, "log", "--first-parent", "--format=%H", "main..integration").split()) == 7
    assert ("agent/0", "merging") in recorder.phases and (None, "bisecting") in recorder.phases


async def test_batch_that_passes_runs_the_gate_once(five: Fixture, fast_tmp: Path) -> None:
    counter = fast_tmp / "gate-runs"
    plan = await make_plan(
        five.repo, "integration", ["feature/one", "feature/two", "feature/three", "feature/five"],
        verify=f"echo run >> {counter}; {VERIFY}", batch=True,
    )  # fmt: skip
    queue = MergeQueue(plan, workdir=fast_tmp / "m")
    results = by_branch(await queue.run())
    assert counter.read_text().count("run") == 1
    assert results["feature/three"].status is BranchStatus.CONFLICT
    assert [results[b].status.value for b in ("feature/one", "feature/two", "feature/five")] == ["merged"] * 3
    assert results["feature/five"].commit == five.tip("integration")
    assert queue.bisections == []


async def test_batch_blames_the_first_branch_only_if_the_start_passes(five: Fixture, fast_tmp: Path) -> None:
    plan = await make_plan(five.repo, "integration", ["feature/one", "feature/five"], verify="false", batch=True)
    queue = MergeQueue(plan, workdir=fast_tmp / "m")
    results = await queue.run()
    assert [r.status for r in results] == [BranchStatus.GATE_FAILED] * 2
    assert all("without any branch merged" in (r.reason or "") for r in results)
    assert queue.bisections[0].culprit is None
    assert five.tip("integration") == five.tip("main")


async def test_batch_the_first_branch_is_the_culprit(five: Fixture, fast_tmp: Path) -> None:
    plan = await make_plan(five.repo, "integration", ["feature/broken", "feature/one"], verify=VERIFY, batch=True)
    results = await MergeQueue(plan, workdir=fast_tmp / "m").run()
    assert [r.status.value for r in results] == ["gate-failed", "merged"]


# ----------------------------------------------------------------------------------------------- refinery


async def test_resolver_resolves_a_conflict_on_its_own_branch(five: Fixture, fast_tmp: Path) -> None:
    # In the refinery worktree HEAD is the agent's branch: "ours" keeps its side of each conflict.
    resolver = CommandResolver('git checkout --ours -- "$@"', fast_tmp / "refinery")
    plan = await make_plan(five.repo, "integration", ["feature/two", "feature/three"], verify=VERIFY)
    recorder = Recorder()
    results = await MergeQueue(plan, workdir=fast_tmp / "m", resolver=resolver, listener=recorder).run()

    two, three = results
    assert two.status is three.status is BranchStatus.MERGED
    resolution = three.resolution
    assert resolution is not None and resolution["resolver"] == "command" and resolution["files"] == ["shared.txt"]
    branch = resolution["branch"]
    assert branch.startswith("godel/refinery/feature-three-")
    assert run_git(five.repo, "rev-parse", f"refs/heads/{branch}") == resolution["commit"]
    # The refinery branch holds both sides; the agent's branches are untouched.
    for tip in (five.tips["feature/three"], five.tips["feature/two"]):
        run_git(five.repo, "merge-base", "--is-ancestor", tip, branch)
    assert {b: five.tip(b) for b in BRANCHES} == five.tips
    head = five.tip("integration")
    assert five.show(head, "shared.txt") == "three" and five.has(head, "three.txt")
    assert run_git(five.repo, "rev-parse", f"{three.commit}^2") == resolution["commit"]
    assert ("feature/three", "resolving") in recorder.phases
    assert run_git(five.repo, "worktree", "list", "--porcelain").count("worktree ") == 1


async def test_a_failed_resolution_is_a_conflict_and_leaves_no_branch(five: Fixture, fast_tmp: Path) -> None:
    resolver = CommandResolver("echo cannot decide; exit 4", fast_tmp / "refinery")
    plan = await make_plan(five.repo, "integration", ["feature/two", "feature/three"])
    _, three = await MergeQueue(plan, workdir=fast_tmp / "m", resolver=resolver).run()
    assert three.status is BranchStatus.CONFLICT and three.files == ["shared.txt"]
    assert three.resolution is not None and "exited with 4" in three.resolution["error"]
    assert "cannot decide" in three.resolution["error"]
    assert run_git(five.repo, "branch", "--list", "godel/refinery/*") == ""


async def test_a_resolution_that_leaves_conflicts_is_refused(five: Fixture, fast_tmp: Path) -> None:
    resolver = CommandResolver("true", fast_tmp / "refinery")
    plan = await make_plan(five.repo, "integration", ["feature/two", "feature/three"])
    _, three = await MergeQueue(plan, workdir=fast_tmp / "m", resolver=resolver).run()
    assert three.status is BranchStatus.CONFLICT
    assert three.resolution is not None and "conflict markers left in: shared.txt" in three.resolution["error"]


async def test_a_resolved_branch_still_goes_through_the_gate(five: Fixture, fast_tmp: Path) -> None:
    # The resolution keeps the integration side but also breaks app.txt: the gate catches it.
    resolver = CommandResolver('git checkout --theirs -- "$@" && echo BROKEN >> app.txt', fast_tmp / "refinery")
    plan = await make_plan(five.repo, "integration", ["feature/two", "feature/three"], verify=VERIFY)
    _, three = await MergeQueue(plan, workdir=fast_tmp / "m", resolver=resolver).run()
    assert three.status is BranchStatus.GATE_FAILED and three.resolution is not None
    assert five.show("integration", "shared.txt") == "two"


# ---------------------------------------------------------------------------------------------- validation


async def test_validation(five: Fixture, fast_tmp: Path) -> None:
    (fast_tmp / "plain").mkdir()
    with pytest.raises(NotAGitRepositoryError):
        await make_plan(fast_tmp / "plain", "integration", ["x"])
    with pytest.raises(RefNotFoundError) as unknown:
        await make_plan(five.repo, "integration", ["feature/one", "feature/nope"])
    assert [f.field for f in unknown.value.fields] == ["branches[1]"]
    with pytest.raises(ValidationError) as empty:
        await make_plan(five.repo, "integration", [])
    assert [f.field for f in empty.value.fields] == ["branches"]
    with pytest.raises(ValidationError) as same:
        await make_plan(five.repo, "feature/one", ["feature/two", "feature/one"])
    assert [f.field for f in same.value.fields] == ["into"]
    with pytest.raises(ValidationError) as twice:
        await make_plan(five.repo, "integration", ["feature/one", "refs/heads/feature/one"])
    assert [f.field for f in twice.value.fields] == ["branches[1]"]
    with pytest.raises(ValidationError) as bad_name:
        await make_plan(five.repo, "no..good", ["feature/one"])
    assert [f.field for f in bad_name.value.fields] == ["into"]
    with pytest.raises(RefNotFoundError) as bad_base:
        await make_plan(five.repo, "integration", ["feature/one"], base="nowhere")
    assert [f.field for f in bad_base.value.fields] == ["base"]
    with pytest.raises(BranchCheckedOutError) as checked_out:
        await make_plan(five.repo, "main", ["feature/one"])  # the user's checkout is on main
    assert checked_out.value.status_code == 409 and checked_out.value.details["worktree"] == str(five.repo)


async def test_a_branch_moved_by_someone_else_stops_the_run(five: Fixture, fast_tmp: Path) -> None:
    plan = await make_plan(five.repo, "integration", ["feature/one", "feature/five"], verify="sleep 0.2")

    class Mover(MergeListener):
        async def phase(self, branch: str | None, phase: str) -> None:
            if branch == "feature/five" and phase == "verifying":
                run_git(five.repo, "update-ref", "refs/heads/integration", five.tips["feature/two"])

    queue = MergeQueue(plan, workdir=fast_tmp / "m", listener=Mover())
    with pytest.raises(Exception, match="moved by someone else"):
        await queue.run()
    assert five.tip("integration") == five.tips["feature/two"]  # theirs, not overwritten
    assert [r.status.value for r in queue.results] == ["merged", "skipped"]
    assert not any((fast_tmp / "m").iterdir())


async def test_merges_without_a_git_identity(five: Fixture, fast_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A server may run where git has no user.name/user.email: the merge commits still get a committer.
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(name, raising=False)
    (fast_tmp / "home").mkdir()
    monkeypatch.setenv("HOME", str(fast_tmp / "home"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    plan = await make_plan(five.repo, "integration", ["feature/one"])
    (result,) = await MergeQueue(plan, workdir=fast_tmp / "m").run()
    assert result.status is BranchStatus.MERGED, result.reason
    assert run_git(five.repo, "log", "-1", "--format=%ce", "integration")


async def test_the_repositorys_own_tests_as_the_gate(fast_tmp: Path) -> None:
    test = "from app import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
    repo = make_repo(fast_tmp / "repo", {"app.py": "def add(a, b):\n    return a + b\n", "test_app.py": test})
    commit_branch(repo, "agent/docs", {"README.md": "# adds numbers\n"})
    commit_branch(repo, "agent/faster", {"app.py": "def add(a, b):\n    return a * b\n"})
    verify = f"{sys.executable} -m pytest -q -p no:cacheprovider test_app.py"
    plan = await make_plan(repo, "integration", ["agent/docs", "agent/faster"], verify=verify, verify_timeout=60)
    docs, faster = await MergeQueue(plan, workdir=fast_tmp / "m").run()
    assert docs.status is BranchStatus.MERGED
    assert faster.status is BranchStatus.GATE_FAILED and faster.exit_code == 1
    assert faster.output is not None and "1 failed" in faster.output and "assert 6 == 5" in faster.output
    assert "return a + b" in run_git(repo, "show", "integration:app.py")
