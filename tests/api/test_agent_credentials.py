"""An agent is a caller too: from inside its own run, with the credential Godel gave it (``GODEL_API_KEY``), it
tries every move the issue's attacker made — mint keys, lift its own budget, read, steer and spy on another agent,
spawn without leave — and each must be refused with 403. What it may do (read itself, publish to its own stream)
must still work. A real ``godel serve``-style server (uvicorn), a real agent process, real HTTP from inside it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import make_repo
from tests.gateway.conftest import stack  # noqa: F401  (a fixture)

PROBE = r"""
import json, os, sys, urllib.request, urllib.error
url, key = os.environ["GODEL_URL"], os.environ["GODEL_API_KEY"]
me, other = os.environ["GODEL_AGENT_ID"], sys.argv[1]
def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method,
                                 headers={"X-API-Key": key, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
moves = {
    "mint a gateway key": ("POST", "/api/v1/keys", {"scope": "user", "id": "admin"}),
    "list gateway keys": ("GET", "/api/v1/keys", None),
    "lift its own budget": ("PUT", "/api/v1/budgets", {"scope": "agent", "id": me, "usd": 1000000}),
    "read the budgets": ("GET", "/api/v1/budgets", None),
    "mint an API key": ("POST", "/api/v1/users/admin/api-keys", {}),
    "list users": ("GET", "/api/v1/users", None),
    "read another agent": ("GET", f"/api/v1/agents/{other}", None),
    "read another agent's logs": ("GET", f"/api/v1/agents/{other}/logs", None),
    "read another agent's events": ("GET", f"/api/v1/agents/{other}/events", None),
    "kill another agent": ("POST", f"/api/v1/agents/{other}/kill", {}),
    "pause another agent": ("POST", f"/api/v1/agents/{other}/pause", {}),
    "spawn without leave": ("POST", "/api/v1/agents", {"task": "x", "repo": os.getcwd(), "command": "true"}),
    "read the audit log": ("GET", "/api/v1/audit", None),
    "forge a system event": ("POST", "/api/v1/events", {"type": "agent:complete", "metadata": {"agentId": other}}),
    "publish about another agent": ("POST", "/api/v1/events", {"type": "custom:x", "metadata": {"agentId": other}}),
    "read itself": ("GET", f"/api/v1/agents/{me}", None),
    "publish to its own stream": ("POST", "/api/v1/events", {"type": "custom:progress", "payload": {"pct": 50}}),
    "query events": ("GET", "/api/v1/events?limit=1000", None),
}
out = {}
for name, (method, path, body) in moves.items():
    status, text = call(method, path, body)
    out[name] = {"status": status, "body": text}
open(os.environ["PROBE_OUT"], "w").write(json.dumps(out))
"""

FORBIDDEN = [
    "mint a gateway key", "list gateway keys", "lift its own budget", "read the budgets", "mint an API key",
    "list users", "read another agent", "read another agent's logs", "read another agent's events",
    "kill another agent", "pause another agent", "spawn without leave", "read the audit log",
    "publish about another agent",
]  # fmt: skip


async def _wait_ended(api: httpx.AsyncClient, agent_id: str) -> dict[str, Any]:
    for _ in range(1500):
        data = (await api.get(f"/api/v1/agents/{agent_id}")).json()["data"]
        if data["state"] in ("completed", "failed", "killed"):
            return dict(data)
        await asyncio.sleep(0.02)  # polling the agent's state while its process runs
    raise AssertionError(f"agent {agent_id} did not end")


async def test_an_agent_cannot_step_outside_its_own_run(stack: Any, fast_tmp: Path) -> None:  # noqa: F811
    repo = make_repo(fast_tmp / "repo", {"probe.py": PROBE})
    out = fast_tmp / "probe.json"
    async with stack([]) as s, httpx.AsyncClient(base_url=s.url, headers=s.headers, timeout=30) as api:
        victim_body = {"task": "victim", "repo": str(repo), "command": "echo victim-secret-line; sleep 60"}
        victim = (await api.post("/api/v1/agents", json=victim_body)).json()["data"]
        probe_body = {"task": "probe", "repo": str(repo), "command": f"python3 probe.py {victim['id']}",
                      "env": {"PROBE_OUT": str(out)}, "budgetLimit": 0.005}  # fmt: skip
        probe = (await api.post("/api/v1/agents", json=probe_body)).json()["data"]
        ended = await _wait_ended(api, probe["id"])
        assert ended["state"] == "completed", ended
        results = json.loads(out.read_text())
        refused = {name: r["status"] for name, r in results.items() if name in FORBIDDEN}
        assert refused == dict.fromkeys(FORBIDDEN, 403), results
        assert results["read itself"]["status"] == 200
        assert results["publish to its own stream"]["status"] == 201
        assert results["forge a system event"]["status"] in (400, 403)  # refused whoever asks
        seen = json.loads(results["query events"]["body"])["data"]["items"]
        assert seen and {e["metadata"]["agentId"] for e in seen} == {probe["id"]}, "it saw events of another agent"
        assert "victim-secret-line" not in results["query events"]["body"]
        # Nothing it tried took effect: the victim runs on, no key or budget was made or changed for it.
        assert (await api.get(f"/api/v1/agents/{victim['id']}")).json()["data"]["state"] == "executing"
        budgets = (await api.get("/api/v1/budgets", params={"scope": "agent", "id": probe["id"]})).json()["data"]
        assert [b["limitUsd"] for b in budgets["items"]] == [0.005]
        assert (await api.get("/api/v1/keys", params={"scope": "user", "id": "admin"})).json()["data"]["items"] == []
        # Its credential died with its run.
        key_rows = await s.plane.store.list_api_keys(kind="agent", revoked=True)
        mine = [k for k in key_rows if k["agent_id"] == probe["id"]]
        assert mine and all(k["revoked_at"] is not None for k in mine)
        await api.post(f"/api/v1/agents/{victim['id']}/kill")
