"""The Store conformance suite: the same assertions on SQLite and PostgreSQL (see ``conftest.py``)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from godel.core.events import Event, EventFilter, make_event
from godel.core.ids import new_id, new_snapshot_id
from godel.core.models import Agent, CleanupPolicy, Node, Session, Snapshot, Team
from godel.core.ports import AgentQuery, EventQuery, Store
from godel.core.states import AgentState, AgentStatus, NodeStatus, SessionStatus
from godel.core.transitions import Trigger
from godel.errors import (
    AgentNotFoundError,
    ConflictError,
    EventNotFoundError,
    InvalidTransitionError,
    NotFoundError,
    SnapshotNotFoundError,
    StoreError,
    ValidationError,
)
from godel.store import SqlStore, open_store, tables
from godel.store.migrations import alembic_config

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# The triggers that walk a new agent to each state.
PATH: dict[AgentState, list[Trigger]] = {
    AgentState.PENDING: [],
    AgentState.INITIALIZING: [Trigger.ADMIT],
    AgentState.SPAWNING: [Trigger.ADMIT, Trigger.WORKTREE_CREATED],
    AgentState.EXECUTING: [Trigger.ADMIT, Trigger.WORKTREE_CREATED, Trigger.SESSION_STARTED],
}
PATH[AgentState.WAITING] = [*PATH[AgentState.EXECUTING], Trigger.AWAIT_INPUT]
PATH[AgentState.PAUSED] = [*PATH[AgentState.EXECUTING], Trigger.PAUSE]
PATH[AgentState.COMPLETING] = [*PATH[AgentState.EXECUTING], Trigger.TASK_COMPLETE]
PATH[AgentState.COMPLETED] = [*PATH[AgentState.COMPLETING], Trigger.CLEANUP_DONE]
PATH[AgentState.FAILED] = [*PATH[AgentState.EXECUTING], Trigger.ERROR]
PATH[AgentState.KILLED] = [Trigger.KILL]


def new_agent(**fields: Any) -> Agent:
    fields.setdefault("task", "fix the bug")
    fields.setdefault("model", "gpt-test")
    return Agent(id=new_id(), **fields)


async def walk(store: Store, agent_id: str, state: AgentState, **changes: Any) -> Agent:
    agent = await store.get_agent(agent_id)
    for i, trigger in enumerate(PATH[state]):
        last = i == len(PATH[state]) - 1
        agent, _ = await store.transition_agent(agent_id, trigger, actor="test", changes=changes if last else None)
    return agent


class Recorder:
    """A commit listener that remembers what it heard and checks each event is already readable."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: list[list[Event]] = []

    async def __call__(self, events: list[Event]) -> None:
        for e in events:
            assert e.sequence is not None
            assert (await self.store.get_event(e.id)).sequence == e.sequence  # committed: visible elsewhere
        self.calls.append(events)

    @property
    def sequences(self) -> list[int]:
        return [e.sequence for call in self.calls for e in call if e.sequence is not None]


async def all_events(store: Store, **filter_: Any) -> list[Event]:
    return await store.query_events(EventQuery(filter=EventFilter(**filter_), limit=100_000))


# ---------------------------------------------------------------------------------------------- schema


async def test_migrations_match_the_tables(store: SqlStore) -> None:
    def diff(conn: sa.Connection) -> list[Any]:
        ignored = {"alembic_version", "sqlite_sequence"}
        ctx = MigrationContext.configure(
            conn, opts={"include_name": lambda name, type_, _p: not (type_ == "table" and name in ignored)}
        )
        return list(compare_metadata(ctx, tables.metadata))

    await store.migrate()  # a second run is a no-op
    async with store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
        version = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar_one()
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_store_satisfies_the_protocol(store: SqlStore) -> None:
    protocol = {name for name in vars(Store) if not name.startswith("_")}
    assert protocol <= set(dir(store))
    await store.ping()


# ---------------------------------------------------------------------------------------------- agents


