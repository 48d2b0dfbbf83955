"""Team lifecycle with ``command`` agents (fast and deterministic): live scaling, pause and resume, refusals
before anything starts, completion on request, deletion, and a server restart in the middle of a team."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tests.conftest import run_git
from tests.e2e.serverproc import free_port
from tests.teams.conftest import Stack, StackFactory, stop_agents

from godel.core.events import EventFilter
from godel.core.ports import AgentQuery, EventQuery

SLEEPER = "sleep 3; echo 'GODEL_RESULT: slept'"


async def team_events(s: Stack, team_id: str) -> list[str]:
    events = await s.plane.events(EventQuery(filter=EventFilter(patterns=("team:*",), team_id=team_id), limit=1000))
    return [e.type for e in events]


async def running(s: Stack, team_id: str, n: int) -> list[dict[str, Any]] | None:
    agents = [a for a in await s.agents(team_id) if a["state"] == "executing"]
    return agents if len(agents) == n else None


async def test_scale_a_running_parallel_team_up_then_down(stack: StackFactory) -> None:
    async with stack() as s:
        team = await s.create(strategy="parallel", task="sleep", size=2, maxAgents=5, agent="command",
                              command=SLEEPER, start=True)  # fmt: skip
        tid = team["id"]
        await s.wait_for(lambda: running(s, tid, 2), "2 agents running")
        up = await s.client.post(f"/api/v1/teams/{tid}/scale", json={"size": 4})
        assert up.status_code == 200, up.text
        assert up.json()["data"]["size"] == 4 and up.json()["data"]["killedAgents"] == []
        await s.wait_for(lambda: running(s, tid, 4), "4 agents running")
        down = await s.client.post(f"/api/v1/teams/{tid}/scale", json={"size": 1})
        assert down.status_code == 200, down.text
        killed = down.json()["data"]["killedAgents"]
        agents = {a["id"]: a for a in await s.agents(tid)}
        # the three newest were let go, newest first
        assert [agents[k]["metadata"]["step"] for k in killed] == ["agent/3", "agent/2", "agent/1"]
        done = await s.wait_team(tid)
        assert done["status"] == "completed", done["error"]
        assert [r["step"] for r in done["result"]] == ["agent/0"]
        assert sorted(done["run"]["scaledDown"]) == sorted(killed)
        states = Counter(a["state"] for a in await s.agents(tid))
        assert states == Counter({"completed": 1, "killed": 3})
        assert done["progress"] == 100
        assert await team_events(s, tid) == [
            "team:created", "team:started", "team:scaled", "team:scaled", "team:completed",
        ]  # fmt: skip
        late = await s.client.post(f"/api/v1/teams/{tid}/scale", json={"size": 2})
        assert late.status_code == 409 and late.json()["error"]["code"] == "INVALID_TEAM_TRANSITION"


async def test_scale_out_of_range_or_meaningless_is_refused(stack: StackFactory) -> None:
    async with stack() as s:
        team = await s.create(strategy="parallel", task="t", size=1, maxAgents=3, agent="command", command="true")
        tid = team["id"]
        for size in (-1, 4):
            r = await s.client.post(f"/api/v1/teams/{tid}/scale", json={"size": size})
            assert r.status_code == 400 and r.json()["error"]["details"]["fields"][0]["field"] == "size", r.text
        r = await s.client.post(f"/api/v1/teams/{tid}/scale", json={"size": "2"})
        assert r.status_code == 400
        pipe = await s.create(strategy="pipeline", tasks=["a", "b"], agent="command", command="true")
        r = await s.client.post(f"/api/v1/teams/{pipe['id']}/scale", json={"size": 2})
        assert r.status_code == 409 and "one at a time" in r.json()["error"]["message"]
        assert (await s.team(tid))["size"] == 1  # nothing changed
        assert await s.agents(tid) == []  # never started


async def test_bad_teams_are_refused_before_anything_exists(stack: StackFactory) -> None:
    async with stack() as s:
        base = {"repo": str(s.repo), "task": "t", "agent": "command", "command": "true"}
        cases = [
            ({**base, "strategy": "swarm"}, "UNKNOWN_STRATEGY", "strategy"),
            ({**base, "strategy": "parallel", "roles": {"worker": "ghost"}}, "UNKNOWN_ROLE", "roles.worker"),
            ({**base, "strategy": "pipeline", "task": None, "stages": [{"role": "wizard", "task": "x"}]},
             "UNKNOWN_ROLE", "stages.0.role"),
            ({**base, "strategy": "parallel", "agent": "robot"}, "UNKNOWN_AGENT_KIND", "agent"),
            ({**base, "strategy": "pipeline", "task": None, "stages": [{"task": "x", "agent": "robot"}]},
             "UNKNOWN_AGENT_KIND", "agent"),
            ({**base, "strategy": "parallel", "size": 5, "maxAgents": 2}, "VALIDATION_ERROR", "size"),
            ({**base, "strategy": "parallel", "size": 0}, "VALIDATION_ERROR", "size"),
            ({**base, "strategy": "parallel", "profiles": {"worker": {"gate": "sometimes"}}}, "VALIDATION_ERROR",
             "profiles.worker.gate"),
            ({**base, "strategy": "pipeline", "task": None, "stages": [{"role": "reviewer", "task": "x"}]},
             "VALIDATION_ERROR", "stages.0.role"),
            ({**base, "strategy": "parallel", "agent": "pi", "model": "nowhere/none"}, "VALIDATION_ERROR", "model"),
            ({**base, "strategy": "parallel", "repo": "/nonexistent"}, "NOT_A_GIT_REPOSITORY", "repo"),
            ({**base, "strategy": "parallel", "baseRef": "no-such-ref"}, "REF_NOT_FOUND", "baseRef"),
            ({**base, "strategy": "parallel", "command": None}, "VALIDATION_ERROR", "command"),
        ]  # fmt: skip
        for body, code, field in cases:
            r = await s.client.post("/api/v1/teams", json={k: v for k, v in body.items() if v is not None})
            assert r.status_code == 400, (body, r.text)
            error = r.json()["error"]
            assert error["code"] == code, (body, error)
            assert field in [f["field"] for f in error["details"]["fields"]], (body, error)
        listed = (await s.client.get("/api/v1/teams")).json()["data"]
        assert listed["items"] == []
        assert (await s.plane.list_agents(AgentQuery())).items == []


async def test_pause_holds_the_team_and_resume_lets_it_finish(stack: StackFactory, fast_tmp: Path) -> None:
    gate = fast_tmp / "gate"  # the agents work until the test opens it: they cannot end before the pause
    async with stack() as s:
        team = await s.create(strategy="parallel", task="t", size=2, agent="command",
                              command=f"while [ ! -e {gate} ]; do sleep 0.02; done; echo 'GODEL_RESULT: ok'",
                              start=True)  # fmt: skip
        tid = team["id"]
        await s.wait_for(lambda: running(s, tid, 2), "2 agents running")
        paused = await s.client.post(f"/api/v1/teams/{tid}/pause")
        assert paused.status_code == 200 and paused.json()["data"]["status"] == "paused"
        agents = await s.agents(tid)
        assert {a["state"] for a in agents} == {"paused"} and {a["pausedBy"] for a in agents} == {f"team:{tid}"}
        again = await s.client.post(f"/api/v1/teams/{tid}/pause")
        assert again.status_code == 409
        resumed = await s.client.post(f"/api/v1/teams/{tid}/resume")
        assert resumed.status_code == 200 and resumed.json()["data"]["status"] == "active"
        gate.touch()
        done = await s.wait_team(tid)
        assert done["status"] == "completed"
        assert await team_events(s, tid) == [
            "team:created", "team:started", "team:paused", "team:resumed", "team:completed",
        ]  # fmt: skip


async def test_complete_on_request_then_delete(stack: StackFactory) -> None:
    async with stack() as s:
        team = await s.create(strategy="parallel", task="t", size=2, agent="command", command=SLEEPER, start=True,
                              budget=5.0, metadata={"owner": "me"})  # fmt: skip
        tid = team["id"]
        assert team["metadata"] == {"owner": "me"} and team["budgetAllocated"] == 5.0
        budgets = await s.plane.store.list_budgets(entity_type="team", entity_id=tid)
        assert [b.total_budget for b in budgets] == [5.0]
        await s.wait_for(lambda: running(s, tid, 2), "2 agents running")
        refused = await s.client.delete(f"/api/v1/teams/{tid}")
        assert refused.status_code == 409
        done = await s.client.post(f"/api/v1/teams/{tid}/complete")
        assert done.status_code == 200 and done.json()["data"]["status"] == "completed"
        assert {a["state"] for a in await s.agents(tid)} == {"killed"}
        patched = await s.client.patch(f"/api/v1/teams/{tid}", json={"name": "renamed", "metadata": {"x": 1}})
        assert patched.json()["data"]["name"] == "renamed"
        assert patched.json()["data"]["metadata"] == {"owner": "me", "x": 1}
        gone = await s.client.delete(f"/api/v1/teams/{tid}")
        assert gone.status_code == 200
        assert (await s.client.get(f"/api/v1/teams/{tid}")).json()["error"]["code"] == "TEAM_NOT_FOUND"
        assert await s.plane.store.list_budgets(entity_type="team", entity_id=tid) == []
        # its agents remain, without a team
        assert (await s.client.get("/api/v1/agents")).json()["data"]["items"][0]["teamId"] is None


async def test_a_restart_in_the_middle_of_a_map_reduce_loses_nothing(stack: StackFactory, fast_tmp: Path) -> None:
    # One command plays every role, by what its task says (the reduce's task quotes the items: test it first).
    command = (
        'case "$1" in '
        "*Combine*) echo 'GODEL_RESULT: reduced';; "
        '*\'Split this\'*) echo \'GODEL_RESULT: ["ITEM-fast", "ITEM-slow-1", "ITEM-slow-2"]\';; '
        "*ITEM-slow*) sleep 4; echo 'GODEL_RESULT: slow done';; "
        "*) echo 'GODEL_RESULT: fast done';; esac"
    )
    home, port = fast_tmp / "home", free_port()
    async with stack(home=home, port=port, leave_running=True) as s:
        team = await s.create(strategy="map-reduce", task="TEAMTASK", agent="command", command=command, start=True)
        tid = team["id"]

        async def fast_done_slow_running() -> bool:
            agents = {a["metadata"]["step"]: a["state"] for a in await s.agents(tid)}
            return agents.get("map/item/0") == "completed" and agents.get("map/item/1") == "executing"

        await s.wait_for(fast_done_slow_running, "the fast item done, the slow ones running")
        assert (await s.team(tid))["status"] == "active"
    # The server is gone; the slow agents' processes still run. A new server on the same home carries on.
    async with stack(home=home, port=port) as s2:
        done = await s2.wait_team(tid)
        assert done["status"] == "completed", done["error"]
        assert done["result"]["result"] == "reduced"
        agents = await s2.agents(tid)
        steps = Counter(a["metadata"]["step"] for a in agents)
        assert steps == Counter({"map/split": 1, "map/item/0": 1, "map/item/1": 1, "map/item/2": 1, "reduce": 1})
        assert {a["state"] for a in agents} == {"completed"}
        assert [i["result"] for i in done["result"]["items"]] == ["fast done", "slow done", "slow done"]
        types = await team_events(s2, tid)
        assert types == ["team:created", "team:started", "team:completed"]
        await stop_agents(s2.plane)


async def test_team_timeout_kills_its_agents_and_fails_it(stack: StackFactory) -> None:
    async with stack() as s:
        team = await s.create(strategy="parallel", task="t", size=2, agent="command", command="sleep 30",
                              timeout=1.0, start=True)  # fmt: skip
        done = await s.wait_team(team["id"], timeout=30)
        assert done["status"] == "failed" and "timed out after 1 s" in done["error"]
        assert {a["state"] for a in await s.agents(team["id"])} == {"killed"}


async def test_raising_max_agents_allows_a_larger_scale(stack: StackFactory) -> None:
    async with stack() as s:
        team = await s.create(strategy="map-reduce", tasks=["a", "b"], size=1, maxAgents=1, agent="command",
                              command="true")  # fmt: skip
        tid = team["id"]
        assert (await s.client.post(f"/api/v1/teams/{tid}/scale", json={"size": 3})).status_code == 400
        low = await s.client.patch(f"/api/v1/teams/{tid}", json={"maxAgents": 0})
        assert low.status_code == 400
        patched = await s.client.patch(f"/api/v1/teams/{tid}", json={"maxAgents": 4})
        assert patched.json()["data"]["maxAgents"] == 4
        scaled = await s.client.post(f"/api/v1/teams/{tid}/scale", json={"size": 3})
        assert scaled.status_code == 200 and scaled.json()["data"]["size"] == 3
        assert (await s.client.post(f"/api/v1/teams/{tid}/start")).json()["data"]["status"] == "active"
        assert (await s.wait_team(tid))["status"] == "completed"


# Workers write their item's file; the refinery merges the branches its task lists (or, for the negative case,
# does nothing); the monitor reports.
MERGING = (
    'case "$1" in '
    "*'monitor of a team'*) echo 'GODEL_RESULT: HEALTH: ok';; "
    "*'Merge every branch'*) for b in $(printf '%s' \"$1\" | grep -o 'godel/[0-9a-f-]*' | sort -u); do "
    "git merge -q --no-edit \"$b\" || exit 1; done; echo 'GODEL_RESULT: merged';; "
    '*) f=$(printf \'%s\' "$1" | grep -o \'file-[a-z]*\' | head -1); echo "$f" > "$f.txt"; '
    'echo "GODEL_RESULT: wrote $f";; esac'
)


async def test_a_refinery_merges_every_worker_branch_and_a_monitor_reports(stack: StackFactory) -> None:
    async with stack() as s:
        team = await s.create(strategy="map-reduce", tasks=["make file-a", "make file-b"], agent="command",
                              command=MERGING, roles={"reduce": "refinery"}, monitor=True, start=True)  # fmt: skip
        done = await s.wait_team(team["id"])
        assert done["status"] == "completed", done["error"]
        assert done["result"]["result"] == "merged"
        branch = done["result"]["branch"]
        files = run_git(s.repo, "ls-tree", "--name-only", branch).split()
        assert {"file-a.txt", "file-b.txt"} <= set(files)
        assert done["run"]["monitor"]["health"] == "ok"
        roles = Counter(a["metadata"]["role"] for a in await s.agents(team["id"]))
        assert roles == Counter({"worker": 2, "refinery": 1, "monitor": 1})


async def test_a_refinery_that_does_not_merge_fails_the_team(stack: StackFactory) -> None:
    async with stack() as s:
        lazy = MERGING.replace('git merge -q --no-edit "$b" || exit 1; ', ": ; ")
        team = await s.create(strategy="map-reduce", tasks=["make file-a", "make file-b"], agent="command",
                              command=lazy, roles={"reduce": "refinery"}, start=True)  # fmt: skip
        done = await s.wait_team(team["id"])
        assert done["status"] == "failed" and "did not merge" in done["error"]


async def test_scaling_a_parallel_team_to_zero_lets_every_running_agent_go(stack: StackFactory) -> None:
    async with stack() as s:
        team = await s.create(strategy="parallel", task="t", size=2, agent="command", command=SLEEPER, start=True)
        tid = team["id"]
        await s.wait_for(lambda: running(s, tid, 2), "2 agents running")
        scaled = (await s.client.post(f"/api/v1/teams/{tid}/scale", json={"size": 0})).json()["data"]
        assert len(scaled["killedAgents"]) == 2
        done = await s.wait_team(tid)
        assert done["status"] == "completed" and done["result"] == [] and done["size"] == 0
