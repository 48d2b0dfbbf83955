"""A ``queue`` team: workers that drain the durable task queue by priority, with real ``command`` agents in a real
repository behind a real server."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tests.e2e.serverproc import free_port
from tests.teams.conftest import Stack, StackFactory

from godel.core.events import EventFilter
from godel.core.ports import EventQuery
from godel.store import open_store
from godel.tasks import TaskQueue

# The task reaches a command agent as $1, after the worker role's preamble: its last line is the task's title.
WORK = 'echo "GODEL_RESULT: did $(printf "%s" "$1" | tail -n 1)"'


async def new_task(s: Stack, title: str, **body: Any) -> dict[str, Any]:
    r = await s.client.post("/api/v1/tasks", json={"title": title, **body})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


async def get_task(s: Stack, task_id: str) -> dict[str, Any]:
    data: dict[str, Any] = (await s.client.get(f"/api/v1/tasks/{task_id}")).json()["data"]
    return data


async def claims_of(s: Stack, team_id: str) -> list[str]:
    """The tasks the team claimed, in the order the store committed the claims."""
    events = await s.plane.events(EventQuery(filter=EventFilter(patterns=("task:assigned",)), limit=1000))
    return [e.payload["taskId"] for e in events if e.payload.get("claimed") and e.payload.get("teamId") == team_id]


async def test_two_workers_drain_five_tasks_in_priority_order(stack: StackFactory) -> None:
    async with stack() as s:
        made = [await new_task(s, f"task p{p}", priority=p) for p in (5, 50, -3, 20, 0)]
        team = await s.create(strategy="queue", size=2, agent="command", command=WORK, start=True)
        done = await s.wait_team(team["id"])
        assert done["status"] == "completed", done.get("error")
        by_priority = [t["id"] for t in sorted(made, key=lambda t: -t["priority"])]
        assert await claims_of(s, team["id"]) == by_priority
        agents = await s.agents(team["id"])
        assert len(agents) == 5 and Counter(a["state"] for a in agents) == Counter({"completed": 5})
        for made_task in made:
            task = await get_task(s, made_task["id"])
            assert task["status"] == "completed", task
            mine = [a for a in agents if a["metadata"]["taskId"] == task["id"]]
            assert len(mine) == 1 and task["result"]["agentId"] == mine[0]["id"]  # exactly one agent each
            assert task["result"]["result"] == f"did {task['title']}"
            assert [h["agentId"] for h in task["history"]] == [mine[0]["id"]]
        result = done["result"]
        assert [t["taskId"] for t in result["tasks"]] == by_priority
        assert (result["completed"], result["requeued"], result["dead"]) == (5, 0, 0)
        # The queue is empty now: a second run of a team finds nothing, spawns nothing and completes.
        again = await s.create(strategy="queue", size=2, agent="command", command=WORK, start=True)
        assert (await s.wait_team(again["id"]))["status"] == "completed"
        assert await s.agents(again["id"]) == []


async def test_failures_are_retried_by_the_team_then_dead_lettered(stack: StackFactory) -> None:
    async with stack() as s:
        flaky = await new_task(s, "fails", priority=10, maxAttempts=2)
        fine = await new_task(s, "works", priority=1)
        other = (await s.create(strategy="parallel", task="t", agent="command", command="true", start=False))["id"]
        theirs = await new_task(s, "reserved for another team", teamId=other)
        command = 'case "$1" in *fails) exit 3;; *) echo "GODEL_RESULT: ok";; esac'
        team = await s.create(strategy="queue", size=1, agent="command", command=command, start=True)
        done = await s.wait_team(team["id"])
        assert done["status"] == "completed", done.get("error")
        dead = await get_task(s, flaky["id"])
        assert dead["status"] == "dead" and [h["outcome"] for h in dead["history"]] == ["failed", "failed"]
        assert (await get_task(s, fine["id"]))["status"] == "completed"
        assert (await get_task(s, theirs["id"]))["status"] == "pending"  # another team's task is left alone
        statuses = [(t["title"], t["status"]) for t in done["result"]["tasks"]]
        assert statuses == [("fails", "requeued"), ("fails", "dead"), ("works", "completed")]


async def test_a_queue_team_takes_no_task_list(stack: StackFactory) -> None:
    async with stack() as s:
        r = await s.client.post(
            "/api/v1/teams", json={"strategy": "queue", "repo": str(s.repo), "task": "x", "agent": "command"}
        )
        assert r.status_code == 400 and "takes its tasks from the task queue" in r.json()["error"]["message"]


async def test_a_restart_takes_up_the_tasks_the_team_held(stack: StackFactory, fast_tmp: Path) -> None:
    home, port = fast_tmp / "home", free_port()
    gate = fast_tmp / "gate"  # the agents work until the test opens it: both are surely at work when it looks
    slow = f"while [ ! -e {gate} ]; do sleep 0.02; done; {WORK}"
    async with stack(home=home, port=port, leave_running=True) as s:
        made = [await new_task(s, f"task {n}", priority=n) for n in range(3)]
        team = await s.create(strategy="queue", size=2, agent="command", command=slow, start=True)

        async def two_running() -> bool:
            return sum(a["state"] == "executing" for a in await s.agents(team["id"])) == 2

        await s.wait_for(two_running, "two agents at work")
    # The server is gone with two tasks held by the team; their agents' processes still run. The third was
    # claimed by the team just before the end, its agent never spawned.
    store = open_store(f"sqlite:///{home / 'godel.db'}")
    try:
        held = await TaskQueue(store).claim(team_id=team["id"], actor=f"team:{team['id']}")
    finally:
        await store.close()
    assert held is not None and held.id == made[0]["id"] and held.agent_id is None
    gate.touch()
    async with stack(home=home, port=port) as s2:
        done = await s2.wait_team(team["id"])
        assert done["status"] == "completed", done.get("error")
        agents = await s2.agents(team["id"])
        assert len(agents) == 3  # no task got a second agent
        for made_task in made:
            task = await get_task(s2, made_task["id"])
            assert task["status"] == "completed" and len(task["history"]) == 1, task
            assert task["result"]["result"] == f"did {task['title']}"
