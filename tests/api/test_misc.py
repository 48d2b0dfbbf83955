from __future__ import annotations

from pathlib import Path

import httpx

from tests.api.conftest import spawn, wait_state


async def test_health_and_capabilities(client: httpx.AsyncClient) -> None:
    for path in ("/health", "/health/live", "/health/ready"):
        r = await client.get(path)
        assert r.status_code == 200 and r.json()["success"] is True
    detailed = (await client.get("/health/detailed")).json()["data"]
    assert detailed["store"]["status"] == "up" and set(detailed["agents"]) >= {
        "pending",
        "running",
        "completed",
    }
    assert {t["name"] for t in detailed["tasks"]} == {"watch", "admission"}
    caps = (await client.get("/capabilities")).json()["data"]
    assert "command" in caps["agents"] and "local" in caps["runtimes"] and caps["runtime"]["snapshot"] == "git-ref"
    assert caps["isolation"] == "worktree" and caps["runtime"]["networkIsolation"] is False  # the local runtime
    spec = (await client.get("/openapi.json")).json()
    assert "/api/v1/agents" in spec["paths"] and "/api/v1/events/stream" in spec["paths"]


async def test_list_filters_and_cursor_pagination(client: httpx.AsyncClient, git_repo: Path) -> None:
    made = [await spawn(client, git_repo, "true", label="even" if i % 2 == 0 else "odd", model="m1") for i in range(7)]
    for a in made:
        await wait_state(client, a["id"], "completed")
    seen: list[str] = []
    cursor = None
    while True:
        url = "/api/v1/agents?limit=3" + (f"&cursor={cursor}" if cursor else "")
        data = (await client.get(url)).json()["data"]
        seen += [a["id"] for a in data["items"]]
        assert data["pagination"]["limit"] == 3
        if not data["pagination"]["hasMore"]:
            break
        cursor = data["pagination"]["cursor"]
    assert sorted(seen) == sorted(a["id"] for a in made) and len(seen) == 7
    assert seen == [a["id"] for a in reversed(made)]  # newest first
    evens = (await client.get("/api/v1/agents?label=even&status=completed")).json()["data"]["items"]
    assert len(evens) == 4 and all(a["label"] == "even" for a in evens)
    assert (await client.get("/api/v1/agents?model=other")).json()["data"]["items"] == []
    assert len((await client.get("/api/v1/agents?status=running")).json()["data"]["items"]) == 0


async def test_events_query_publish_and_get(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/events", json={"type": "custom:deploy:done", "payload": {"ok": True}})
    assert r.status_code == 201
    event = r.json()["data"]
    assert event["sequence"] > 0 and event["type"] == "custom:deploy:done"
    got = (await client.get(f"/api/v1/events/{event['id']}")).json()["data"]
    assert got == event
    found = (await client.get("/api/v1/events?type=custom:*")).json()["data"]["items"]
    assert [e["id"] for e in found] == [event["id"]]
    none = (await client.get(f"/api/v1/events?type=custom:*&since={event['sequence']}")).json()["data"]["items"]
    assert none == []
    bad = await client.post("/api/v1/events", json={"type": "NoNamespace"})
    assert bad.status_code == 400
