"""The merge queue: branches merged one by one into an integration branch, each behind a gate.

Sequential (the default): for each branch in order, ``git merge --no-ff`` in the integration worktree; a
conflict is recorded (the conflicting files) and aborted, or handed to the resolver when there is one; a clean
merge runs the verify command, and a failing gate is recorded (exit code, output tail) and the merge undone.
Only a merge that passed is published to the integration branch. Whatever one branch does, the queue goes on
with the next.

Batch: merge every branch first and run the gate once. When it fails, the branch that broke it is found by
bisection: the batch's prefixes are rebuilt from the last good commit and verified, halving the range each
time (about log2(n) gate runs instead of n). The prefix before the culprit is published, the culprit is
reported as gate-failed with the output of the run that caught it, and the branches after it go round again
as a new batch. This assumes a deterministic gate; a flaky one can blame the wrong branch.

The queue never writes an agent branch: it merges their commits by id and only moves the integration branch.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from godel.errors import GodelError, RuntimeFailure
from godel.merging.plan import Candidate, MergePlan
from godel.merging.resolver import Conflict, ResolutionFailed, Resolver, refinery_branch
from godel.merging.results import Bisection, BranchResult, BranchStatus
from godel.merging.verify import Gate, confined, run_gate
from godel.merging.worktree import IntegrationTree, MergeOutcome, create_branch, ensure_not_checked_out
from godel.runtimes.git import git, ref_exists


class MergeListener:
    """What a caller hears while a run goes on; the defaults ignore it (the engine works without one)."""

    async def phase(self, branch: str | None, phase: str) -> None:
        """``merging`` / ``resolving`` / ``verifying`` a branch, or ``verifying`` / ``bisecting`` a batch (None)."""

    async def result(self, index: int, result: BranchResult) -> None:
        """A branch's final result (called once per branch, in the order they are decided)."""


@dataclass
class _Merged:
    """A branch merged cleanly in the current batch round, and how to merge it again when rebuilding."""

    index: int
    candidate: Candidate
    ref: str  # the commit merged: the branch tip, or the refinery branch's when a conflict was resolved
    resolution: dict[str, Any] | None
    started: float


