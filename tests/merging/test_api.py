"""``/api/v1/merges`` through the real app and plane: jobs, validation, events, teams and workflows, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import sqlalchemy as sa

from godel.core.events import make_event
from godel.core.ids import new_id
from godel.core.models import Agent, Team
from godel.merging.service import MergeService, rebuild
from godel.scheduler.plane import ControlPlane
from godel.settings import Settings
from godel.store import SqlStore, tables
from tests.api.conftest import eventually
from tests.conftest import make_repo, run_git
from tests.merging.conftest import BRANCHES, VERIFY, Fixture, build_five, commit_branch

ENDED = ("completed", "failed")


async def start(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/merges", json=body)
    assert r.status_code == 202, r.text
    return dict(r.json()["data"])


async def finished(client: httpx.AsyncClient, merge_id: str, timeout: float = 30.0) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        r = await client.get(f"/api/v1/merges/{merge_id}")
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        return data if data["status"] in ENDED else None

    return dict(await eventually(check, timeout=timeout))


async def error_of(client: httpx.AsyncClient, status: int, **body: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/merges", json=body)
    assert r.status_code == status, r.text
    return dict(r.json()["error"])


def fields(error: dict[str, Any]) -> list[str]:
    return [f["field"] for f in (error.get("details") or {}).get("fields", [])]


async def test_a_merge_job_over_five_branches(client: httpx.AsyncClient, five: Fixture, plane: ControlPlane) -> None:
    user_before = five.user_state()
    job = await start(client, repo=str(five.repo), into="integration", branches=BRANCHES, verify=VERIFY,
                      verifyTimeout=30)  # fmt: skip
    assert job["status"] in ("queued", "running") and job["branches"] == BRANCHES and job["createdInto"]
    assert [r["status"] for r in job["results"]] == ["pending"] * 5

    report = await finished(client, job["id"])
    assert report["status"] == "completed" and report["error"] is None and report["current"] is None
    assert [r["status"] for r in report["results"]] == ["merged", "merged", "conflict", "gate-failed", "merged"]
    assert report["summary"] == {"merged": 3, "conflict": 1, "gateFailed": 1, "skipped": 0, "error": 0, "pending": 0}
    conflict, broken = report["results"][2], report["results"][3]
    assert conflict["files"] == ["shared.txt"] and "shared.txt" in conflict["reason"]
    assert broken["exitCode"] == 1 and broken["timedOut"] is False and broken["reason"]
    assert report["head"] == five.tip("integration") == report["results"][4]["commit"]
    assert {b: five.tip(b) for b in BRANCHES} == five.tips and five.user_state() == user_before

    # Durable: one merge:started, one merge:branch per branch, one merge:completed with the whole report.
    r = await client.get("/api/v1/events", params={"type": "merge:*", "limit": 100})
    events = [e for e in r.json()["data"]["items"] if e["payload"].get("mergeId") == job["id"]]
    assert [e["type"] for e in events] == ["merge:started"] + ["merge:branch"] * 5 + ["merge:completed"]
    assert {e["metadata"]["correlationId"] for e in events} == {job["id"]}
    assert [e["payload"]["status"] for e in events[1:6]] == [r["status"] for r in report["results"]]
    assert events[-1]["payload"]["results"] == report["results"]

    listed = (await client.get("/api/v1/merges")).json()["data"]["items"]
    assert [m["id"] for m in listed] == [job["id"]]

    # A server that restarted (a new service with nothing in memory) reads the same report from the events.
    assert await MergeService(plane).get(job["id"]) == report


async def test_runs_into_one_branch_take_turns(client: httpx.AsyncClient, five: Fixture, fast_tmp: Path) -> None:
    gate = fast_tmp / "gate-running"
    slow = f"touch {gate}; sleep 0.5"
    first = await start(client, repo=str(five.repo), into="integration", branches=["feature/one"], verify=slow)
    await eventually(lambda: asyncio.sleep(0, gate.exists()))
    running = (await client.get(f"/api/v1/merges/{first['id']}")).json()["data"]
    assert running["status"] == "running" and running["current"] == {"branch": "feature/one", "phase": "verifying"}
    second = await start(client, repo=str(five.repo), into="integration", branches=["feature/five"])
    assert (await client.get(f"/api/v1/merges/{second['id']}")).json()["data"]["status"] == "queued"
    assert (await finished(client, first["id"]))["status"] == "completed"
    report = await finished(client, second["id"])
    assert report["status"] == "completed" and report["results"][0]["status"] == "merged"
    assert report["base"] == five.tip("integration^1") and report["head"] == five.tip("integration")
    assert five.has("integration", "one.txt") and five.has("integration", "five.txt")
    listed = (await client.get("/api/v1/merges", params={"limit": 1})).json()["data"]["items"]
    assert [m["id"] for m in listed] == [second["id"]]


async def test_batch_over_the_api_reports_the_bisection(client: httpx.AsyncClient, five: Fixture) -> None:
    job = await start(client, repo=str(five.repo), into="integration", branches=BRANCHES, verify=VERIFY, batch=True)
    report = await finished(client, job["id"])
    assert [r["status"] for r in report["results"]] == ["merged", "merged", "conflict", "gate-failed", "merged"]
    (bisection,) = report["bisections"]
    assert bisection["culprit"] == "feature/broken"
    assert bisection["branches"] == ["feature/one", "feature/two", "feature/broken", "feature/five"]


async def test_a_resolve_command_over_the_api(client: httpx.AsyncClient, five: Fixture) -> None:
    job = await start(client, repo=str(five.repo), into="integration", branches=["feature/two", "feature/three"],
                      resolve='git checkout --ours -- "$@"')  # fmt: skip
    report = await finished(client, job["id"])
    three = report["results"][1]
    assert three["status"] == "merged" and three["resolution"]["branch"].startswith("godel/refinery/feature-three-")
    assert five.show("integration", "shared.txt") == "three"


async def test_validation_errors(client: httpx.AsyncClient, five: Fixture, fast_tmp: Path) -> None:
    repo = str(five.repo)
    (fast_tmp / "plain").mkdir()
    error = await error_of(client, 400, repo=str(fast_tmp / "plain"), into="x", branches=["a"])
    assert error["code"] == "NOT_A_GIT_REPOSITORY"
    error = await error_of(client, 400, repo=repo, into="integration", branches=["feature/one", "feature/nope"])
    assert error["code"] == "REF_NOT_FOUND" and fields(error) == ["branches[1]"]
    error = await error_of(client, 400, repo=repo, into="integration")
    assert error["code"] == "VALIDATION_ERROR" and fields(error) == ["branches"]
    error = await error_of(client, 400, repo=repo, into="feature/one", branches=["feature/one"])
    assert fields(error) == ["into"]
    error = await error_of(client, 400, repo=repo, into="integration", branches=["feature/one"], teamId=new_id())
    assert sorted(fields(error)) == ["branches", "teamId"]
    error = await error_of(client, 400, repo=repo, into="integration", branches=["feature/one"], verifyTimeout=0)
    assert error["code"] == "VALIDATION_ERROR"
    error = await error_of(client, 409, repo=repo, into="main", branches=["feature/one"])
    assert error["code"] == "BRANCH_CHECKED_OUT" and error["details"]["worktree"] == repo
    r = await client.get(f"/api/v1/merges/{new_id()}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "MERGE_NOT_FOUND"
    assert (await client.get("/api/v1/merges")).json()["data"]["items"] == []  # nothing was started
    assert five.user_state()[0] == five.tip("main") and run_git(five.repo, "branch", "--list", "integration") == ""


# --------------------------------------------------------------------------------------- teams, workflows


async def add_agent(
    plane: ControlPlane, repo: Path, branch: str, *, minutes: int, team_id: str | None = None, **metadata: Any
) -> Agent:
    base = run_git(repo, "rev-parse", "main")
    agent = Agent(
        id=new_id(), task="work", repo=str(repo), base_ref="main", base_commit=base, branch=branch,
        team_id=team_id, metadata=metadata, spawned_at=datetime.now(UTC) + timedelta(minutes=minutes),
    )  # fmt: skip
    created, _ = await plane.store.create_agent(agent, actor="test")
    return created


async def test_a_teams_branches_in_creation_order(
    client: httpx.AsyncClient, five: Fixture, plane: ControlPlane, fast_tmp: Path
) -> None:
    assert isinstance(plane.store, SqlStore)
    team = (await plane.store.add_team(Team(id=new_id(), name="builders"), actor="test"))[0]
    other_repo = make_repo(fast_tmp / "other")
    commit_branch(other_repo, "godel/elsewhere", {"x.txt": "x\n"})
    run_git(five.repo, "branch", "godel/idle", "main")  # an agent that committed nothing
    await add_agent(plane, five.repo, "feature/five", minutes=3, team_id=team.id)
    await add_agent(plane, five.repo, "feature/one", minutes=1, team_id=team.id)
    await add_agent(plane, five.repo, "godel/idle", minutes=2, team_id=team.id)
    await add_agent(plane, other_repo, "godel/elsewhere", minutes=0, team_id=team.id)
    await add_agent(plane, five.repo, "feature/two", minutes=0)  # not in the team
    first = await add_agent(plane, five.repo, "feature/broken", minutes=0, team_id=team.id)

    job = await start(client, repo=str(five.repo), into="integration", teamId=team.id, verify=VERIFY)
    assert job["branches"] == ["feature/broken", "feature/one", "feature/five"] and job["teamId"] == team.id
    assert job["results"][0]["agentId"] == first.id
    report = await finished(client, job["id"])
    assert [r["status"] for r in report["results"]] == ["gate-failed", "merged", "merged"]
    r = await client.get("/api/v1/events", params={"type": "merge:*", "teamId": team.id})
    assert len(r.json()["data"]["items"]) == 5  # started, three branches, completed

    empty = (await plane.store.add_team(Team(id=new_id(), name="idle"), actor="test"))[0]
    await add_agent(plane, five.repo, "godel/idle", minutes=4, team_id=empty.id)
    error = await error_of(client, 400, repo=str(five.repo), into="integration", teamId=empty.id)
    assert fields(error) == ["teamId"]


async def test_a_workflows_branches(client: httpx.AsyncClient, five: Fixture, plane: ControlPlane) -> None:
    assert isinstance(plane.store, SqlStore)
    workflow_id = new_id()
    tagged = await add_agent(plane, five.repo, "feature/one", minutes=2, workflowId=workflow_id)
    stepped = await add_agent(plane, five.repo, "feature/five", minutes=1)
    await add_agent(plane, five.repo, "feature/two", minutes=0, workflowId=new_id())  # another workflow's
    async with plane.store.engine.begin() as conn:
        await conn.execute(sa.insert(tables.workflows).values(id=workflow_id, name="wf", definition={}))
        await conn.execute(
            sa.insert(tables.workflow_steps).values(
                id=new_id(), workflow_id=workflow_id, step_id="build", name="build", task="t", agent_id=stepped.id
            )
        )
    job = await start(client, repo=str(five.repo), into="integration", workflowId=workflow_id)
    assert job["branches"] == ["feature/five", "feature/one"] and job["workflowId"] == workflow_id
    assert [r["agentId"] for r in job["results"]] == [stepped.id, tagged.id]
    assert [r["status"] for r in (await finished(client, job["id"]))["results"]] == ["merged", "merged"]
    error = await error_of(client, 400, repo=str(five.repo), into="integration", workflowId=new_id())
    assert fields(error) == ["workflowId"]


# ------------------------------------------------------------------------------------------------ restarts


async def test_a_run_stopped_with_the_server_reads_back_as_failed(settings: Settings, fast_tmp: Path) -> None:
    five = build_five(fast_tmp / "repo")
    first = ControlPlane(settings)
    await first.start()
    marker = fast_tmp / "gate-pid"
    service = MergeService(first)
    token = new_id()  # in the environment of the gate's children: what tells them from a process that reuses a pid
    verify = f"export GODEL_TEST_GATE={token}; echo $$ > {marker}.tmp && mv {marker}.tmp {marker}; sleep 30"
    job = await service.submit(
        dataclasses.replace(_request(five), verify=verify, branches=["feature/one", "feature/five"])
    )
    await eventually(lambda: asyncio.sleep(0, marker.exists()))
    await first.stop()  # cancels the run: its gate is killed, its worktree removed, its end recorded
    group = int(marker.read_text())
    left = [p for p in psutil.process_iter(["status"]) if _group_of(p) == group and _of_gate(p, marker, token)]
    assert all(p.info["status"] == psutil.STATUS_ZOMBIE for p in left), left  # the gate's whole group is dead
    assert job.status.value == "failed" and job.task is not None and job.task.done()
    assert run_git(five.repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert five.tip("integration") == five.tip("main")

    second = ControlPlane(settings)
    await second.start()
    try:
        report = await MergeService(second).get(job.id)
        assert report["status"] == "failed" and report["error"]["code"] == "CANCELLED"
        assert [r["status"] for r in report["results"]] == ["skipped", "skipped"]
        assert (await MergeService(second).list())[0]["id"] == job.id
    finally:
        await second.stop()


def _of_gate(process: psutil.Process, marker: Path, token: str) -> bool:
    """The gate's shell (its command names the marker) or a child of it (it has the exported token): on this
    machine pids wrap at 32,768, and a busy test run can hand the gate's number to a new process group at once."""
    with contextlib.suppress(psutil.Error, OSError):
        return str(marker) in " ".join(process.cmdline()) or process.environ().get("GODEL_TEST_GATE") == token
    return False


