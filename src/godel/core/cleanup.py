"""When an agent's worktree is removed once the agent ends.

Its own module, apart from ``godel.core.models``, so that the CLI can offer ``--cleanup`` without building every
domain dataclass (what ``godel agent list`` would pay for, being in the same noun as ``spawn``).
"""

from __future__ import annotations

from enum import StrEnum


class CleanupPolicy(StrEnum):
    IMMEDIATE = "immediate"  # remove the worktree as soon as the agent ends (the branch stays)
    ON_SUCCESS = "on-success"  # remove it only when the agent completed; keep failed ones to inspect
    DELAYED = "delayed"  # remove it ``cleanup_delay`` seconds after the agent ends
    MANUAL = "manual"  # never remove it automatically (the default: nothing is thrown away unasked)
