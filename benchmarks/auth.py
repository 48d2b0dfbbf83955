"""auth: what authentication and authorisation add to a request, against the same server with them turned off.

Two real ``godel serve`` processes on one machine, identical but for ``GODEL_AUTH_ENABLED`` (SQLite on tmpfs, the
same scripted upstream model), measured from outside by one load generator, the two sides interleaved request
by request so both see the same machine. Figures:

- ``GET /api/v1/agents?limit=50`` over 200 agent rows: with the admin's API key (``X-API-Key``: argon2id-hashed,
  verified once and then remembered), with a bearer access token (a JWT checked on every request), and with
  nothing on the server without auth.
- a proxied, non-streamed chat completion (``/proxy/v1``, a virtual key): the gateway's own path, which the API's
  authentication does not touch but the browser guard (Host/Origin) does.

Target (issue 10): at most +0.5 ms at p50 over the server without auth.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from tests.e2e.serverproc import ServerProcess

from benchmarks.common import Config, Figure, ms_since, scripted_upstream, workdir

NAME = "auth"
MODEL = "scripted-model"
TARGET_MS = 0.5
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def run(cfg: Config) -> list[Figure]:
    with workdir(cfg, NAME) as root:
        model, upstream = scripted_upstream(root, "Hello.", 3)
        config = root / "godel.toml"
        config.write_text(
            f'[providers.scripted]\nkind = "openai-chat"\nbase_url = "{upstream}"\nmodels = ["{MODEL}"]\n'
        )
        env = {"GODEL_CONFIG": str(config), "GODEL_LOG_LEVEL": "warning", "GODEL_API_RATE_LIMIT": "1000000/minute"}
        on = ServerProcess(root / "on", None, cwd=root, **env)
        off = ServerProcess(root / "off", None, cwd=root, GODEL_AUTH_ENABLED="false", **env)
        try:
            on.start()
            off.start()
            return _measure(cfg, root, on, off)
        finally:
            on.stop()
            off.stop()
            model.terminate()
            model.wait(10)


def _seed(server: ServerProcess, repo: Path, n: int) -> None:
    for i in range(n):
        server.api("POST", "/api/v1/agents", json={"task": f"t{i}", "repo": str(repo), "command": "true"})


def _measure(cfg: Config, root: Path, on: ServerProcess, off: ServerProcess) -> list[Figure]:
    from benchmarks.common import make_repo

    repo = root / "repo"
    make_repo(repo, files=3, dirs=1)
    rows = cfg.pick(200, 20)
    cfg.log(f"auth: seeding {rows} agents on each server")
    _seed(on, repo, rows)
    _seed(off, repo, rows)
    key_header = on.headers
    password = __import__("json").loads((on.home / "credentials").read_text())["password"]
    token = httpx.post(f"{on.url}/auth/login", json={"username": "admin", "password": password}).json()["data"]
    bearer = {"Authorization": f"Bearer {token['accessToken']}"}
    vk_on = on.api("POST", "/api/v1/keys", json={"scope": "user", "id": "bench"})["key"]
    vk_off = off.api("POST", "/api/v1/keys", json={"scope": "user", "id": "bench"})["key"]
    n = cfg.pick(2000, 100)
    sides: dict[str, list[float]] = {k: [] for k in ("key", "bearer", "none", "proxy_on", "proxy_off")}
    with httpx.Client(timeout=30) as c:
        for _ in range(cfg.pick(100, 10)):  # warm: connections, caches, the verified key
            c.get(f"{on.url}/api/v1/agents?limit=50", headers=key_header)
            c.get(f"{off.url}/api/v1/agents?limit=50")
        listing = [
            ("key", f"{on.url}/api/v1/agents?limit=50", key_header),
            ("bearer", f"{on.url}/api/v1/agents?limit=50", bearer),
            ("none", f"{off.url}/api/v1/agents?limit=50", {}),
        ]
        for i in range(n):
            # Rotated each round, so no side always goes first (after the other server's proxied request).
            for side, url, headers in listing[i % 3 :] + listing[: i % 3]:
                t0 = time.perf_counter()
                r = c.get(url, headers=headers)
                sides[side].append(ms_since(t0))
                assert r.status_code == 200, r.text
            for side, url, vk in (("proxy_on", on.url, vk_on), ("proxy_off", off.url, vk_off)):
                t0 = time.perf_counter()
                r = c.post(f"{url}/proxy/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {vk}"})
                sides[side].append(ms_since(t0))
                assert r.status_code == 200, r.text
    figures = []
    for side, label in (("key", "API key (X-API-Key)"), ("bearer", "access token (Bearer JWT)")):
        fig = Figure(
            bench=NAME, name=f"GET /api/v1/agents?limit=50, {rows} rows, {label}", unit="ms", godel=sides[side],
            baseline=sides["none"], baseline_label="same request, server with auth off",
            target=f"+≤{TARGET_MS} ms at p50",
        )  # fmt: skip
        fig.met = fig.godel_stats.p50 - fig.baseline_stats.p50 <= TARGET_MS  # type: ignore[union-attr]
        fig.notes.append(f"added p50: {fig.godel_stats.p50 - fig.baseline_stats.p50:+.3f} ms")  # type: ignore[union-attr]
        figures.append(fig)
    fig = Figure(
        bench=NAME, name="proxied chat completion (virtual key), auth on", unit="ms", godel=sides["proxy_on"],
        baseline=sides["proxy_off"], baseline_label="same request, server with auth off",
        target=f"+≤{TARGET_MS} ms at p50",
    )  # fmt: skip
    fig.met = fig.godel_stats.p50 - fig.baseline_stats.p50 <= TARGET_MS  # type: ignore[union-attr]
    fig.notes.append(f"added p50: {fig.godel_stats.p50 - fig.baseline_stats.p50:+.3f} ms")  # type: ignore[union-attr]
    figures.append(fig)
    return figures
