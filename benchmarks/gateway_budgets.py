"""gateway budgets: what a user budget adds to a streamed request through the gateway, against the same request
of a key without a budget, measured in the same run (``--only gateway`` runs it after the gateway benchmark).

Three processes as in ``benchmarks.gateway``: the scripted model, a real ``godel serve`` (SQLite on tmpfs, a
``[prices]`` entry so the model is priced) and this load generator. Two user keys: ``free`` (no budget) and
``capped`` (a total budget far above what the run spends, so every request is admitted and settled). Phases
alternate round by round, as in the gateway benchmark:

- server CPU per request and p50 at 1, 50 and 200 concurrent streams, budget vs no budget;
- the cost per request after 0, 100k and 1M usage records of the budgeted scope (inserted straight into the
  database, then the budget set again so the ledger sums them once, as an upgrade's backfill does);
- the p50 of a burst of 200 concurrent first requests after an idle pause (every cache expired) against the
  same burst in steady state.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from tests.e2e.serverproc import ServerProcess

from benchmarks.common import Config, Figure, ms_since, scripted_upstream, workdir
from benchmarks.gateway import BODY, MODEL, UPSTREAM_TEXT, _cpu_seconds

NAME = "gateway"
IDLE_SECONDS = 3.0  # longer than the key cache (2 s) and the budget cache (1 s)


def run(cfg: Config) -> list[Figure]:
    with workdir(cfg, "gateway-budgets") as root:
        model, upstream = scripted_upstream(root, UPSTREAM_TEXT, 12)
        config = root / "godel.toml"
        config.write_text(
            f'[providers.scripted]\nkind = "openai-chat"\nbase_url = "{upstream}"\nmodels = ["{MODEL}"]\n\n'
            f'[prices."scripted/{MODEL}"]\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n'
        )
        server = ServerProcess(root / "home", cwd=root, GODEL_CONFIG=str(config), GODEL_LOG_LEVEL="warning")
        try:
            server.start()
            free = server.api("POST", "/api/v1/keys", json={"scope": "user", "id": "free"})["key"]
            capped = server.api("POST", "/api/v1/keys", json={"scope": "user", "id": "capped"})["key"]
            budget = {"scope": "user", "id": "capped", "usd": 1e8, "period": "total"}
            server.api("PUT", "/api/v1/budgets", json=budget)
            assert server.proc is not None
            db = server.home / "godel.db"
            return asyncio.run(_measure(cfg, server, f"{server.url}/proxy/v1", free, capped, db, budget))
        finally:
            server.stop()
            model.terminate()
            model.wait(10)


async def _measure(
    cfg: Config, server: ServerProcess, via: str, free: str, capped: str, db: Path, budget: dict[str, object]
) -> list[Figure]:
    assert server.proc is not None
    pid = server.proc.pid
    figures: list[Figure] = []
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)

    def client(key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=via, timeout=60, headers={"authorization": f"Bearer {key}"}, limits=limits)

    async with client(free) as plain, client(capped) as budgeted:
        for c in (plain, budgeted):
            await _load(c, 10, 40)

        async def rounds(concurrency: int, total: int) -> tuple[list[float], list[float], list[float], list[float]]:
            base: list[float] = []
            godel: list[float] = []
            cpu_base: list[float] = []
            cpu_godel: list[float] = []
            for r in range(4):
                order = ((plain, base, cpu_base), (budgeted, godel, cpu_godel))
                for c, into, cpu_into in order if r % 2 == 0 else tuple(reversed(order)):
                    cpu = _cpu_seconds(pid)
                    samples, _ = await _load(c, concurrency, total // 4)
                    into.extend(samples)
                    cpu_into.append((_cpu_seconds(pid) - cpu) * 1000 / len(samples))
            return base, godel, cpu_base, cpu_godel

        for concurrency in (1, 50, 200):
            total = cfg.pick(800 if concurrency > 1 else 400, 80 if concurrency > 1 else 40)
            base, godel, cpu_base, cpu_godel = await rounds(concurrency, total)
            cfg.log(f"gateway budgets: {concurrency} concurrent: {len(godel)} budgeted, {len(base)} not")
            fig = Figure(bench=NAME, name=f"streamed request under a user budget, {concurrency} concurrent", unit="ms",
                         godel=godel, baseline=base, baseline_label="the same request, key without a budget",
                         target="+≤2 ms p50 (1 concurrent); ≤2x the no-budget p50 (50, 200)")  # fmt: skip
            g, b = fig.godel_stats, fig.baseline_stats
            assert b is not None
            fig.met = (g.p50 - b.p50 <= 2) if concurrency == 1 else (g.p50 <= 2 * b.p50)
            fig.notes.append(f"added p50 +{g.p50 - b.p50:.2f} ms; p50 ratio {g.p50 / b.p50:.2f}x")
            figures.append(fig)
            cpu = Figure(bench=NAME, name=f"server CPU per request, budget vs none, {concurrency} concurrent",
                         unit="ms", godel=cpu_godel, baseline=cpu_base, baseline_label="key without a budget",
                         target="≤1.5x no budget")  # fmt: skip
            cb = cpu.baseline_stats
            assert cb is not None
            cpu.met = cpu.godel_stats.p50 <= 1.5 * cb.p50
            cpu.notes.append(f"ratio {cpu.godel_stats.p50 / cb.p50:.2f}x (per round: "
                             + ", ".join(f"{x:.2f}" for x in cpu_godel) + " vs "
                             + ", ".join(f"{x:.2f}" for x in cpu_base) + " ms)")  # fmt: skip
            figures.append(cpu)

        # The cost per request as the scope's history grows.
        inserted = 0
        per_size: list[tuple[int, float, float]] = []
        for size in (0, cfg.pick(100_000, 20_000), cfg.pick(1_000_000, 100_000)):
            if size > inserted:
                await asyncio.to_thread(_insert_history, db, size - inserted)
                inserted = size
                server.api("PUT", "/api/v1/budgets", json=budget)  # the ledger sums the period once
                await _load(budgeted, 1, 10)
            base, godel, cpu_base, cpu_godel = await rounds(1, cfg.pick(400, 40))
            g_cpu = sorted(cpu_godel)[len(cpu_godel) // 2]
            b_cpu = sorted(cpu_base)[len(cpu_base) // 2]
            fig = Figure(bench=NAME, name=f"budgeted request after {size:,} usage records of its scope", unit="ms",
                         godel=godel, baseline=base, baseline_label="key without a budget, same run",
                         target="independent of the record count")  # fmt: skip
            gs, bs = fig.godel_stats, fig.baseline_stats
            assert bs is not None
            fig.notes.append(f"added p50 +{gs.p50 - bs.p50:.2f} ms; CPU/request {g_cpu:.2f} vs {b_cpu:.2f} ms")
            per_size.append((size, gs.p50 - bs.p50, g_cpu))
            figures.append(fig)
        first_added, first_cpu = per_size[0][1], per_size[0][2]
        for fig, (_, added, cpu_ms) in zip(figures[-len(per_size) :], per_size, strict=True):
            fig.met = added <= first_added + 1.0 and cpu_ms <= first_cpu * 1.25

        # A burst of first requests after an idle pause against the same burst in steady state.
        cold: list[float] = []
        warm: list[float] = []
        for _ in range(cfg.pick(3, 1)):
            await asyncio.sleep(IDLE_SECONDS)  # every cache expires
            samples, _ = await _load(budgeted, 200, 200)
            cold.extend(samples)
            samples, _ = await _load(budgeted, 200, 200)
            warm.extend(samples)
        fig = Figure(bench=NAME, name="burst of 200 budgeted first requests after an idle pause", unit="ms",
                     godel=cold, baseline=warm, baseline_label="the same burst in steady state",
                     target="≤2x steady state p50")  # fmt: skip
        cs, ws = fig.godel_stats, fig.baseline_stats
        assert ws is not None
        fig.met = cs.p50 <= 2 * ws.p50
        fig.notes.append(f"p50 ratio {cs.p50 / ws.p50:.2f}x; upstream 502s retried in the run: {len(RETRIED)}")
        figures.append(fig)
    return figures


RETRIED: list[int] = []  # requests sent again after the upstream dropped a pooled connection (a 502)


async def _load(client: httpx.AsyncClient, concurrency: int, total: int) -> tuple[list[float], float]:
    """``benchmarks.gateway._load``, except that a 502 for a pooled upstream connection the scripted model had
    just closed (aiohttp's keep-alive race, not the budget's doing) is sent once more and counted in RETRIED."""
    queue = list(range(total))
    samples: list[float] = []

    async def one() -> bool:
        async with client.stream("POST", "/chat/completions", json=BODY) as response:
            if response.status_code == 502:
                await response.aread()
                return False
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {(await response.aread())[:300]!r}")
            lines = [line async for line in response.aiter_lines()]
            if "data: [DONE]" not in lines:
                raise RuntimeError("stream ended without [DONE]")
        return True

    async def worker() -> None:
        while queue:
            queue.pop()
            t0 = time.perf_counter()
            if not await one():
                RETRIED.append(1)
                if not await one():
                    raise RuntimeError("502 twice in a row")
            samples.append(ms_since(t0))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - started


def _insert_history(db: Path, count: int) -> None:
    """``count`` usage records of the budgeted user, written straight into the server's database."""
    conn = sqlite3.connect(db, timeout=60)
    try:
        at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        row = (at, "scripted", MODEL, "openai-chat", 1, 200, 10, 12, 0, 0.00001, 1.0, 1, "capped", 0)
        sql = (
            "INSERT INTO usage_records (at, provider, model, wire, stream, status_code, input_tokens, output_tokens,"
            " cached_tokens, cost_usd, latency_ms, complete, user_name, cost_estimated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        batch = 50_000
        for start in range(0, count, batch):
            conn.executemany(sql, [row] * min(batch, count - start))
            conn.commit()
    finally:
        conn.close()
