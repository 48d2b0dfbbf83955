"""Mapping between an agent row and the runtime handle that finds its workspace and process again."""

from __future__ import annotations

from pathlib import Path

from godel.core.ids import branch_for
from godel.core.models import Agent
from godel.core.ports import RuntimeHandle


def handle_of(agent: Agent, runtime: str, worktrees_root: Path) -> RuntimeHandle:
    """``runtime``: the server's default, for an agent recorded without one (made before runtimes were per agent)."""
    assert agent.repo is not None and agent.base_commit is not None, "an admitted agent has a repo and base"
    return RuntimeHandle(
        agent_id=agent.id,
        runtime=agent.runtime_name or runtime,
        # After cleanup the worktree column is empty; point at where it would be (it does not exist).
        workspace=Path(agent.worktree) if agent.worktree else worktrees_root / agent.id,
        repo=Path(agent.repo),
        branch=agent.branch or branch_for(agent.id),
        base_commit=agent.base_commit,
        log_dir=Path(agent.log_dir or ""),
        pid=agent.pid,
        pid_started=agent.pid_started,
        extra=_extra(agent),
    )


def _extra(agent: Agent) -> dict[str, object]:
    extra = dict(agent.metadata["runtime"]) if isinstance(agent.metadata.get("runtime"), dict) else {}
    return with_choice(extra, agent)


def with_choice(extra: dict[str, object], agent: Agent) -> dict[str, object]:
    """``extra`` with what runtimes read of the agent's own choice (``config.sandbox``: its image, limits, egress).
    A handle fresh from ``prepare`` needs it too: the runtime made it from the workspace spec alone."""
    sandbox = agent.config.get("sandbox")
    if isinstance(sandbox, dict):
        extra["sandbox"] = dict(sandbox)
    return extra


def handle_fields(handle: RuntimeHandle) -> dict[str, object]:
    """The agent columns that persist a handle (written in the same transaction as the state change)."""
    return {
        "worktree": str(handle.workspace),
        "branch": handle.branch,
        "base_commit": handle.base_commit,
        "log_dir": str(handle.log_dir),
        "pid": handle.pid,
        "pid_started": handle.pid_started,
    }
