"""The merge queue ("refinery"): agent branches merged into an integration branch, in order, behind a gate.

``plan.make_plan`` validates a run, ``engine.MergeQueue`` performs it in a temporary worktree (never the
user's checkout, never writing an agent branch), ``resolver`` is the hook that hands a conflict to someone who
resolves it on a branch of their own, and ``service.MergeService`` runs it as a server job whose progress is
recorded as ``merge:*`` events. See docs/merging.md.
"""

from godel.merging.engine import MergeListener, MergeQueue
from godel.merging.plan import Candidate, MergePlan, make_plan
from godel.merging.resolver import CommandResolver, Conflict, Resolution, ResolutionFailed, Resolver
from godel.merging.results import NOT_MERGED, BranchResult, BranchStatus

__all__ = [
    "NOT_MERGED",
    "BranchResult",
    "BranchStatus",
    "Candidate",
    "CommandResolver",
    "Conflict",
    "MergeListener",
    "MergePlan",
    "MergeQueue",
    "Resolution",
    "ResolutionFailed",
    "Resolver",
    "make_plan",
]