class MergeQueue:
    def __init__(
        self,
        plan: MergePlan,
        *,
        workdir: Path,
        resolver: Resolver | None = None,
        listener: MergeListener | None = None,
        run_id: str | None = None,
        runtime: object = None,
    ) -> None:
        """``runtime``: the server's default runtime; when it confines commands (``CommandConfinement``), the gate
        runs inside such a confinement (it runs what agents wrote)."""
        self.plan = plan
        self.runtime = runtime
        self.run_id = run_id or uuid.uuid4().hex
        self.workdir = workdir  # the integration worktree is created at workdir/<run id>, removed after
        self.resolver = resolver
        self.listener = listener or MergeListener()
        self.results: list[BranchResult] = [BranchResult(c.name, c.tip, agent_id=c.agent_id) for c in plan.candidates]
        self.bisections: list[Bisection] = []
        self.start: str = plan.start  # where the integration branch stood when the run began
        self._tree: IntegrationTree | None = None

    @property
    def head(self) -> str:
        """Where the integration branch stands now, as far as this run has moved it."""
        return self._tree.published if self._tree is not None else self.start

    # ------------------------------------------------------------------------------------------ running

    async def run(self) -> list[BranchResult]:
        """Merge every branch; returns the results in the plan's order. A failure of the run itself (git cannot
        create the worktree, the integration branch was moved by someone else) raises, after marking the
        branches not reached as skipped."""
        tree: IntegrationTree | None = None
        repo, into = self.plan.repo, self.plan.into
        try:
            # Checked again: a run may have waited for another into the same branch, which created it, or
            # someone may have checked the branch out since the request was validated.
            if not await ref_exists(repo, f"refs/heads/{into}"):
                await create_branch(repo, into, self.plan.start)
            await ensure_not_checked_out(repo, into)
            tree = self._tree = await IntegrationTree.open(repo, into, self.workdir / self.run_id)
            self.start = tree.published
            if self.plan.batch:
                await self._batch(tree)
            else:
                for index, candidate in enumerate(self.plan.candidates):
                    await self._sequential(tree, index, candidate)
        except BaseException as exc:  # cancellation too: every branch gets a result
            why = "the merge was cancelled" if isinstance(exc, asyncio.CancelledError) else _describe(exc)
            for result in self.results:
                if result.status is BranchStatus.PENDING:
                    result.status, result.reason = BranchStatus.SKIPPED, f"not reached: {why}"
            raise
        finally:
            if tree is not None:
                await asyncio.shield(tree.close())
        return self.results

    async def _sequential(self, tree: IntegrationTree, index: int, candidate: Candidate) -> None:
        started = time.monotonic()
        if await tree.contains(candidate.tip):
            await self._decide(index, started, BranchStatus.SKIPPED, reason=f"already in {self.plan.into}")
            return
        await self.listener.phase(candidate.name, "merging")
        before = tree.head
        outcome, resolution = await self._merge(tree, candidate, candidate.tip)
        if not await self._merged_cleanly(index, started, outcome, resolution):
            return
        if self.plan.verify:
            await self.listener.phase(candidate.name, "verifying")
            gate = await self._gate(tree, {"GODEL_MERGE_BRANCH": candidate.name})
            if not gate.ok:
                await tree.reset(before)
                await self._gate_failed(index, started, gate, resolution)
                return
        await tree.publish(f"godel merge: {candidate.name}")
        await self._decide(index, started, BranchStatus.MERGED, commit=tree.head, resolution=resolution)

    async def _batch(self, tree: IntegrationTree) -> None:
        pending = list(enumerate(self.plan.candidates))
        while pending:
            await tree.reset(tree.published)
            merged: list[_Merged] = []
            # Decisions that hang on this round's merges, which the gate has not passed yet: a branch found
            # "already in" only through them, or conflicting with them. If bisection throws one of them out, the
            # branch goes round again instead of being reported against a merge that did not stay.
            deferred: list[tuple[int, Candidate, float, MergeOutcome | None, dict[str, Any] | None]] = []
            for index, candidate in pending:
                started = time.monotonic()
                if await tree.is_ancestor(candidate.tip, tree.published):
                    await self._decide(index, started, BranchStatus.SKIPPED, reason=f"already in {self.plan.into}")
                    continue
                if merged and await tree.contains(candidate.tip):
                    deferred.append((index, candidate, started, None, None))
                    continue
                await self.listener.phase(candidate.name, "merging")
                # Always the tip: a resolution from an earlier round was made against commits that included
                # the culprit since removed, and would bring it back in.
                merge, resolution = await self._merge(tree, candidate, candidate.tip)
                if merge.conflict and merged:
                    deferred.append((index, candidate, started, merge, resolution))
                    continue
                if await self._merged_cleanly(index, started, merge, resolution):
                    ref = resolution["commit"] if resolution else candidate.tip
                    merged.append(_Merged(index, candidate, ref, resolution, started))
            if not merged:
                return
            gate = None
            if self.plan.verify:
                await self.listener.phase(None, "verifying")
                gate = await self._gate(tree, {"GODEL_MERGE_BRANCHES": "\n".join(m.candidate.name for m in merged)})
            if gate is None or gate.ok:
                await self._publish_merged(tree, merged)
                for index, _, started, outcome, resolution in deferred:  # what they hung on stayed: final now
                    if outcome is None:
                        await self._decide(index, started, BranchStatus.SKIPPED, reason=f"already in {self.plan.into}")
                    else:
                        await self._merged_cleanly(index, started, outcome, resolution)
                return
            rest = await self._bisect(tree, merged, gate)
            pending = sorted([*rest, *((index, candidate) for index, candidate, *_ in deferred)], key=lambda p: p[0])

    async def _bisect(self, tree: IntegrationTree, merged: list[_Merged], failed: Gate) -> list[tuple[int, Candidate]]:
        """Find the first branch of ``merged`` whose prefix fails the gate; publish the good prefix before it,
        report it, and return the branches after it (to be merged again as a new batch)."""
        await self.listener.phase(None, "bisecting")
        names = [m.candidate.name for m in merged]
        record = Bisection(names, None, [{"branches": names, "passed": False}])
        self.bisections.append(record)
        good, bad = 0, len(merged)  # prefix lengths: `good` passes (0: the start, assumed), `bad` fails
        failing = {bad: failed}
        while bad - good > 1:
            mid = (good + bad) // 2
            gate = await self._verify_prefix(tree, merged[:mid], record)
            if gate.ok:
                good = mid
            else:
                bad, failing[mid] = mid, gate
        if bad == 1:
            # Blaming the first branch is only right if the start itself passes: check it once.
            gate = await self._verify_prefix(tree, [], record)
            if not gate.ok:
                await tree.reset(tree.published)
                for m in merged:
                    why = f"the verify command fails on {self.plan.into} without any branch merged"
                    await self._gate_failed(m.index, m.started, gate, m.resolution, reason=why)
                return []
        culprit = merged[bad - 1]
        record.culprit = culprit.candidate.name
        await self._rebuild(tree, merged[: bad - 1])
        await self._publish_merged(tree, merged[: bad - 1])
        why = (
            f"{failing[bad].reason(self.plan.verify_timeout)} once it was merged "
            f"(found by bisecting a batch of {len(merged)} in {len(record.steps)} gate runs)"
        )
        await self._gate_failed(culprit.index, culprit.started, failing[bad], culprit.resolution, reason=why)
        return [(m.index, m.candidate) for m in merged[bad:]]

    async def _verify_prefix(self, tree: IntegrationTree, prefix: list[_Merged], record: Bisection) -> Gate:
        await self._rebuild(tree, prefix)
        gate = await self._gate(tree, {"GODEL_MERGE_BRANCHES": "\n".join(m.candidate.name for m in prefix)})
        record.steps.append({"branches": [m.candidate.name for m in prefix], "passed": gate.ok})
        return gate

    async def _rebuild(self, tree: IntegrationTree, prefix: list[_Merged]) -> None:
        """The integration worktree as the batch had it after ``prefix``: the same merges, in the same order."""
        await tree.reset(tree.published)
        for m in prefix:
            outcome = await tree.merge(m.ref, self._message(m.candidate, m.resolution))
            if outcome.commit is None:  # it merged cleanly on this very commit before: git is not deterministic?
                raise RuntimeFailure(
                    f"re-merging {m.candidate.name} while bisecting failed: {outcome.error or outcome.files}"
                )

    async def _publish_merged(self, tree: IntegrationTree, merged: list[_Merged]) -> None:
        if not merged:
            return
        # The merge commits of this tree's history, oldest first: one per merged branch, in order.
        commits = (await git("rev-list", "--first-parent", "--reverse", f"{tree.published}..{tree.head}",
                             cwd=tree.path)).split()  # fmt: skip
        await tree.publish(f"godel merge: batch of {len(merged)}")
        for m, commit in zip(merged, commits[-len(merged) :], strict=True):
            await self._decide(m.index, m.started, BranchStatus.MERGED, commit=commit, resolution=m.resolution)

    # ------------------------------------------------------------------------------------ one merge step

    def _message(self, candidate: Candidate, resolution: dict[str, Any] | None) -> str:
        title = f"Merge branch '{candidate.name}' into {self.plan.into}"
        if resolution:
            title += f" (conflicts resolved on {resolution['branch']})"
        return f"{title}\n\nGodel merge queue, run {self.run_id}"

    async def _merge(
        self, tree: IntegrationTree, candidate: Candidate, ref: str
    ) -> tuple[MergeOutcome, dict[str, Any] | None]:
        outcome = await tree.merge(ref, self._message(candidate, None))
        if outcome.conflict and self.resolver is not None:
            return await self._resolve(tree, candidate, outcome)
        return outcome, None

    async def _resolve(
        self, tree: IntegrationTree, candidate: Candidate, conflict: MergeOutcome
    ) -> tuple[MergeOutcome, dict[str, Any]]:
        assert self.resolver is not None
        await self.listener.phase(candidate.name, "resolving")
        info: dict[str, Any] = {"resolver": self.resolver.name, "files": conflict.files}
        request = Conflict(
            repo=self.plan.repo, branch=candidate.name, tip=candidate.tip, into=self.plan.into, onto=tree.head,
            files=conflict.files, refinery_branch=refinery_branch(candidate.name, uuid.uuid4().hex),
        )  # fmt: skip
        try:
            resolution = await self.resolver.resolve(request)
        except ResolutionFailed as exc:
            return conflict, {**info, "error": str(exc)}
        except Exception as exc:  # a resolver's failure is this branch's conflict, not the run's end
            return conflict, {**info, "error": _describe(exc)}
        if resolution is None:
            return conflict, {**info, "error": "the resolver declined"}
        info["branch"] = resolution.branch
        if resolution.note:
            info["note"] = resolution.note
        commit = await git("rev-parse", "--verify", "--quiet", f"{resolution.branch}^{{commit}}", cwd=tree.path,
                           check=False)  # fmt: skip
        if not commit or not await tree.is_ancestor(candidate.tip, commit):
            return conflict, {**info, "error": f"{resolution.branch} does not contain {candidate.name}'s tip"}
        info["commit"] = commit
        await self.listener.phase(candidate.name, "merging")
        outcome = await tree.merge(commit, self._message(candidate, info))
        if outcome.conflict:
            return outcome, {**info, "error": "the resolved branch still conflicts"}
        return outcome, info

    async def _merged_cleanly(
        self, index: int, started: float, outcome: MergeOutcome, resolution: dict[str, Any] | None
    ) -> bool:
        if outcome.conflict:
            files = outcome.files
            shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
            reason = f"conflicts with {self.plan.into} in {len(files)} file{'s' if len(files) != 1 else ''}: {shown}"
            if resolution and resolution.get("error"):
                reason += f" (resolver: {resolution['error']})"
            await self._decide(index, started, BranchStatus.CONFLICT, reason=reason, files=files,
                               resolution=resolution)  # fmt: skip
            return False
        if outcome.error is not None:
            await self._decide(index, started, BranchStatus.ERROR, reason=f"git merge failed: {outcome.error}")
            return False
        return True

    async def _gate(self, tree: IntegrationTree, env: dict[str, str]) -> Gate:
        assert self.plan.verify is not None
        env = {"GODEL_MERGE_INTO": self.plan.into, "GODEL_MERGE_RUN": self.run_id, **env}
        confine = await confined(self.runtime, tree.path)
        gate = await run_gate(self.plan.verify, tree.path, self.plan.verify_timeout, env, confine)
        await tree.reset(tree.head)  # what the gate wrote (build output, formatted files) is not part of a merge
        return gate

    async def _gate_failed(
        self,
        index: int,
        started: float,
        gate: Gate,
        resolution: dict[str, Any] | None,
        *,
        reason: str | None = None,
    ) -> None:
        await self._decide(
            index, started, BranchStatus.GATE_FAILED, reason=reason or gate.reason(self.plan.verify_timeout),
            exit_code=gate.exit_code, output=gate.output, timed_out=gate.timed_out, resolution=resolution,
        )  # fmt: skip

    async def _decide(self, index: int, started: float, status: BranchStatus, **fields: Any) -> None:
        result = self.results[index]
        result.status = status
        for name, value in fields.items():
            setattr(result, name, value)
        result.duration = time.monotonic() - started
        await self.listener.result(index, result)


def _describe(exc: BaseException) -> str:
    return exc.message if isinstance(exc, GodelError) else f"{type(exc).__name__}: {exc}"
