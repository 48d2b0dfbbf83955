"""A merge run, validated before anything is touched: which commits to merge, in which order, into what.

Everything a request can get wrong is found here and raised as a 400 (or 409) before a job starts: a path that
is no git repository, a branch that does not exist, an integration branch that is one of the branches merged
or is checked out somewhere. The branches' tips are resolved once, here, so a run merges exactly the commits
that were asked for even if an agent keeps committing meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from godel.errors import FieldError, ValidationError
from godel.merging.worktree import check_branch_name, ensure_not_checked_out
from godel.runtimes.git import ref_exists, repo_root, resolve_commit

DEFAULT_VERIFY_TIMEOUT = 600.0


@dataclass(frozen=True)
class Candidate:
    """One branch to merge: its name, the commit it pointed to when the run was asked for, and its agent."""

    name: str
    tip: str = ""  # filled by make_plan
    agent_id: str | None = None


@dataclass(frozen=True)
class MergePlan:
    repo: Path  # the repository's top level
    into: str  # the integration branch
    start: str  # the commit the integration branch starts from (its tip, or the base it is created at)
    create_into: bool  # the integration branch does not exist yet: create it at ``start``
    candidates: tuple[Candidate, ...]
    verify: str | None = None
    verify_timeout: float = DEFAULT_VERIFY_TIMEOUT
    batch: bool = False

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.candidates]


def short_name(ref: str) -> str:
    return ref.removeprefix("refs/heads/")


async def make_plan(
    repo: Path,
    into: str,
    branches: Sequence[str | Candidate],
    *,
    base: str | None = None,
    verify: str | None = None,
    verify_timeout: float = DEFAULT_VERIFY_TIMEOUT,
    batch: bool = False,
    branches_field: str = "branches",
) -> MergePlan:
    root = await repo_root(repo)
    candidates = [b if isinstance(b, Candidate) else Candidate(b) for b in branches]
    if not candidates:
        raise ValidationError("no branches to merge", [FieldError(branches_field, "give at least one branch")])
    if not into or not into.strip():
        raise ValidationError("the integration branch is required", [FieldError("into", "must not be empty")])
    into = short_name(into.strip())
    await check_branch_name(root, into, "into")
    if not verify_timeout > 0:
        raise ValidationError("verifyTimeout must be positive", [FieldError("verifyTimeout", "more than 0 seconds")])
    if verify is not None and not verify.strip():
        verify = None  # an empty command is no gate, not a gate that always passes by accident

    seen: dict[str, int] = {}
    resolved: list[Candidate] = []
    for i, cand in enumerate(candidates):
        where = f"{branches_field}[{i}]"
        name = cand.name.strip()
        if short_name(name) == into:
            raise ValidationError(
                f"{name!r} is the integration branch; it cannot also be merged into itself",
                [FieldError("into", f"must differ from the branches merged ({name})")],
            )
        first = seen.setdefault(short_name(name), i)
        if first != i:
            raise ValidationError(
                f"branch {name!r} is given twice", [FieldError(where, f"same as {branches_field}[{first}]")]
            )
        tip = await resolve_commit(root, name, field=where)  # RefNotFoundError (400) names the field
        resolved.append(Candidate(name, tip, cand.agent_id))

    exists = await ref_exists(root, f"refs/heads/{into}")
    if exists:
        await ensure_not_checked_out(root, into)
        start = await resolve_commit(root, f"refs/heads/{into}", field="into")
    else:
        start = await resolve_commit(root, base or "HEAD", field="base")
    return MergePlan(
        repo=root,
        into=into,
        start=start,
        create_into=not exists,
        candidates=tuple(resolved),
        verify=verify,
        verify_timeout=verify_timeout,
        batch=batch,
    )