def _group_of(process: psutil.Process) -> int | None:
    with contextlib.suppress(psutil.Error, OSError):
        return os.getpgid(process.pid)
    return None


def _request(five: Fixture) -> Any:
    from godel.merging.service import MergeRequest

    return MergeRequest(repo=five.repo, into="integration", branches=BRANCHES, verify=VERIFY)


def test_rebuild_of_a_run_the_server_died_in() -> None:
    merge_id = new_id()
    started = {"mergeId": merge_id, "id": merge_id, "status": "running", "branches": ["a", "b"],
               "results": [{"branch": "a", "tip": "1", "status": "pending"},
                           {"branch": "b", "tip": "2", "status": "pending"}]}  # fmt: skip
    branch = {"mergeId": merge_id, "index": 0, "branch": "a", "tip": "1", "status": "merged", "commit": "c"}
    events = [make_event("merge:started", started, component="merging"),
              make_event("merge:branch", branch, component="merging")]  # fmt: skip
    report = rebuild(events)
    assert report is not None and report["status"] == "failed" and report["error"]["code"] == "INTERRUPTED"
    assert [(r["status"], r["commit"]) for r in report["results"]] == [("merged", "c"), ("skipped", None)]
    assert report["summary"]["merged"] == 1 and report["summary"]["skipped"] == 1
    assert rebuild([]) is None
