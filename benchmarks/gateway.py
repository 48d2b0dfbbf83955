"""gateway: what ``/proxy/v1`` adds to a streamed model request, against calling the same upstream directly.

Three processes: the scripted model (``godel dev model``, the upstream), a real ``godel serve`` (its gateway,
SQLite on tmpfs, a user key, no budget), and this load generator (httpx, one pooled client per path). At 1, 50
and 200 concurrent streams, a fixed number of streamed chat-completions requests is sent straight to the
upstream and through the gateway, the two phases interleaved round by round. A sample is the time from sending
the request to reading ``data: [DONE]``. The gateway's side includes key lookup, routing, the usage meter, the
usage record (one SQLite write per request) and the relay. Requests per second of the gateway are measured at
the highest concurrency; the machine has 2 cores shared by the three processes, so the figure is per server
process, not per core of a dedicated machine.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
from tests.e2e.serverproc import ServerProcess

from benchmarks.common import Config, Figure, ms_since, scripted_upstream, workdir

NAME = "gateway"
MODEL = "scripted-model"
UPSTREAM_TEXT = "Hello from upstream, a short streamed answer."
BODY = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def run(cfg: Config) -> list[Figure]:
    with workdir(cfg, NAME) as root:
        model, upstream = scripted_upstream(root, UPSTREAM_TEXT, 12)
        config = root / "godel.toml"
        config.write_text(
            f'[providers.scripted]\nkind = "openai-chat"\nbase_url = "{upstream}"\nmodels = ["{MODEL}"]\n'
        )
        server = ServerProcess(root / "home", cwd=root, GODEL_CONFIG=str(config), GODEL_LOG_LEVEL="warning")
        try:
            server.start()
            key = server.api("POST", "/api/v1/keys", json={"scope": "user", "id": "bench"})["key"]
            assert server.proc is not None
            figures = asyncio.run(_measure(cfg, upstream, f"{server.url}/proxy/v1", key, server.proc.pid))
        finally:
            server.stop()
            model.terminate()
            model.wait(10)
    from benchmarks import gateway_budgets  # a budget against no budget, on a server of its own

    return figures + gateway_budgets.run(cfg)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (``/proc/PID/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(cfg: Config, upstream: str, via: str, key: str, server_pid: int) -> list[Figure]:
    figures: list[Figure] = []
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with (
        httpx.AsyncClient(base_url=upstream, timeout=60, limits=limits) as direct,
        httpx.AsyncClient(base_url=via, timeout=60, headers={"authorization": f"Bearer {key}"},
                          limits=limits) as gateway,
    ):  # fmt: skip
        for client in (direct, gateway):  # warm both paths (connections, the gateway's first requests)
            await _load(client, 10, 40)
        for concurrency in (1, 50, 200):
            total = cfg.pick(600 if concurrency > 1 else 200, 60 if concurrency > 1 else 20)
            rounds = 3
            base: list[float] = []
            godel: list[float] = []
            rps: list[float] = []
            cpu_ms: list[float] = []  # the server's CPU time per proxied request
            for r in range(rounds):
                order = ((direct, base), (gateway, godel)) if r % 2 == 0 else ((gateway, godel), (direct, base))
                for client, into in order:
                    cpu = _cpu_seconds(server_pid)
                    samples, seconds = await _load(client, concurrency, total // rounds)
                    into.extend(samples)
                    if client is gateway:
                        rps.append(len(samples) / seconds)
                        cpu_ms.append((_cpu_seconds(server_pid) - cpu) * 1000 / len(samples))
            cfg.log(f"gateway: {concurrency} concurrent: {len(godel)} via the gateway, {len(base)} direct")
            fig = Figure(
                bench=NAME,
                name=f"streamed chat request, {concurrency} concurrent",
                unit="ms",
                godel=godel,
                baseline=base,
                baseline_label="the same request straight to the upstream",
                target="+≤2 ms p50, +≤10 ms p99 added",
            )
            g, b = fig.godel_stats, fig.baseline_stats
            assert b is not None
            added_p50, added_p99 = g.p50 - b.p50, g.p99 - b.p99
            fig.met = added_p50 <= 2 and added_p99 <= 10
            fig.notes.append(f"added: p50 +{added_p50:.2f} ms, p99 +{added_p99:.2f} ms")
            fig.extra = {"addedP50Ms": round(added_p50, 3), "addedP99Ms": round(added_p99, 3)}
            figures.append(fig)
            if concurrency == 200:
                figures.append(Figure(bench=NAME, name="gateway requests/s at 200 concurrent (one server process)",
                                      unit="req/s", godel=rps, higher_is_better=True))  # fmt: skip
                # What one core could relay if the gateway had it to itself: 1000 ms / its CPU ms per request.
                per_core = Figure(
                    bench=NAME, name="gateway requests/s per core (from its CPU time per request)", unit="req/s",
                    godel=[1000 / c for c in cpu_ms if c > 0], higher_is_better=True,
                )  # fmt: skip
                per_core.notes.append("server CPU per request: " + ", ".join(f"{c:.2f} ms" for c in cpu_ms))
                figures.append(per_core)
    return figures


async def _load(client: httpx.AsyncClient, concurrency: int, total: int) -> tuple[list[float], float]:
    """``total`` streamed requests by ``concurrency`` workers; per-request latency (ms) and the wall time (s)."""
    queue = list(range(total))
    samples: list[float] = []

    async def worker() -> None:
        while queue:
            queue.pop()
            t0 = time.perf_counter()
            async with client.stream("POST", "/chat/completions", json=BODY) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {(await response.aread())[:300]!r}")
                done = False
                async for line in response.aiter_lines():
                    if line == "data: [DONE]":
                        done = True
                if not done:
                    raise RuntimeError("stream ended without [DONE]")
            samples.append(ms_since(t0))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - started