async def test_agent_round_trip_keeps_every_field(store: Store) -> None:
    agent = new_agent(
        label="fixer",
        kind="pi",
        config={"max_steps": 3, "nested": {"a": [1, 2]}},
        repo="/src/repo",
        base_ref="main",
        base_commit="a" * 40,
        branch="godel/x",
        worktree="/w/x",
        commits=["b" * 40],
        snapshot_from="snap",
        setup="make deps",
        cleanup=CleanupPolicy.ON_SUCCESS,
        cleanup_delay=2.5,
        priority=7,
        timeout=60.0,
        node_id="node-1",
        next_attempt_at=T0,
        pid=4242,
        pid_started=12345.5,
        log_dir="/logs/x",
        log_offsets={"stdout": 10, "stderr": 0},
        exit_code=0,
        outcome={"result": "ok"},
        spawned_at=T0,
        started_at=T0 + timedelta(seconds=1),
        completed_at=T0 + timedelta(seconds=2),
        pause_time=T0 + timedelta(seconds=3),
        paused_by="user:al",
        runtime=1.25,
        retry_count=1,
        max_retries=3,
        last_error="boom",
        budget_limit=10.5,
        budget_consumed=0.25,
        context={"files": ["a.py"]},
        metadata={"k": "v", "unicode": "héllo ✓"},
    )
    created, event = await store.create_agent(agent, actor="user:al")
    assert created.updated_at is not None
    assert created.spawned_at == T0
    fetched = await store.get_agent(agent.id)
    assert fetched == created
    assert isinstance(fetched.state, AgentState) and isinstance(fetched.cleanup, CleanupPolicy)

    assert event.type == "agent:created"
    assert event.sequence is not None and event.sequence >= 1
    assert event.payload == {
        "agentId": agent.id,
        "task": agent.task,
        "label": "fixer",
        "kind": "pi",
        "repo": "/src/repo",
        "baseRef": "main",
    }
    assert event.metadata.agent_id == agent.id
    assert event.source.component == "user" and event.metadata.user_id == "al"
    assert await store.get_event(event.id) == event


async def test_defaults_and_missing_agents(store: Store) -> None:
    created, _ = await store.create_agent(Agent(id=new_id(), task="t"), actor="api")
    assert created.state == AgentState.PENDING
    assert created.spawned_at is not None and created.spawned_at.tzinfo is not None
    assert await store.get_agent(created.id) == created

    with pytest.raises(ConflictError):
        await store.create_agent(Agent(id=created.id, task="again"), actor="api")
    missing = new_id()
    for call in (
        store.get_agent(missing),
        store.update_agent(missing, {"label": "x"}),
        store.transition_agent(missing, Trigger.ADMIT, actor="test"),
        store.delete_agent(missing, actor="test"),
        store.transitions(missing),
    ):
        with pytest.raises(AgentNotFoundError) as info:
            await call
        assert info.value.status_code == 404


async def test_update_agent_changes_only_the_given_fields(store: Store) -> None:
    agent, _ = await store.create_agent(new_agent(label="a"), actor="api")
    updated = await store.update_agent(agent.id, {"label": "b", "pid": 9, "log_offsets": {"stdout": 5}})
    assert (updated.label, updated.pid, updated.log_offsets) == ("b", 9, {"stdout": 5})
    assert updated.task == agent.task and updated.state == agent.state
    assert updated.updated_at is not None and agent.updated_at is not None
    assert updated.updated_at >= agent.updated_at
    assert await store.get_agent(agent.id) == updated

    with pytest.raises(ValueError, match="transition_agent"):
        await store.update_agent(agent.id, {"state": AgentState.EXECUTING})
    with pytest.raises(ValueError, match="no field"):
        await store.update_agent(agent.id, {"nonsense": 1})
    assert (await store.get_agent(agent.id)).state == AgentState.PENDING


async def test_count_agents(store: Store) -> None:
    for state, node in [
        (AgentState.PENDING, None),
        (AgentState.EXECUTING, "n1"),
        (AgentState.PAUSED, "n1"),
        (AgentState.EXECUTING, "n2"),
    ]:
        agent, _ = await store.create_agent(new_agent(), actor="api")
        await walk(store, agent.id, state, node_id=node)
    assert await store.count_agents([AgentState.EXECUTING, AgentState.PAUSED]) == 3
    assert await store.count_agents([AgentState.EXECUTING, AgentState.PAUSED], node_id="n1") == 2
    assert await store.count_agents([AgentState.PENDING]) == 1
    assert await store.count_agents([AgentState.COMPLETED]) == 0


# ----------------------------------------------------------------------------------------- transitions


