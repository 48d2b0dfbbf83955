"""What a review found: a failed tree still spawning for its dead team, a monitor squeezed past maxAgents, and
a verdict written in bold taken for no verdict."""

from __future__ import annotations

from tests.teams.conftest import StackFactory

from godel.teams.parsing import parse_health, parse_verdict

# A coordinator as a shell step: the root splits in two; one half fails at once, the other plans slowly.
TREE = (
    'case "$1" in '
    "*'Split this'*ROOTTASK*) echo 'GODEL_RESULT: [\"FAILNODE\", \"SLOWNODE\"]';; "
    "*'Split this'*FAILNODE*) exit 1;; "
    "*'Split this'*SLOWNODE*) sleep 2; echo 'GODEL_RESULT: [\"LEAF\"]';; "
    "*) echo 'GODEL_RESULT: done';; esac"
)


async def test_a_failed_tree_stops_its_other_branches(stack: StackFactory) -> None:
    async with stack() as s:
        team = await s.create(strategy="tree", task="ROOTTASK", depth=2, fanout=2, agent="command", command=TREE,
                              start=True)  # fmt: skip
        done = await s.wait_team(team["id"])
        assert done["status"] == "failed"
        agents = {a["metadata"]["step"]: a["state"] for a in await s.agents(team["id"])}
        assert agents["tree/0.0/plan"] == "failed"
        assert agents["tree/0.1/plan"] == "killed"  # the slow sibling was stopped with the team ...
        assert not [step for step in agents if step.endswith(("/work", "/summary"))]  # ... and spawned nothing more


async def test_the_monitor_counts_under_max_agents(stack: StackFactory) -> None:
    async with stack() as s:
        r = await s.client.post("/api/v1/teams", json={"strategy": "parallel", "task": "t", "size": 2,
                                                        "maxAgents": 2, "monitor": True, "agent": "command",
                                                        "command": "true", "repo": str(s.repo)})  # fmt: skip
        assert r.status_code == 400 and "monitor" in r.json()["error"]["details"]["fields"][0]["message"]


def test_a_verdict_or_health_in_bold_is_read() -> None:
    assert parse_verdict("Looks good.\n**VERDICT**: approve").approve
    assert not parse_verdict("Needs work.\n__Verdict__: **reject**").approve
    assert parse_health("All fine.\n**HEALTH**: ok") == "ok"
