"""What a spawn asks for, and how a fork derives its request from the agent it forks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from godel.core.models import Agent, CleanupPolicy


@dataclass
class SpawnRequest:
    task: str
    repo: str
    base_ref: str = "HEAD"
    label: str | None = None
    team_id: str | None = None
    agent: str = "command"
    command: str | None = None
    model: str = ""
    priority: int = 0
    timeout: float | None = None
    max_retries: int = 0
    cleanup: CleanupPolicy = CleanupPolicy.MANUAL
    cleanup_delay: float = 0.0
    setup: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    budget_limit: float | None = None
    snapshot_from: str | None = None  # set by fork
    prompt_context: str | None = None  # set by fork from a session point: the earlier conversation, as text


def fork_request(source: Agent, snapshot_id: str, overrides: dict[str, Any]) -> SpawnRequest:
    """A new agent like ``source`` (same repo, base, adapter and policies), starting from a snapshot of its
    working tree; ``overrides`` (task, label, command, agent, model, priority, timeout) win when given."""
    o = {k: v for k, v in overrides.items() if v is not None}
    config = {k: v for k, v in source.config.items() if k not in ("command", "env")}
    same_kind = o.get("agent", source.kind) == source.kind
    if not same_kind:
        config = {}  # options (a binary, extra args, a tool list) belong to the source's CLI, not to another
    req = SpawnRequest(
        task=o.get("task", source.task),
        repo=source.repo or ".",
        base_ref=source.base_commit or source.base_ref,
        label=o.get("label", f"{source.label or source.id[:8]}-fork"),
        team_id=source.team_id,
        agent=o.get("agent", source.kind),
        command=o.get("command", source.config.get("command") if same_kind else None),
        model=o.get("model", source.model),
        priority=o.get("priority", source.priority),
        timeout=o.get("timeout", source.timeout),
        max_retries=source.max_retries,
        cleanup=source.cleanup,
        cleanup_delay=source.cleanup_delay,
        setup=source.setup,
        env=dict(source.config.get("env", {})),
        config=config,
        metadata={"forkedFrom": source.id, "snapshotId": snapshot_id},
        snapshot_from=snapshot_id,
    )
    return req