async def test_transitions_walk_the_lifecycle_and_record_everything(store: Store) -> None:
    agent, created = await store.create_agent(new_agent(), actor="api")
    steps = [
        (Trigger.ADMIT, AgentState.INITIALIZING, "agent:initializing"),
        (Trigger.WORKTREE_CREATED, AgentState.SPAWNING, "agent:spawning"),
        (Trigger.SESSION_STARTED, AgentState.EXECUTING, "agent:start"),
        (Trigger.PAUSE, AgentState.PAUSED, "agent:pause"),
        (Trigger.RESUME, AgentState.EXECUTING, "agent:resume"),
        (Trigger.TASK_COMPLETE, AgentState.COMPLETING, "agent:completing"),
        (Trigger.CLEANUP_DONE, AgentState.COMPLETED, "agent:complete"),
    ]
    previous = created.sequence or 0
    for trigger, state, event_type in steps:
        moved, event = await store.transition_agent(
            agent.id, trigger, actor="scheduler", reason=f"because {trigger}", payload={"extra": 1}
        )
        assert moved.state == state
        assert moved.status == (await store.get_agent(agent.id)).status
        assert event.type == event_type
        assert event.sequence is not None and event.sequence > previous
        previous = event.sequence
        assert event.payload["agentId"] == agent.id
        assert event.payload["to"] == state.value and event.payload["trigger"] == trigger.value
        assert event.payload["reason"] == f"because {trigger}" and event.payload["actor"] == "scheduler"
        assert event.payload["extra"] == 1
        assert event.source.component == "scheduler"
        assert event.metadata.agent_id == agent.id

    records = await store.transitions(agent.id)
    assert [(r.trigger, r.to_state) for r in records] == [(t.value, s) for t, s, _ in steps]
    assert [r.from_state for r in records] == [AgentState.PENDING] + [r.to_state for r in records[:-1]]
    events = await all_events(store, agent_id=agent.id)
    by_sequence = {e.sequence: e for e in events}
    for record in records:
        assert record.event_sequence in by_sequence
        assert by_sequence[record.event_sequence].payload["trigger"] == record.trigger
        assert record.at.tzinfo is not None and record.actor == "scheduler"


async def test_transition_applies_changes_in_the_same_write(store: Store) -> None:
    agent, _ = await store.create_agent(new_agent(team_id=None), actor="api")
    moved, event = await store.transition_agent(
        agent.id, Trigger.ADMIT, actor="scheduler", changes={"node_id": "n1", "started_at": T0}
    )
    assert (moved.node_id, moved.started_at) == ("n1", T0)
    assert await store.get_agent(agent.id) == moved
    assert event.payload["from"] == "pending"


async def test_illegal_transition_is_409_and_writes_nothing(store: Store) -> None:
    agent, _ = await store.create_agent(new_agent(), actor="api")
    recorder = Recorder(store)
    store.set_commit_listener(recorder)
    before = (await store.get_agent(agent.id), await store.transitions(agent.id), await store.last_sequence())

    with pytest.raises(InvalidTransitionError) as info:
        await store.transition_agent(agent.id, Trigger.TASK_COMPLETE, actor="test", changes={"label": "x"})
    assert info.value.status_code == 409
    assert info.value.details["currentState"] == "pending"
    with pytest.raises(ValueError):
        await store.transition_agent(agent.id, Trigger.ADMIT, actor="test", changes={"state": "executing"})

    after = (await store.get_agent(agent.id), await store.transitions(agent.id), await store.last_sequence())
    assert after == before
    assert recorder.calls == []


async def test_retry_and_restart_requeue(store: Store) -> None:
    agent, _ = await store.create_agent(new_agent(), actor="api")
    await walk(store, agent.id, AgentState.FAILED)
    retried, event = await store.transition_agent(
        agent.id, Trigger.RETRY, actor="scheduler", changes={"retry_count": 1, "next_attempt_at": T0}
    )
    assert (retried.state, retried.retry_count, event.type) == (AgentState.PENDING, 1, "agent:retry")
    killed, _ = await store.transition_agent(agent.id, Trigger.KILL, actor="user:al")
    assert killed.state == AgentState.KILLED
    restarted, event = await store.transition_agent(agent.id, Trigger.RESTART, actor="api")
    assert (restarted.state, event.type) == (AgentState.PENDING, "agent:restart")


