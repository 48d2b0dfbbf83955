"""list: GET /api/v1/agents?limit=50 over 10k and 100k agent rows.

Four pages: the first page (newest first); two filtered pages, ``status=failed`` (15% of the rows, so a
page fills at once) and ``status=running`` (the states executing, waiting and completing: only the newest
``LIVE`` rows, as on a real node where at most ``max_concurrent_agents`` run while history piles up, so the
page holds fewer than 50 items and the query must prove there are no more); and a deep page (a cursor 90% of
the way down). Each is measured
(a) through ``Store.list_agents``, (b) through the HTTP API in-process (``create_app`` + ``httpx.ASGITransport``;
the full response body is read, not decoded), and (c) as the baseline, the same indexed SQL (the statement
Godel sends, written by hand) with the stdlib ``sqlite3`` module on the same database file, ``fetchall()``
of 51 rows. Samples rotate through the three sides so each sees the same machine conditions.

The rows are valid agents (``godel.core.models.Agent`` written through the store's own row mapper), inserted
in batches of 5,000 through the store's engine and tables. The query plans SQLite chose for Godel's real
statements are recorded in the JSON (``extra.plan``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from tests.conftest import admin_headers  # a real signed access token, as a user's

from benchmarks.common import Config, Figure, ms_since, workdir
from godel.api.app import create_app
from godel.core.ids import branch_for
from godel.core.models import Agent
from godel.core.ports import AgentQuery
from godel.core.states import AgentState, AgentStatus
from godel.scheduler.plane import ControlPlane
from godel.settings import Settings
from godel.store import SqlStore, open_store, tables
from godel.store import rows as store_rows
from godel.store.agents import encode_cursor

NAME = "list"
LIMIT = 50
TARGET_RATIO = 2.0
TARGET_MS = 20.0

# History in 20 slots: 70% completed, 15% failed, 10% killed, 5% pending; the newest LIVE rows run.
_STATES = [AgentState.COMPLETED] * 14 + [AgentState.FAILED] * 3 + [AgentState.KILLED] * 2 + [AgentState.PENDING]
_LIVE = (AgentState.EXECUTING, AgentState.EXECUTING, AgentState.EXECUTING, AgentState.WAITING)
LIVE = 32  # running agents (the default max_concurrent_agents), the newest rows
_RUNNING = ("completing", "executing", "waiting")
_COLUMNS = ", ".join(tables.agents.c.keys())
_ORDER = "ORDER BY spawned_at DESC, id DESC LIMIT ?"
_RAW_SQL = {
    "first": f"SELECT {_COLUMNS} FROM agents {_ORDER}",
    "status=failed": f"SELECT {_COLUMNS} FROM agents WHERE lifecycle_state IN (?) {_ORDER}",
    # The best hand-written form: one index range per state, merged (a plain IN walks the spawned_at index).
    "status=running": " UNION ALL ".join(
        f"SELECT * FROM (SELECT {_COLUMNS} FROM agents WHERE lifecycle_state = ? {_ORDER})" for _ in _RUNNING
    )
    + f" {_ORDER}",
    "deep cursor": f"SELECT {_COLUMNS} FROM agents WHERE spawned_at <= ? AND (spawned_at < ? OR id < ?) {_ORDER}",
}


def run(cfg: Config) -> list[Figure]:
    with workdir(cfg, NAME) as root:
        return asyncio.run(_run(cfg, root))


def _agent(i: int, n: int, t0: datetime) -> Agent:
    agent_id = str(uuid.uuid4())
    state = _LIVE[i % len(_LIVE)] if i >= n - LIVE else _STATES[i % len(_STATES)]
    spawned = t0 + timedelta(seconds=i, microseconds=(i * 7919) % 1_000_000)
    ended = state in (AgentState.COMPLETED, AgentState.FAILED, AgentState.KILLED)
    return Agent(
        id=agent_id,
        task=f"fix the flaky test number {i} in the payments service and open a branch",
        model="",
        state=state,
        label=f"batch-{i % 25}",
        kind="command",
        config={"command": "make test", "env": {"CI": "1"}},
        repo="/srv/repos/payments",
        base_ref="HEAD",
        base_commit=f"{i:040x}",
        branch=branch_for(agent_id),
        worktree=None if ended else f"/srv/godel/worktrees/{agent_id}",
        commits=[f"{i + 1:040x}"] if state == AgentState.COMPLETED else [],
        priority=i % 3,
        node_id=None if state == AgentState.PENDING else "node-1",
        pid=None if state == AgentState.PENDING else 10_000 + i % 20_000,
        pid_started=None if state == AgentState.PENDING else 1.7e9 + i,
        log_dir=f"/srv/godel/logs/{agent_id}",
        log_offsets={"stdout": 1200 + i % 500, "stderr": i % 80},
        exit_code=0 if state == AgentState.COMPLETED else (1 if state == AgentState.FAILED else None),
        outcome=(
            {
                "success": True,
                "reason": "exited 0",
                "result": None,
                "signals": [],
                "changedFiles": 2,
                "commits": 1,
                "exitCode": 0,
            }
            if ended
            else {}
        ),
        spawned_at=spawned,
        started_at=None if state == AgentState.PENDING else spawned + timedelta(seconds=1),
        completed_at=spawned + timedelta(seconds=60) if ended else None,
        runtime=59.0 if ended else 0.0,
        updated_at=spawned + timedelta(seconds=60),
        metadata={"ticket": f"PAY-{i}"},
    )


async def _populate(store: SqlStore, n: int) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    batch: list[dict[str, Any]] = []
    for i in range(n):
        batch.append(store_rows.AGENTS.to_row(_agent(i, n, t0)))
        if len(batch) == 5000 or i == n - 1:
            async with store.engine.begin() as conn:
                await conn.execute(tables.agents.insert(), batch)
            batch = []
    async with store.engine.begin() as conn:
        await conn.exec_driver_sql("ANALYZE")  # what a long-lived database would have (no-op for the plans)


def _cursor_values(db: sqlite3.Connection, n: int) -> tuple[str, str]:
    """(spawned_at as stored, id) of the row 90% of the way down the listing."""
    spawned, agent_id = db.execute(
        "SELECT spawned_at, id FROM agents ORDER BY spawned_at DESC, id DESC LIMIT 1 OFFSET ?",
        (int(n * 0.9),),
    ).fetchone()
    return str(spawned), str(agent_id)


async def _run(cfg: Config, root: Path) -> list[Figure]:
    sizes = (10_000, 100_000) if not cfg.quick else (2_000, 10_000)
    samples, warmup = cfg.pick(300, 20), cfg.pick(20, 3)
    figures: list[Figure] = []
    for n in sizes:
        path = root / f"agents-{n}.db"
        store = open_store(f"sqlite:///{path}")
        await store.migrate()
        t0 = time.perf_counter()
        await _populate(store, n)
        cfg.log(f"list: inserted {n:,} agents in {ms_since(t0) / 1000:.1f} s")
        db = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000", "foreign_keys=ON"):
            db.execute(f"PRAGMA {pragma}")
        at, last_id = _cursor_values(db, n)
        cursor = encode_cursor(datetime.fromisoformat(at).replace(tzinfo=UTC), last_id)
        kinds: dict[str, tuple[AgentQuery, dict[str, Any], tuple[Any, ...]]] = {
            "first": (AgentQuery(limit=LIMIT), {"limit": LIMIT}, (LIMIT + 1,)),
            "status=failed": (
                AgentQuery(status=[AgentStatus.FAILED], limit=LIMIT),
                {"limit": LIMIT, "status": "failed"},
                ("failed", LIMIT + 1),
            ),
            "status=running": (
                AgentQuery(status=[AgentStatus.RUNNING], limit=LIMIT),
                {"limit": LIMIT, "status": "running"},
                (*(v for state in _RUNNING for v in (state, LIMIT + 1)), LIMIT + 1),
            ),
            "deep cursor": (
                AgentQuery(limit=LIMIT, cursor=cursor),
                {"limit": LIMIT, "cursor": cursor},
                (at, at, last_id, LIMIT + 1),
            ),
        }
        plans = await _plans(store, db, {k: v[0] for k, v in kinds.items()})
        plane = ControlPlane(Settings(home=root / "home", log_level="warning"), store=store)
        transport = httpx.ASGITransport(app=create_app(plane=plane))
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://localhost", headers=await admin_headers(plane)
            ) as client:
                for kind, (query, params, raw_params) in kinds.items():
                    got = await _measure(store, client, db, query, params, _RAW_SQL[kind], raw_params, samples, warmup)
                    figures.extend(_figures(n, kind, got, plans[kind]))
                    cfg.log(f"list: {n:,} rows, {kind}: done")
        finally:
            db.close()
            await store.close()
    return figures


async def _plans(store: SqlStore, db: sqlite3.Connection, queries: dict[str, AgentQuery]) -> dict[str, list[str]]:
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        seen.append((statement, parameters))

    sa.event.listen(store.engine.sync_engine, "before_cursor_execute", capture)
    plans: dict[str, list[str]] = {}
    try:
        for kind, query in queries.items():
            seen.clear()
            await store.list_agents(query)
            statement, parameters = next((s, p) for s, p in seen if "FROM agents" in s)
            rows = db.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
            plans[kind] = [str(r[-1]) for r in rows]
    finally:
        sa.event.remove(store.engine.sync_engine, "before_cursor_execute", capture)
    return plans


async def _measure(
    store: SqlStore,
    client: httpx.AsyncClient,
    db: sqlite3.Connection,
    query: AgentQuery,
    params: dict[str, Any],
    raw_sql: str,
    raw_params: tuple[Any, ...],
    samples: int,
    warmup: int,
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"store": [], "http": [], "raw": []}
    first = await client.get("/api/v1/agents", params=params)
    page = first.json()["data"]
    if first.status_code != 200 or not page["items"]:
        raise RuntimeError(f"unexpected listing answer: {first.status_code} {first.text[:300]}")
    expected = [item["id"] for item in page["items"]]
    raw_rows = db.execute(raw_sql, raw_params).fetchall()
    if [r[0] for r in raw_rows[:LIMIT]] != expected:
        raise RuntimeError("the raw SQL and Godel disagree on the page; the baseline would not be equivalent")

    async def via_store() -> None:
        await store.list_agents(query)

    async def via_http() -> None:
        r = await client.get("/api/v1/agents", params=params)
        if r.status_code != 200:
            raise RuntimeError(r.text)

    async def via_raw() -> None:
        db.execute(raw_sql, raw_params).fetchall()

    sides = [("store", via_store), ("http", via_http), ("raw", via_raw)]
    for i in range(warmup + samples):
        rot = i % 3
        for key, fn in sides[rot:] + sides[:rot]:
            t0 = time.perf_counter()
            await fn()
            ms = ms_since(t0)
            if i >= warmup:
                out[key].append(ms)
    return out


def _figures(n: int, kind: str, got: dict[str, list[float]], plan: list[str]) -> list[Figure]:
    figures = []
    for side, label in (("store", "Store.list_agents"), ("http", "GET /api/v1/agents (in-process)")):
        fig = Figure(
            bench=NAME,
            name=f"{n // 1000}k rows, {kind}: {label}",
            unit="ms",
            godel=got[side],
            baseline=got["raw"],
            baseline_label="same indexed SQL, sqlite3 fetchall",
            target=f"≤ {TARGET_RATIO:g}x raw at p95" + (f"; p95 < {TARGET_MS:g} ms" if n >= 100_000 else ""),
            extra={"plan": plan},
        )
        ratio = fig.ratio("p95")
        fig.met = ratio is not None and ratio <= TARGET_RATIO
        if n >= 100_000:
            fig.met = fig.met and fig.godel_stats.p95 < TARGET_MS
        figures.append(fig)
    return figures
