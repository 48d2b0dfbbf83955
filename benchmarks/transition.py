"""transition: one state transition on SQLite through ``Store.transition_agent``.

Godel: an agent row moved to ``executing`` through the real lifecycle (admit, worktree_created,
session_started), then ``pause``/``resume`` pairs on that one row, each a legal transition with the same
changes ``ControlPlane.pause``/``resume`` make (pause_time, paused_by, runtime / started_at). Each call is one
transaction: read the row, validate the move, UPDATE … RETURNING, INSERT the event, read the new sequence,
INSERT the transition record, COMMIT, then hand the event to the bus (a ``MemoryBus`` with no subscribers,
as in a server nobody watches).

Baseline: the same UPDATE + INSERT (event) + INSERT (transition) in one ``BEGIN IMMEDIATE`` transaction with
the stdlib ``sqlite3`` module, on a second database created by the same migrations and opened with the same
pragmas (WAL, synchronous=NORMAL, busy_timeout, foreign_keys), on the same tmpfs. Samples interleave pair by
pair, alternating which side goes first.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import Config, Figure, ms_since, workdir
from godel.bus import MemoryBus
from godel.core.ids import branch_for, new_id
from godel.core.models import Agent
from godel.core.transitions import Trigger
from godel.store import SqlStore, open_store

NAME = "transition"
TARGET_MS = 5.0


def run(cfg: Config) -> list[Figure]:
    with workdir(cfg, NAME) as root:
        return asyncio.run(_run(cfg, root))


async def _new_agent(store: SqlStore) -> str:
    agent_id = new_id()
    agent = Agent(
        id=agent_id,
        task="transition bench",
        repo="/dev/null",
        base_commit="0" * 40,
        branch=branch_for(agent_id),
        config={"command": "sleep 600"},
        spawned_at=datetime.now(UTC),
    )
    await store.create_agent(agent, actor="api")
    await store.transition_agent(agent_id, Trigger.ADMIT, actor="scheduler", changes={"node_id": "n1"})
    await store.transition_agent(agent_id, Trigger.WORKTREE_CREATED, actor="supervisor")
    await store.transition_agent(
        agent_id,
        Trigger.SESSION_STARTED,
        actor="supervisor",
        changes={"pid": 1, "started_at": datetime.now(UTC)},
    )
    return agent_id


async def _run(cfg: Config, root: Path) -> list[Figure]:
    store = open_store(f"sqlite:///{root / 'godel.db'}")
    await store.migrate()
    MemoryBus().attach(store)
    agent_id = await _new_agent(store)

    raw_store = open_store(f"sqlite:///{root / 'raw.db'}")  # the same schema, created by the same migrations
    await raw_store.migrate()
    raw_id = await _new_agent(raw_store)
    await raw_store.close()
    raw = _RawStore(root / "raw.db")

    pairs, warmup = cfg.pick(1500, 100), cfg.pick(50, 10)
    godel: list[float] = []
    baseline: list[float] = []
    try:
        for i in range(warmup + pairs):
            for godel_turn in (True, False) if i % 2 == 0 else (False, True):
                if godel_turn:
                    a = await _godel_pair(store, agent_id)
                    if i >= warmup:
                        godel.extend(a)
                else:
                    b = raw.pair(raw_id)
                    if i >= warmup:
                        baseline.extend(b)
    finally:
        raw.close()
        await store.close()

    fig = Figure(
        bench=NAME,
        name="transition_agent (pause/resume) on SQLite",
        unit="ms",
        godel=godel,
        baseline=baseline,
        baseline_label="raw sqlite3: UPDATE + 2 INSERT, 1 txn",
        target=f"p95 < {TARGET_MS:g} ms",
    )
    fig.met = fig.godel_stats.p95 < TARGET_MS
    fig.notes.append("SqlStore over aiosqlite (one thread hop per statement); baseline is synchronous sqlite3")
    return [fig]


async def _godel_pair(store: SqlStore, agent_id: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    now = datetime.now(UTC)
    await store.transition_agent(
        agent_id,
        Trigger.PAUSE,
        actor="api",
        changes={"pause_time": now, "paused_by": "api", "runtime": 1.5},
    )
    pause = ms_since(t0)
    t0 = time.perf_counter()
    await store.transition_agent(agent_id, Trigger.RESUME, actor="api", changes={"started_at": datetime.now(UTC)})
    return pause, ms_since(t0)


def _stamp(at: datetime) -> str:
    # The text SQLAlchemy's SQLite DATETIME (and Godel's UTCDateTime) stores: naive UTC, microseconds.
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


class _RawStore:
    """The baseline: the same three statements with the stdlib driver, nothing else."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000", "foreign_keys=ON"):
            self.db.execute(f"PRAGMA {pragma}")

    def close(self) -> None:
        self.db.close()

    def pair(self, agent_id: str) -> tuple[float, float]:
        t0 = time.perf_counter()
        now = datetime.now(UTC)
        self._transition(
            agent_id,
            "executing",
            "paused",
            "pause",
            "agent:pause",
            "UPDATE agents SET pause_time = ?, paused_by = ?, runtime = ?, lifecycle_state = ?, updated_at = ? "
            "WHERE id = ?",
            (_stamp(now), "api", 1.5),
        )
        pause = ms_since(t0)
        t0 = time.perf_counter()
        self._transition(
            agent_id,
            "paused",
            "executing",
            "resume",
            "agent:resume",
            "UPDATE agents SET started_at = ?, lifecycle_state = ?, updated_at = ? WHERE id = ?",
            (_stamp(datetime.now(UTC)),),
        )
        return pause, ms_since(t0)

    def _transition(
        self,
        agent_id: str,
        from_state: str,
        to_state: str,
        trigger: str,
        event_type: str,
        update: str,
        values: tuple[Any, ...],
    ) -> None:
        now = _stamp(datetime.now(UTC))
        body = {
            "agentId": agent_id,
            "from": from_state,
            "to": to_state,
            "trigger": trigger,
            "reason": None,
            "actor": "api",
        }
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(update, (*values, to_state, now, agent_id))
            cur = db.execute(
                "INSERT INTO events (id, event_type, timestamp, payload, source_component, agent_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    str(uuid.uuid4()),
                    event_type,
                    now,
                    json.dumps(body, separators=(",", ":")),
                    "api",
                    agent_id,
                ),
            )
            db.execute(
                "INSERT INTO agent_transitions (agent_id, from_state, to_state, trigger, actor, reason, at, "
                "event_sequence) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (agent_id, from_state, to_state, trigger, "api", None, now, cur.lastrowid),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