async def test_concurrent_transitions_lose_nothing(store: Store) -> None:
    recorder = Recorder(store)
    store.set_commit_listener(recorder)
    agents = [(await store.create_agent(new_agent(), actor="api"))[0] for _ in range(25)]
    start = await store.last_sequence()

    results = await asyncio.gather(*(store.transition_agent(a.id, Trigger.ADMIT, actor="scheduler") for a in agents))
    sequences = sorted(e.sequence for _, e in results if e.sequence is not None)
    assert sequences == list(range(start + 1, start + 26))  # gap-free, one each
    assert {(await store.get_agent(a.id)).state for a in agents} == {AgentState.INITIALIZING}

    # Many racing moves on one agent: each either wins or gets a 409; the recorded history stays a chain.
    target = agents[0].id
    await walk_from(store, target, [Trigger.WORKTREE_CREATED, Trigger.SESSION_STARTED])
    triggers = [Trigger.PAUSE, Trigger.RESUME, Trigger.AWAIT_INPUT, Trigger.INPUT_RECEIVED] * 10
    outcomes = await asyncio.gather(
        *(store.transition_agent(target, t, actor="race") for t in triggers), return_exceptions=True
    )
    assert all(isinstance(o, tuple | InvalidTransitionError) for o in outcomes)
    wins = [o for o in outcomes if isinstance(o, tuple)]
    races = [r for r in await store.transitions(target) if r.actor == "race"]
    assert len(races) == len(wins) >= 1
    records = await store.transitions(target)
    assert all(b.from_state == a.to_state for a, b in itertools.pairwise(records))
    assert (await store.get_agent(target)).state == records[-1].to_state

    everything = await all_events(store)
    assert [e.sequence for e in everything] == list(range(1, len(everything) + 1))
    assert recorder.sequences == sorted(recorder.sequences)  # heard in commit order
    assert recorder.sequences == [e.sequence for e in everything[-len(recorder.sequences) :]]


async def walk_from(store: Store, agent_id: str, triggers: Sequence[Trigger]) -> None:
    for trigger in triggers:
        await store.transition_agent(agent_id, trigger, actor="test")


# ---------------------------------------------------------------------------------------------- listing


