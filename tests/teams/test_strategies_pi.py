"""Each strategy end to end with the real pi CLI, through Godel's gateway, against scripted models (one model
server per role), on a real repository."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from tests.agents.conftest import require_cli
from tests.conftest import run_git
from tests.teams.conftest import StackFactory, model_of

pytestmark = pytest.mark.usefixtures("_pi")


@pytest.fixture
def _pi() -> None:
    require_cli("pi")


def write(path: str, content: str) -> dict[str, Any]:
    return {"tool_call": {"name": "write", "arguments": {"path": path, "content": content}}}


def per_file(names: list[str]) -> list[Any]:
    """A worker script: the task that names ``NAME.txt`` writes it, then reports ``RESULT-NAME``."""
    return [
        [{"match": f"create {n}.txt", **write(f"{n}.txt", f"{n} by a worker\n")} for n in names],
        [{"match": f"create {n}.txt", "text": f"RESULT-{n}: wrote {n}.txt"} for n in names],
    ]


def profiles(**models: str) -> dict[str, Any]:
    return {role: {"model": model_of(provider)} for role, provider in models.items()}


def text_of(body: Any) -> str:
    return json.dumps(body)


async def test_parallel_runs_one_pi_per_task_each_on_its_own_branch(stack: StackFactory) -> None:
    async with stack({"work": per_file(["a", "b", "c"])}) as s:
        team = await s.create(
            strategy="parallel", tasks=["create a.txt", "create b.txt", "create c.txt"], agent="pi",
            model=model_of("work"), start=True,
        )  # fmt: skip
        done = await s.wait_team(team["id"])
        assert done["status"] == "completed", done["error"]
        assert done["progress"] == 100
        results = done["result"]
        assert [r["result"] for r in results] == [f"RESULT-{n}: wrote {n}.txt" for n in "abc"]
        branches = {r["branch"] for r in results}
        assert len(branches) == 3
        for r, name in zip(results, "abc", strict=True):
            assert run_git(s.repo, "show", f"{r['branch']}:{name}.txt") == f"{name} by a worker"
            others = run_git(s.repo, "ls-tree", "--name-only", r["branch"]).split()
            assert [f for f in others if f.endswith(".txt")] == [f"{name}.txt"]  # its file only
        agents = await s.agents(team["id"])
        assert all(a["teamId"] == team["id"] and a["metadata"]["role"] == "worker" for a in agents)
        # the worker role's tool allowlist is none (every tool); the agents were metered under the team
        metrics = (await s.client.get(f"/api/v1/teams/{team['id']}/metrics")).json()["data"]
        assert metrics["requests"] == 6 and metrics["tokens"]["output"] > 0
        assert metrics["agents"]["byState"] == {"completed": 3}


async def test_map_reduce_with_a_coordinator_split_and_a_reduce_that_sees_every_result(stack: StackFactory) -> None:
    split = 'Here is the split:\n```json\n["create a.txt", "create b.txt", "create c.txt"]\n```'
    scripts = {"coord": [split], "work": per_file(["a", "b", "c"]), "reduce": ["All three files are in."]}
    async with stack(scripts) as s:
        team = await s.create(
            strategy="map-reduce", task="Create three files", agent="pi", size=2,
            roles={"reduce": "summarizer"},
            profiles={**profiles(coordinator="coord", worker="work"),
                      "summarizer": {"model": model_of("reduce"), "preamble": "Summarise the team's work."}},
            start=True,
        )  # fmt: skip
        done = await s.wait_team(team["id"])
        assert done["status"] == "completed", done["error"]
        assert done["run"]["items"] == ["create a.txt", "create b.txt", "create c.txt"]
        assert done["result"]["result"] == "All three files are in."
        agents = await s.agents(team["id"])
        steps = Counter(a["metadata"]["step"] for a in agents)
        assert steps == Counter({"map/split": 1, "map/item/0": 1, "map/item/1": 1, "map/item/2": 1, "reduce": 1})
        roles = {a["metadata"]["step"]: a["metadata"]["role"] for a in agents}
        assert roles["map/split"] == "coordinator" and roles["reduce"] == "summarizer"
        coordinator = next(a for a in agents if a["metadata"]["step"] == "map/split")
        assert coordinator["config"]["tools"] == ["read", "grep", "find", "ls"]  # the coordinator's allowlist
        # the reduce agent's request carried every worker's result and branch
        (request,) = [r for r in s.models["reduce"].requests if r.outcome == "turn"]
        body = text_of(request.body)
        workers = [a for a in agents if a["metadata"]["step"].startswith("map/item/")]
        for name in "abc":
            assert f"RESULT-{name}: wrote {name}.txt" in body
        for worker in workers:
            assert worker["branch"] in body
        assert "Summarise the team's work." in body  # the custom role's preamble


async def test_pipeline_gated_by_a_reviewer_that_rejects_once_then_approves(stack: StackFactory) -> None:
    worker = [
        [{"match": "attempt 2", **write("feature.txt", "v2 with tests\n")}, write("feature.txt", "v1\n")],
        [{"match": "attempt 2", "text": "Wrote feature v2."}, {"text": "Wrote feature v1."}],
    ]
    reviewer = [
        [
            {"match": "review round 2", "text": "Tests are there now.\nVERDICT: approve"},
            {"text": "The feature has no tests.\nVERDICT: reject"},
        ]
    ]
    async with stack({"work": worker, "review": reviewer}) as s:
        team = await s.create(
            strategy="pipeline", agent="pi", name="feature",
            stages=[{"role": "worker", "task": "Write feature.txt"},
                    {"role": "reviewer", "task": "Review feature.txt"}],
            profiles=profiles(worker="work", reviewer="review"), retryPolicy={"maxRounds": 3},
            start=True,
        )  # fmt: skip
        done = await s.wait_team(team["id"])
        assert done["status"] == "completed", done["error"]
        history = done["result"]["stages"]
        assert [(h["stage"], h["round"], h.get("verdict")) for h in history] == [
            (0, 0, None), (1, 0, "reject"), (0, 1, None), (1, 1, "approve"),
        ]  # fmt: skip
        assert done["result"]["result"] == "Wrote feature v2."
        # the approved work is on the result branch, built on the rejected attempt's branch
        assert run_git(s.repo, "show", f"{done['result']['branch']}:feature.txt") == "v2 with tests"
        agents = await s.agents(team["id"])
        assert Counter(a["metadata"]["step"] for a in agents) == Counter(
            {"stage/0/round/0": 1, "stage/1/round/0": 1, "stage/0/round/1": 1, "stage/1/round/1": 1}
        )
        first = next(a for a in agents if a["metadata"]["step"] == "stage/0/round/0")
        redo = next(a for a in agents if a["metadata"]["step"] == "stage/0/round/1")
        assert redo["baseRef"] == first["branch"]  # the redo starts from the rejected attempt
        redo_requests = [r for r in s.models["work"].requests if "attempt 2" in text_of(r.body)]
        assert redo_requests and "The feature has no tests." in text_of(redo_requests[0].body)
        reviewers = [a for a in agents if a["metadata"]["role"] == "reviewer"]
        assert all(a["config"]["tools"] == ["read", "grep", "find", "ls", "bash"] for a in reviewers)
        assert done["progress"] == 100


async def test_pipeline_fails_when_the_reviewer_never_approves(stack: StackFactory) -> None:
    async with stack({"work": [write("f.txt", "x\n"), "done"], "review": ["Nope.\nVERDICT: reject"]}) as s:
        team = await s.create(
            strategy="pipeline", agent="pi", task="Write f.txt",
            profiles=profiles(worker="work", reviewer="review"), retryPolicy={"maxRounds": 2}, start=True,
        )  # fmt: skip
        done = await s.wait_team(team["id"])
        assert done["status"] == "failed"
        assert "rejected 2 time(s)" in done["error"] and "Nope." in done["error"]
        assert len(await s.agents(team["id"])) == 4  # work, review, redo, review


async def test_tree_decomposes_to_depth_two_with_fanout_two_and_results_flow_up(stack: StackFactory) -> None:
    scripts = {
        "coord": ['["part one", "part two"]'],
        "work": [write("leaf.txt", "leaf\n"), "LEAF-DONE"],
        "reduce": ["SUMMARY"],
    }
    async with stack(scripts) as s:
        team = await s.create(
            strategy="tree", agent="pi", task="Build the thing", depth=2, fanout=2,
            profiles=profiles(coordinator="coord", worker="work", summarizer="reduce"), roles={"reduce": "summarizer"},
            start=True,
        )  # fmt: skip
        done = await s.wait_team(team["id"], timeout=150)
        assert done["status"] == "completed", done["error"]
        assert done["result"]["result"] == "SUMMARY" and done["result"]["nodes"] == 7
        agents = await s.agents(team["id"])
        phases = Counter(a["metadata"]["phase"] for a in agents)
        assert phases == Counter({"plan": 3, "work": 4, "summary": 3})
        depths = Counter((a["metadata"]["phase"], a["metadata"]["depth"]) for a in agents)
        assert depths == Counter({("plan", 0): 1, ("plan", 1): 2, ("work", 2): 4, ("summary", 1): 2, ("summary", 0): 1})
        # the root's summary saw both children's summaries; a level-1 summary saw its two leaves' results
        summaries = [text_of(r.body) for r in s.models["reduce"].requests if r.outcome == "turn"]
        assert len(summaries) == 3
        assert any(b.count("LEAF-DONE") == 2 for b in summaries)
        assert any(b.count("SUMMARY") == 2 for b in summaries)
        assert set(done["run"]["nodes"]) == {"0", "0.0", "0.1", "0.0.0", "0.0.1", "0.1.0", "0.1.1"}
