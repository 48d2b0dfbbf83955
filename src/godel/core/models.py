"""Domain entities with the spec's fields (§2.1, §2.2), as plain dataclasses.

Names are Python's (snake_case); the API renders them in the spec's camelCase. An agent's ``status`` and
``lifecycle_state`` are properties derived from its one stored ``state``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from godel.core.cleanup import CleanupPolicy
from godel.core.states import (
    LIFECYCLE_OF,
    STATUS_OF,
    AgentState,
    AgentStatus,
    LifecycleState,
    NodeStatus,
    SessionStatus,
    TaskStatus,
    TeamStatus,
)


@dataclass
class Agent:
    id: str
    task: str
    model: str = ""
    state: AgentState = AgentState.PENDING
    label: str | None = None
    team_id: str | None = None
    kind: str = "command"  # the adapter's short name
    config: dict[str, Any] = field(default_factory=dict)  # spec AgentConfig + adapter options
    # Workspace
    repo: str | None = None  # the source repository's path
    base_ref: str = "HEAD"
    base_commit: str | None = None  # base_ref resolved at spawn
    branch: str | None = None
    worktree: str | None = None
    commits: list[str] = field(default_factory=list)
    snapshot_from: str | None = None  # fork: the snapshot the workspace starts from
    runtime_name: str | None = None  # the runtime its workspace and process are in (a fallback changes it)
    setup: str | None = None  # shell command run in the workspace before the agent starts
    cleanup: CleanupPolicy = CleanupPolicy.MANUAL
    cleanup_delay: float = 0.0
    # Scheduling
    priority: int = 0
    timeout: float | None = None  # hard limit in seconds on one attempt's running time (pauses excluded)
    node_id: str | None = None
    next_attempt_at: datetime | None = None  # retry backoff: not admitted before this time
    # Process (the runtime's handle, persisted so a restarted server can re-adopt it)
    pid: int | None = None
    pid_started: float | None = None  # the process's start time, to tell it from a reused pid
    log_dir: str | None = None
    log_offsets: dict[str, int] = field(default_factory=dict)
    exit_code: int | None = None
    outcome: dict[str, Any] = field(default_factory=dict)  # result text, final/error signals, diff stats
    # Lifecycle
    spawned_at: datetime | None = None  # accepted (spec: spawnedAt)
    started_at: datetime | None = None  # entered executing, this attempt
    completed_at: datetime | None = None
    pause_time: datetime | None = None
    paused_by: str | None = None
    runtime: float = 0.0  # seconds of active (not paused) execution of the current attempt
    updated_at: datetime | None = None
    # Resilience
    retry_count: int = 0
    max_retries: int = 0
    last_error: str | None = None
    # Budget
    budget_limit: float | None = None
    budget_consumed: float = 0.0
    # Context (spec fields kept as documents)
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None  # the principal that spawned it ("user:alice", "agent:<id>"); None: the system

    @property
    def status(self) -> AgentStatus:
        return STATUS_OF[self.state]

    @property
    def lifecycle_state(self) -> LifecycleState:
        return LIFECYCLE_OF[self.state]


@dataclass
class Team:
    id: str
    name: str
    description: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    execution_strategy: str = "parallel"
    status: TeamStatus = TeamStatus.CREATING
    budget_allocated: float | None = None
    budget_consumed: float = 0.0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Session:
    id: str
    agent_id: str
    parent_id: str | None = None
    status: SessionStatus = SessionStatus.PENDING
    context: dict[str, Any] = field(default_factory=dict)  # messages, variables, artifacts
    depth: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Task:
    id: str
    title: str
    description: str = ""
    priority: int = 0
    status: TaskStatus = TaskStatus.PENDING
    agent_id: str | None = None
    team_id: str | None = None
    attempts: int = 0
    result: dict[str, Any] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Snapshot:
    id: str
    agent_id: str
    ref: str  # refs/godel/snapshots/<id>
    commit: str  # a commit whose tree is the whole working tree (untracked files included, ignored ones not)
    parent_commit: str  # the branch HEAD the snapshot was taken on
    label: str | None = None
    created_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Node:
    id: str
    name: str
    hostname: str = ""
    status: NodeStatus = NodeStatus.ONLINE
    max_agents: int = 0
    current_agents: int = 0
    last_heartbeat: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class TransitionRecord:
    """Who moved an agent from which state to which, why and when (one row per transition)."""

    agent_id: str
    from_state: AgentState
    to_state: AgentState
    trigger: str
    actor: str  # "user:<name>", "scheduler", "supervisor", "api", "ws"
    reason: str | None
    at: datetime
    event_sequence: int | None = None
    id: int | None = None


@dataclass
class VirtualKey:
    """A key the gateway accepts in place of a provider's: scoped to an agent, a team or a user, to some models,
    until it expires or is revoked. Only its SHA-256 is stored; the text is shown once, when it is created."""

    id: str
    key_hash: str
    prefix: str
    scope_type: str  # agent | team | user
    scope_id: str
    models: list[str] = field(default_factory=list)  # "provider/model"; empty = every configured model
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def usable_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass
class UsageRecord:
    """What one proxied model request cost: tokens (input excludes cached reads), USD when priced, latency."""

    at: datetime
    provider: str
    model: str
    wire: str
    stream: bool
    status_code: int
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float = 0.0
    complete: bool = False
    error: str | None = None
    key_id: str | None = None
    agent_id: str | None = None
    team_id: str | None = None
    user_name: str | None = None
    id: int | None = None
    cost_estimated: bool = False  # cost_usd is the budget's estimate: the answer's usage or price was unknown


@dataclass
class Budget:
    """A spending limit in USD on an agent, a team or a user (spec §2.4 budgets), per period: ``daily`` and
    ``monthly`` restart at 00:00 UTC and on the 1st; ``total`` never does. What counts against it is the priced
    usage the gateway recorded in the current period."""

    id: str
    entity_type: str  # agent | team | user
    entity_id: str
    total_budget: float
    period: str = "total"  # daily | monthly | total
    used_budget: float = 0.0  # the spend last settled (what the gateway counts is the usage records)
    currency: str = "USD"
    period_start: datetime | None = None
    period_end: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class Workflow:
    """One run of a workflow definition (spec §2.4 workflows): its status follows the spec's state machine
    (pending → running ⇄ paused → completed | failed | cancelled)."""

    id: str
    name: str
    definition: dict[str, Any]  # the normalized definition (``WorkflowDefinition.to_dict``)
    description: str | None = None
    status: str = "pending"
    current_step_id: str | None = None
    context: dict[str, Any] | None = None  # the run's inputs: repo, base ref, variables
    results: dict[str, Any] | None = None  # per step: output (what the conditions and templates see)
    team_id: str | None = None
    created_by: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    metadata: dict[str, Any] | None = None


@dataclass
class WorkflowStep:
    """One step of a workflow run (spec §2.4 workflow_steps). ``result`` keeps the step's output and the ids of
    the agents of every attempt; ``agent_id`` is the current (last) attempt's."""

    id: str
    workflow_id: str
    step_id: str
    name: str
    task: str
    dependencies: list[str] | None = None
    status: str = "pending"
    result: dict[str, Any] | None = None
    error: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    retry_count: int = 0
    agent_id: str | None = None