async def test_pagination_returns_every_row_exactly_once(store: SqlStore) -> None:
    teams = [(await store.add_team(Team(id=new_id(), name=f"team-{i}"), actor="test"))[0] for i in range(2)]
    assert (await store.read_team(teams[0].id)).name == "team-0"
    agents: list[Agent] = []
    for i in range(120):
        # Three agents share each timestamp, so the id must break ties.
        agent = new_agent(
            spawned_at=T0 + timedelta(seconds=i // 3),
            team_id=teams[i % 2].id if i % 3 else None,
            label=f"l{i % 5}",
            model=f"m{i % 2}",
        )
        await store.create_agent(agent, actor="api")
        match i % 4:
            case 1:
                agent = await walk(store, agent.id, AgentState.INITIALIZING, node_id=f"n{i % 3}")
            case 2:
                agent = await walk(store, agent.id, AgentState.EXECUTING, node_id=f"n{i % 3}")
            case 3:
                agent = await walk(store, agent.id, AgentState.KILLED)
            case _:
                agent = await store.get_agent(agent.id)
        agents.append(agent)
    newest_first = sorted(agents, key=lambda a: (a.spawned_at, a.id), reverse=True)

    filters: list[tuple[dict[str, Any], Any]] = [
        ({}, lambda a: True),
        ({"status": [AgentStatus.RUNNING]}, lambda a: a.state == AgentState.EXECUTING),
        ({"states": [AgentState.PENDING, AgentState.KILLED]}, lambda a: a.state in ("pending", "killed")),
        ({"status": [AgentStatus.INITIALIZING], "states": [AgentState.PENDING]}, lambda a: False),
        ({"team_id": teams[1].id}, lambda a: a.team_id == teams[1].id),
        ({"label": "l3"}, lambda a: a.label == "l3"),
        ({"model": "m1", "status": [AgentStatus.KILLED]}, lambda a: a.model == "m1" and a.state == "killed"),
        ({"node_id": "n2"}, lambda a: a.node_id == "n2"),
    ]
    for kwargs, keep in filters:
        expected = [a.id for a in newest_first if keep(a)]
        seen: list[str] = []
        cursor = None
        while True:
            page = await store.list_agents(AgentQuery(limit=7, cursor=cursor, **kwargs))
            seen += [a.id for a in page.items]
            assert len(page.items) <= 7
            assert page.has_more == (page.cursor is not None)
            if not page.has_more:
                break
            cursor = page.cursor
        assert seen == expected, kwargs

    page = await store.list_agents(AgentQuery(limit=200))
    assert [a.id for a in page.items] == [a.id for a in newest_first]
    assert (page.has_more, page.cursor) == (False, None)
    with pytest.raises(ValidationError):
        await store.list_agents(AgentQuery(cursor="not-a-cursor"))


async def test_admission_order(store: Store) -> None:
    now = T0 + timedelta(hours=1)
    specs = [  # (priority, spawned offset, next attempt offset from now, state)
        (0, 1, None, AgentState.PENDING),
        (5, 3, None, AgentState.PENDING),
        (5, 2, -10, AgentState.PENDING),  # its backoff has passed
        (9, 0, +10, AgentState.PENDING),  # still backing off
        (1, 0, None, AgentState.EXECUTING),  # not pending
        (5, 4, 0, AgentState.PENDING),  # due exactly now
    ]
    ids = []
    for priority, spawned, retry_at, state in specs:
        agent = new_agent(
            priority=priority,
            spawned_at=T0 + timedelta(seconds=spawned),
            next_attempt_at=None if retry_at is None else now + timedelta(seconds=retry_at),
        )
        await store.create_agent(agent, actor="api")
        await walk(store, agent.id, state)
        ids.append(agent.id)
    admissible = await store.admissible_agents(now, limit=10)
    assert [a.id for a in admissible] == [ids[2], ids[1], ids[5], ids[0]]
    assert [a.id for a in await store.admissible_agents(now, limit=2)] == [ids[2], ids[1]]


# ----------------------------------------------------------------------------------------------- events


async def test_sequences_increase_across_all_writes(store: Store) -> None:
    assert await store.last_sequence() == 0
    agent, first = await store.create_agent(new_agent(), actor="api")
    batch = await store.append_events(
        [make_event("agent:output", {"n": i}, component="supervisor", agent_id=agent.id) for i in range(5)]
    )
    _, moved = await store.transition_agent(agent.id, Trigger.ADMIT, actor="scheduler")
    deleted = await store.delete_agent(agent.id, actor="api")
    sequences = [first.sequence, *(e.sequence for e in batch), moved.sequence, deleted.sequence]
    assert sequences == list(range(1, 9))
    assert await store.last_sequence() == 8
    assert [e.payload for e in batch] == [{"n": i} for i in range(5)]


async def test_append_events_with_agent_changes(store: Store) -> None:
    agent, _ = await store.create_agent(new_agent(), actor="api")
    events = [
        make_event("agent:output", {"line": f"l{i}"}, component="supervisor", agent_id=agent.id) for i in range(3)
    ]
    stored = await store.append_events(events, agent_changes={agent.id: {"log_offsets": {"stdout": 42}}})
    assert [e.id for e in stored] == [e.id for e in events]
    assert (await store.get_agent(agent.id)).log_offsets == {"stdout": 42}
    # Changes for an agent that no longer exists do not lose the events.
    orphan = await store.append_events([make_event("x:y", component="t")], agent_changes={new_id(): {"pid": 1}})
    assert len(orphan) == 1

    before = await store.last_sequence()
    with pytest.raises(ValueError):
        await store.append_events([make_event("x:y", component="t")], agent_changes={agent.id: {"state": "failed"}})
    assert await store.last_sequence() == before
    assert await store.append_events([]) == []


async def test_listener_hears_only_committed_writes(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder(store)
    store.set_commit_listener(recorder)
    agent, created = await store.create_agent(new_agent(), actor="api")
    stored = await store.append_events([make_event("a:b", component="t"), make_event("a:c", component="t")])
    assert recorder.calls == [[created], stored]

    # A failed write (duplicate event id) rolls back everything in it and is never announced.
    before = await store.last_sequence()
    with pytest.raises(ConflictError):
        await store.append_events([make_event("a:d", component="t"), stored[0]])
    assert await store.last_sequence() == before
    assert len(recorder.calls) == 2
    # A write without events is not announced either.
    await store.update_agent(agent.id, {"label": "quiet"})
    assert len(recorder.calls) == 2

    async def broken(events: list[Event]) -> None:
        raise RuntimeError("subscriber bug")

    store.set_commit_listener(broken)
    with caplog.at_level(logging.ERROR, logger="godel.store"):
        (event,) = await store.append_events([make_event("a:e", component="t")])
    assert await store.get_event(event.id) == event
    assert "commit listener failed" in caplog.text

    # A listener that writes to the store (and so is itself notified) must not deadlock.
    heard: list[str] = []

    async def chatty(events: list[Event]) -> None:
        heard.extend(e.type for e in events)
        if events[0].type == "ping:x":
            await store.append_events([make_event("pong:x", component="t")])

    store.set_commit_listener(chatty)
    await asyncio.wait_for(store.append_events([make_event("ping:x", component="t")]), timeout=10)
    assert heard == ["ping:x", "pong:x"]
    store.set_commit_listener(None)


async def test_concurrent_appends_are_heard_in_commit_order(store: Store) -> None:
    recorder = Recorder(store)
    store.set_commit_listener(recorder)
    batches = [[make_event("b:x", {"b": b, "i": i}, component="t") for i in range(20)] for b in range(15)]
    results = await asyncio.gather(*(store.append_events(b) for b in batches))
    for batch, stored in zip(batches, results, strict=True):
        seqs = [e.sequence for e in stored if e.sequence is not None]
        assert seqs == list(range(seqs[0], seqs[0] + 20))  # a batch is contiguous
        assert [e.payload for e in stored] == [e.payload for e in batch]
    assert recorder.sequences == list(range(1, 301))


async def test_two_stores_on_one_database_keep_one_gap_free_log(store: SqlStore, store_url: str) -> None:
    # Two stores on one database behave like two server processes: only the database orders their appends.
    other = open_store(store_url)
    writers_done = asyncio.Event()
    try:

        async def write(s: Store, name: str) -> None:
            for i in range(30):
                await s.append_events([make_event("w:x", {"w": name, "i": i, "j": j}, component="t") for j in range(3)])

        async def read() -> int:
            seen = 0
            while True:
                done = writers_done.is_set()  # read once more after the writers finish
                batch = await store.query_events(EventQuery(since=seen, limit=1000))
                sequences = [e.sequence for e in batch]
                # A resumed reader must never skip a sequence that commits later.
                assert sequences == list(range(seen + 1, seen + 1 + len(batch)))
                seen += len(batch)
                if done:
                    return seen
                await asyncio.sleep(0)

        async def writers() -> None:
            await asyncio.gather(write(store, "a"), write(other, "b"), write(other, "c"))
            writers_done.set()

        seen, _ = await asyncio.gather(read(), writers())
        assert seen == 270 == await store.last_sequence()
    finally:
        await other.close()


@pytest.mark.postgres
async def test_appends_wait_for_an_earlier_uncommitted_append(store: SqlStore, store_url: str) -> None:
    """PostgreSQL hands out sequences at insert time; without the events lock a later append could commit (and
    be read, and resumed past) before an earlier one. Here another "process" holds an append open."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite's write lock already admits one writer at a time")
    other = open_store(store_url)
    try:
        async with other._db.write(events=True) as tx:  # an append from another process, not yet committed
            (first,) = await tx.append([make_event("slow:append", component="t")])
            later = asyncio.create_task(store.append_events([make_event("fast:append", component="t")]))
            await until_waiting_on_advisory_lock(store, later)
            assert not later.done()
            assert await store.query_events(EventQuery()) == []  # nothing to resume past yet
        (second,) = await later
        assert first.sequence is not None and second.sequence == first.sequence + 1
        assert [e.type for e in await store.query_events(EventQuery())] == ["slow:append", "fast:append"]
    finally:
        await other.close()


async def until_waiting_on_advisory_lock(store: SqlStore, task: asyncio.Task[Any]) -> None:
    waiting = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
    )
    for _ in range(500):
        async with store.engine.connect() as conn:
            if (await conn.execute(waiting)).scalar_one() or task.done():
                return
        await asyncio.sleep(0.01)  # polling a condition another connection will reach
    raise AssertionError("the second append neither finished nor waited for the events lock")


async def test_query_events_filters(store: Store) -> None:
    a1, a2, team, wf = new_id(), new_id(), new_id(), new_id()
    specs = [
        ("agent:start", a1, None, None),
        ("agent:tool:call", a1, team, None),
        ("Agent:start", a2, None, None),  # case matters
        ("workflow:s1:start", None, None, wf),
        ("workflow:s1:complete", None, None, wf),
        ("workflow:start", None, None, wf),
        ("agent_x:start", a2, team, None),  # "_" must not act as a LIKE wildcard
        ("agentx:start", a2, None, None),
    ]
    events = []
    for i, (type_, agent_id, team_id, workflow_id) in enumerate(specs):
        e = make_event(type_, {"i": i}, component="t", agent_id=agent_id, team_id=team_id, workflow_id=workflow_id)
        events.append(Event(e.type, e.payload, e.source, e.metadata, e.id, T0 + timedelta(minutes=i)))
    stored = await store.append_events(events)

    async def types(**kwargs: Any) -> list[str]:
        patterns = kwargs.pop("patterns", ())
        f = EventFilter(
            patterns=tuple(patterns),
            **{k: kwargs.pop(k) for k in ("agent_id", "team_id", "workflow_id") if k in kwargs},
        )
        return [e.type for e in await store.query_events(EventQuery(filter=f, **kwargs))]

    all_types = [s[0] for s in specs]
    assert await types() == all_types
    assert await types(patterns=["*"]) == all_types
    assert await types(patterns=["agent:*"]) == ["agent:start", "agent:tool:call"]
    assert await types(patterns=["agent:start"]) == ["agent:start"]
    assert await types(patterns=["workflow:*:start"]) == ["workflow:s1:start"]
    assert await types(patterns=["*:start"]) == [t for t in all_types if t.count(":") == 1 and t.endswith(":start")]
    assert await types(patterns=["agent_x:*", "workflow:start"]) == ["workflow:start", "agent_x:start"]
    assert await types(agent_id=a2) == ["Agent:start", "agent_x:start", "agentx:start"]
    assert await types(team_id=team) == ["agent:tool:call", "agent_x:start"]
    assert await types(workflow_id=wf, patterns=["workflow:*"]) == all_types[3:6]
    assert await types(since=stored[5].sequence) == all_types[6:]
    assert await types(until=stored[2].sequence) == all_types[:2]
    assert await types(since=stored[1].sequence, until=stored[4].sequence, descending=True) == [
        "workflow:s1:start",
        "Agent:start",
    ]
    assert await types(after=T0 + timedelta(minutes=1), before=T0 + timedelta(minutes=4)) == all_types[2:4]
    assert await types(limit=3, descending=True) == all_types[::-1][:3]
    assert await types(limit=2, patterns=["*:start"]) == ["agent:start", "Agent:start"]
    assert await types(limit=0) == []

    fetched = await store.get_event(stored[1].id)
    assert fetched == stored[1]
    assert fetched.timestamp == T0 + timedelta(minutes=1) and fetched.timestamp.tzinfo is not None
    with pytest.raises(EventNotFoundError):
        await store.get_event(new_id())


async def test_query_events_keeps_reading_past_filtered_rows(store: Store) -> None:
    noise = [make_event("agent:noise:x", {"i": i}, component="t") for i in range(1200)]
    hits = [make_event("agent:hit:y", {"h": h}, component="t") for h in range(3)]
    await store.append_events(noise[:700] + hits[:1] + noise[700:1100] + hits[1:] + noise[1100:])
    query = EventQuery(filter=EventFilter(patterns=("agent:*:y",)), limit=3)
    assert [e.payload["h"] for e in await store.query_events(query)] == [0, 1, 2]
    query = EventQuery(filter=EventFilter(patterns=("agent:*:y",)), limit=2, descending=True)
    assert [e.payload["h"] for e in await store.query_events(query)] == [2, 1]
    query = EventQuery(filter=EventFilter(patterns=("agent:*:y",)), limit=10)
    assert len(await store.query_events(query)) == 3


async def test_payloads_survive_both_dialects(store: Store) -> None:
    payload = {
        "text": "nul\x00byte and \\u0000 literal",
        "when": T0,
        "nested": [1, 2.5, None, True],
        "é": "✓",
    }
    (stored,) = await store.append_events([make_event("odd:payload", payload, component="t")])
    back = await store.get_event(stored.id)
    assert back.payload == {
        "text": "nul\ufffdbyte and \\u0000 literal",
        "when": T0.isoformat(),
        "nested": [1, 2.5, None, True],
        "é": "✓",
    }


# -------------------------------------------------------------------------------------------- deletion


async def test_delete_agent_keeps_its_events(store: Store) -> None:
    agent, _ = await store.create_agent(new_agent(), actor="api")
    await walk(store, agent.id, AgentState.EXECUTING)
    snapshot = await store.add_snapshot(
        Snapshot(
            id=new_snapshot_id(),
            agent_id=agent.id,
            ref="refs/godel/snapshots/s",
            commit="c",
            parent_commit="p",
        )
    )
    root = await store.create_session(Session(id=new_id(), agent_id=agent.id))
    child = await store.create_session(Session(id=new_id(), agent_id=agent.id, parent_id=root.id, depth=1))
    before = await all_events(store, agent_id=agent.id)

    event = await store.delete_agent(agent.id, actor="user:al")
    assert event.type == "agent:deleted"
    assert event.payload == {"agentId": agent.id, "actor": "user:al", "state": "executing"}
    with pytest.raises(AgentNotFoundError):
        await store.get_agent(agent.id)
    with pytest.raises(AgentNotFoundError):
        await store.transitions(agent.id)
    with pytest.raises(SnapshotNotFoundError):
        await store.get_snapshot(snapshot.id)
    for session in (root, child):
        with pytest.raises(NotFoundError):
            await store.get_session(session.id)
    assert await all_events(store, agent_id=agent.id) == [*before, event]


# ----------------------------------------------------------------------------- snapshots, sessions, nodes


async def test_snapshots(store: Store) -> None:
    agent, _ = await store.create_agent(new_agent(), actor="api")
    made = []
    for i in range(3):
        snap = Snapshot(
            id=new_snapshot_id(),
            agent_id=agent.id,
            ref=f"refs/godel/snapshots/{i}",
            commit=f"c{i}",
            parent_commit="p",
            label=f"s{i}",
            created_at=T0 + timedelta(seconds=i),
            metadata={"i": i},
        )
        made.append(await store.add_snapshot(snap))
    assert await store.get_snapshot(made[1].id) == made[1]
    assert await store.list_snapshots(agent.id) == made
    await store.delete_snapshot(made[0].id)
    assert await store.list_snapshots(agent.id) == made[1:]
    with pytest.raises(SnapshotNotFoundError) as info:
        await store.delete_snapshot(made[0].id)
    assert info.value.status_code == 404
    with pytest.raises(AgentNotFoundError):
        await store.add_snapshot(
            Snapshot(id=new_snapshot_id(), agent_id=new_id(), ref="r", commit="c", parent_commit="p")
        )
    assert await store.list_snapshots(new_id()) == []


async def test_sessions(store: Store) -> None:
    agent, _ = await store.create_agent(new_agent(), actor="api")
    session = await store.create_session(
        Session(id=new_id(), agent_id=agent.id, status=SessionStatus.ACTIVE, context={"messages": [{"r": "u"}]})
    )
    assert session.created_at is not None
    fetched = await store.get_session(session.id)
    assert fetched == session and fetched.status is SessionStatus.ACTIVE
    with pytest.raises(NotFoundError) as info:
        await store.get_session(new_id())
    assert info.value.status_code == 404
    with pytest.raises(AgentNotFoundError):
        await store.create_session(Session(id=new_id(), agent_id=new_id()))


async def test_nodes_upsert(store: Store) -> None:
    node = Node(id="n1", name="alpha", hostname="h1", max_agents=4, last_heartbeat=T0, metadata={"gpu": False})
    assert await store.upsert_node(node) == node
    await store.upsert_node(Node(id="n0", name="beta", hostname="h0"))
    changed = Node(id="n1", name="alpha", hostname="h1", status=NodeStatus.DRAINING, max_agents=8, current_agents=2)
    await store.upsert_node(changed)
    assert await store.list_nodes() == [changed, Node(id="n0", name="beta", hostname="h0")]


# ------------------------------------------------------------------------------------------------- time


async def test_datetimes_come_back_aware_utc(store: Store) -> None:
    plus5 = timezone(timedelta(hours=5))
    local = datetime(2026, 3, 1, 17, 0, 0, 123456, tzinfo=plus5)
    agent, event = await store.create_agent(new_agent(spawned_at=local, next_attempt_at=local), actor="api")
    fetched = await store.get_agent(agent.id)
    assert fetched.spawned_at == local and fetched.spawned_at is not None
    assert fetched.spawned_at.tzinfo == UTC and fetched.spawned_at.hour == 12
    assert fetched.next_attempt_at is not None and fetched.next_attempt_at.utcoffset() == timedelta(0)
    assert fetched.updated_at is not None and fetched.updated_at.tzinfo is not None
    assert (await store.get_event(event.id)).timestamp.tzinfo is not None

    with pytest.raises(ValueError, match="naive"):
        await store.create_agent(new_agent(spawned_at=datetime(2026, 1, 1)), actor="api")
    with pytest.raises(ValueError, match="naive"):
        await store.update_agent(agent.id, {"next_attempt_at": datetime(2026, 1, 1)})
    assert await store.get_agent(agent.id) == fetched


# -------------------------------------------------------------------------------- dialect-specific edges


async def test_sqlite_connection_settings(sqlite_dir: Any) -> None:
    store = open_store(f"sqlite:///{sqlite_dir}/nested/dir/settings.db", sqlite_synchronous="FULL")
    try:
        await store.migrate()
        async with store.engine.connect() as conn:
            pragma = {
                name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
        assert pragma == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 5000}
    finally:
        await store.close()
    with pytest.raises(ValueError):
        open_store("sqlite:///:memory:")
    with pytest.raises(ValueError):
        open_store("mysql://x/y")


async def test_unreachable_database_is_a_store_error() -> None:
    store = open_store("postgresql://postgres@127.0.0.1:1/nowhere")
    try:
        with pytest.raises(StoreError) as info:
            await store.ping()
        assert info.value.status_code == 503
    finally:
        await store.close()


async def test_unwritable_sqlite_path_is_a_store_error(sqlite_dir: Any) -> None:
    blocker = sqlite_dir / "a-file"
    blocker.write_text("")
    with pytest.raises(StoreError):
        open_store(f"sqlite:///{blocker}/sub/godel.db")
