"""The seams of Godel, declared together: Store, EventBus, Runtime, AgentAdapter, Clock.

Each back-end registers under a short name and passes the same conformance suite
(``tests/conformance/``). The data types that cross a seam are defined here too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

from godel.core.events import Event, EventFilter
from godel.core.models import Agent, Budget, Node, Session, Snapshot, TransitionRecord, UsageRecord, VirtualKey
from godel.core.runtime_contract import (
    RUN_KEY as RUN_KEY,
)

# The runtime contract has a module of its own; its names are seams like the others, so they are exported here too.
from godel.core.runtime_contract import (
    CommandConfinement as CommandConfinement,
)
from godel.core.runtime_contract import (
    ExecResult as ExecResult,
)
from godel.core.runtime_contract import (
    FileAccess as FileAccess,
)
from godel.core.runtime_contract import (
    LaunchSpec as LaunchSpec,
)
from godel.core.runtime_contract import (
    OutputLine as OutputLine,
)
from godel.core.runtime_contract import (
    OutputStreaming as OutputStreaming,
)
from godel.core.runtime_contract import (
    ProcessState as ProcessState,
)
from godel.core.runtime_contract import (
    ProcessStatus as ProcessStatus,
)
from godel.core.runtime_contract import (
    Runtime as Runtime,
)
from godel.core.runtime_contract import (
    RuntimeCapabilities as RuntimeCapabilities,
)
from godel.core.runtime_contract import (
    RuntimeHandle as RuntimeHandle,
)
from godel.core.runtime_contract import (
    SnapshotCatalog as SnapshotCatalog,
)
from godel.core.runtime_contract import (
    SnapshotInfo as SnapshotInfo,
)
from godel.core.runtime_contract import (
    WorkspaceGit as WorkspaceGit,
)
from godel.core.runtime_contract import (
    WorkspaceSpec as WorkspaceSpec,
)
from godel.core.states import AgentState, AgentStatus
from godel.core.transitions import Trigger

# --------------------------------------------------------------------------------------------------- clock


class Clock(Protocol):
    """Wall time for what the store keeps (deadlines, backoff, leases), monotonic time for durations, and a sleep
    for timers held in memory (``godel.core.clock``: the system's, or a manual one that tests move)."""

    def now(self) -> datetime: ...
    def monotonic(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...


# --------------------------------------------------------------------------------------------------- store


@dataclass(frozen=True)
class AgentQuery:
    status: Sequence[AgentStatus] = ()
    states: Sequence[AgentState] = ()
    team_id: str | None = None
    label: str | None = None
    model: str | None = None
    node_id: str | None = None
    limit: int = 50
    cursor: str | None = None  # opaque; from the previous Page
    owners: Sequence[str] | None = None  # only agents owned by one of these principals (None: anyone's)


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    cursor: str | None  # pass back to get the next page; None when there is none
    has_more: bool


@dataclass(frozen=True)
class EventQuery:
    filter: EventFilter = field(default_factory=EventFilter)
    since: int | None = None  # only events with sequence > since
    until: int | None = None  # only events with sequence < until (paging backwards)
    after: datetime | None = None
    before: datetime | None = None
    limit: int = 100
    descending: bool = False  # newest first (for "tail N")


CommitListener = Callable[[list[Event]], Awaitable[None]]


class Store(Protocol):
    """Typed repository over the SQL tables. Every state change goes through ``transition_agent``, which
    commits the row change, the transition record and the event together; committed events are handed to the
    listener (the bus) only after the commit."""

    def set_commit_listener(self, listener: CommitListener | None) -> None: ...
    async def migrate(self) -> None: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...

    # agents
    async def create_agent(self, agent: Agent, *, actor: str) -> tuple[Agent, Event]: ...
    # ``create_agent`` and, in the same transaction, ``admit`` when a slot is free on the node and nothing queued goes
    # first: returns the agent as created and as admitted (None: it stays queued).
    async def create_and_admit(
        self, agent: Agent, *, actor: str, node_id: str, slots: int, reason: str, changes: dict[str, Any]
    ) -> tuple[Agent, Agent | None]: ...
    async def get_agent(self, agent_id: str) -> Agent: ...
    async def list_agents(self, query: AgentQuery) -> Page[Agent]: ...
    async def count_agents(self, states: Sequence[AgentState], node_id: str | None = None) -> int: ...
    async def admissible_agents(self, now: datetime, limit: int) -> list[Agent]: ...
    async def transition_agent(
        self,
        agent_id: str,
        trigger: Trigger,
        *,
        actor: str,
        reason: str | None = None,
        changes: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
    ) -> tuple[Agent, Event]: ...
    async def update_agent(self, agent_id: str, changes: dict[str, Any]) -> Agent: ...
    async def delete_agent(self, agent_id: str, *, actor: str) -> Event: ...
    async def transitions(self, agent_id: str) -> list[TransitionRecord]: ...

    # events
    async def append_events(
        self, events: Sequence[Event], *, agent_changes: dict[str, dict[str, Any]] | None = None
    ) -> list[Event]: ...
    async def get_event(self, event_id: str) -> Event: ...
    async def query_events(self, query: EventQuery) -> list[Event]: ...
    async def last_sequence(self) -> int: ...

    # snapshots, sessions, nodes
    async def add_snapshot(self, snapshot: Snapshot) -> Snapshot: ...
    async def get_snapshot(self, snapshot_id: str) -> Snapshot: ...
    async def list_snapshots(self, agent_id: str) -> list[Snapshot]: ...
    async def delete_snapshot(self, snapshot_id: str) -> None: ...
    async def create_session(self, session: Session) -> Session: ...
    async def get_session(self, session_id: str) -> Session: ...
    async def update_session(self, session_id: str, changes: dict[str, Any]) -> Session: ...
    async def list_sessions(self, agent_id: str) -> list[Session]: ...
    async def upsert_node(self, node: Node) -> Node: ...
    async def list_nodes(self) -> list[Node]: ...

    # the gateway: virtual keys and usage records
    async def create_key(self, key: VirtualKey) -> VirtualKey: ...
    async def key_by_hash(self, key_hash: str) -> VirtualKey | None: ...
    async def get_key(self, key_id: str) -> VirtualKey: ...
    async def list_keys(
        self, *, scope_type: str | None = None, scope_id: str | None = None, revoked: bool = False
    ) -> list[VirtualKey]: ...
    async def revoke_keys(
        self, at: datetime, *, key_id: str | None = None, scope_type: str | None = None, scope_id: str | None = None
    ) -> int: ...
    async def add_usage(self, record: UsageRecord) -> UsageRecord: ...
    async def add_usages(self, records: list[UsageRecord], releases: Sequence[str] = ()) -> None: ...
    async def usage_records(
        self, *, agent_id: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> list[UsageRecord]: ...
    async def upsert_budget(self, budget: Budget) -> Budget: ...
    async def list_budgets(self, *, entity_type: str | None = None, entity_id: str | None = None) -> list[Budget]: ...
    async def budgets_for(self, scopes: list[tuple[str, str]]) -> list[Budget]: ...
    async def delete_budget(self, budget_id: str) -> None: ...
    async def spent(self, scope_type: str, scope_id: str, since: datetime | None) -> float: ...
    async def usage_summary(
        self,
        by: Literal["agent", "team", "user", "model", "day"],
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]: ...


# ----------------------------------------------------------------------------------------------------- bus


class Backpressure(StrEnum):
    DROP = "drop"  # drop new events when the buffer is full (metrics, non-critical)
    BLOCK = "block"  # make the publisher wait for space (critical consumers)
    SLIDING = "sliding"  # drop the oldest buffered event (real-time views)


class Subscription(Protocol):
    id: str
    filter: EventFilter
    dropped: int

    def __aiter__(self) -> AsyncIterator[Event]: ...
    async def get(self, timeout: float | None = None) -> Event | None: ...
    def close(self) -> None: ...


class EventBus(Protocol):
    async def dispatch(self, events: Sequence[Event]) -> None:
        """Deliver events that are already committed (the store's commit listener)."""

    def subscribe(
        self,
        filter: EventFilter,
        *,
        buffer_size: int = 1000,
        policy: Backpressure = Backpressure.SLIDING,
    ) -> Subscription: ...

    def stream(self, filter: EventFilter, *, since: int | None, buffer_size: int = 1000) -> AsyncIterator[Event]:
        """Replay committed events after ``since`` from the store, then continue live, with no gap and no
        duplicate (events are ordered by sequence)."""

    def stats(self) -> dict[str, Any]: ...


# -------------------------------------------------------------------------------------------------- agents


class SignalKind(StrEnum):
    """What a parser can say about an agent's stream. The ``data`` of each kind follows one convention, so
    events look the same whichever CLI produced them:

    - MESSAGE: ``{"role": "assistant" | "user", "text": str}``
    - TOOL_CALL: ``{"id": str | None, "name": str, "input": dict | str}`` (the CLI's own tool name)
    - TOOL_RESULT: ``{"id": str | None, "output": str, "isError": bool}`` (output clipped to ``CLIP`` chars)
    - USAGE: ``{"model": str | None, "inputTokens": int, "outputTokens": int, "cachedTokens": int,
      "costUsd": float | None}`` -- one model call's usage (an increment), or the run's total when the CLI
      reports only a total (then it is the only USAGE signal of the run)
    - NEEDS_INPUT: ``{"prompt": str}``
    - ERROR: ``{"message": str, "provider": bool}`` -- ``provider`` when the model endpoint failed (refused,
      HTTP error, overloaded), which is what a fallback provider is for
    - SESSION: ``{"sessionId": str}`` -- the CLI's own session id, needed to continue the conversation
    - FINAL: ``{"result": str | None, "success": bool, "reason": str}`` -- the agent's own terminal event
    """

    MESSAGE = "message"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    USAGE = "usage"
    NEEDS_INPUT = "needs_input"
    ERROR = "error"
    SESSION = "session"
    FINAL = "final"  # the agent's own terminal event, with its result text and success flag


CLIP = 4000  # characters of a tool result or message kept in an event (the full text is in the log lines)


@dataclass(frozen=True)
class AgentSignal:
    kind: SignalKind
    data: dict[str, Any] = field(default_factory=dict)


WireApi = Literal["openai-chat", "openai-responses", "anthropic", "gemini"]


@dataclass(frozen=True)
class ModelEndpoint:
    """One model at one provider, resolved from ``[providers.NAME]`` in the configuration.

    ``base_url`` follows the provider SDK's own convention: OpenAI kinds include the version path
    (``https://api.openai.com/v1``), Anthropic and Gemini do not (``https://api.anthropic.com``)."""

    provider: str
    kind: WireApi
    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass
class LaunchRequest:
    agent_id: str
    task: str
    model: str
    workspace: Path
    config_dir: Path  # a private, per-agent directory for the CLI's config (outside the workspace)
    options: dict[str, Any] = field(default_factory=dict)  # the agent's config from the spawn request
    endpoint: ModelEndpoint | None = None  # the provider this attempt talks to (None: the CLI's own default)
    tools_dir: Path | None = None  # where scripts/install-agent-clis put the CLIs (searched before PATH)
    cli_retries: int = 1  # how often the CLI may retry a failed model request on its own
    resume_session: str | None = None  # continue this CLI session (its SESSION signal) instead of a new one
    gateway_url: str | None = None
    gateway_key: str | None = None

    @property
    def output_dir(self) -> Path:
        """A per-agent directory for files the CLI writes besides its stream (trajectories, histories)."""
        return self.config_dir.parent / "output"


@dataclass(frozen=True)
class Evidence:
    exit_code: int | None
    signals: list[AgentSignal]  # the outcome-relevant ones: FINAL and ERROR, in order
    changed_files: int  # files differing from the base commit
    commits: int  # commits on the branch since the base
    timed_out: bool = False


@dataclass(frozen=True)
class Outcome:
    success: bool
    reason: str
    result: str | None = None
    provider_error: bool = False  # failed because the model endpoint failed: a fallback provider may help


class StreamParser(Protocol):
    def feed(self, stream: str, line: str) -> list[AgentSignal]: ...
    def finish(self) -> list[AgentSignal]: ...


class AgentAdapter(Protocol):
    """How one agent CLI is launched and understood."""

    name: str
    wire_apis: tuple[WireApi, ...]  # the provider kinds the CLI can talk to, best first; () = needs no model
    resumable: bool  # can continue an earlier CLI session with a follow-up (``resume_session``)

    def validate(self, options: dict[str, Any]) -> None:
        """Raise ValidationError for options this adapter cannot run (checked before anything is created)."""

    def locate(self, tools_dir: Path | None, options: dict[str, Any]) -> None:
        """Raise AgentSpawnError when the CLI is not installed (checked before anything is created)."""

    def launch(self, request: LaunchRequest) -> LaunchSpec: ...
    def parser(self) -> StreamParser: ...
    def collect(self, request: LaunchRequest) -> list[AgentSignal]:
        """Signals from files the CLI left behind (a trajectory, a history), read once after it exited."""

    def outcome(self, evidence: Evidence) -> Outcome: ...
