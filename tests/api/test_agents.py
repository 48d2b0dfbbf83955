"""The agent API end to end in-process: real git repositories, real processes, real SQLite."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import psutil

from godel.scheduler.plane import ControlPlane
from tests.api.conftest import eventually, spawn, wait_state
from tests.conftest import held_by_vfork, run_git


async def test_spawn_runs_to_completion_with_full_record(client: httpx.AsyncClient, git_repo: Path) -> None:
    agent = await spawn(
        client, git_repo, 'echo "hello $1"; echo oops >&2; echo "$GODEL_TASK" > out.txt', task="write it"
    )
    assert agent["status"] == "pending" and agent["lifecycleState"] == "initializing"
    done = await wait_state(client, agent["id"], "completed")
    assert done["status"] == "completed" and done["exitCode"] == 0
    assert done["branch"] == f"godel/{agent['id']}"
    assert done["outcome"]["success"] is True and done["outcome"]["changedFiles"] == 1

    moves = (await client.get(f"/api/v1/agents/{agent['id']}/transitions")).json()["data"]["items"]
    assert [(m["fromState"], m["toState"]) for m in moves] == [
        ("pending", "initializing"),
        ("initializing", "spawning"),
        ("spawning", "executing"),
        ("executing", "completing"),
        ("completing", "completed"),
    ]
    assert all(m["actor"] and m["at"] and m["eventSequence"] for m in moves)

    logs = (await client.get(f"/api/v1/agents/{agent['id']}/logs")).json()["data"]["items"]
    assert [(x["stream"], x["line"]) for x in logs] == [("stdout", "hello write it"), ("stderr", "oops")]
    only_err = (await client.get(f"/api/v1/agents/{agent['id']}/logs?stream=stderr")).json()["data"]["items"]
    assert [x["line"] for x in only_err] == ["oops"]

    diff = (await client.get(f"/api/v1/agents/{agent['id']}/diff")).json()["data"]
    assert "out.txt" in diff["diff"] and "+write it" in diff["diff"]

    types = [
        e["type"] for e in (await client.get(f"/api/v1/agents/{agent['id']}/events?limit=100")).json()["data"]["items"]
    ]
    for expected in ("agent:created", "agent:initializing", "agent:start", "agent:log", "agent:complete"):
        assert expected in types
    seqs = [e["sequence"] for e in (await client.get(f"/api/v1/events?agentId={agent['id']}")).json()["data"]["items"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_failure_is_judged_and_retried_with_backoff(client: httpx.AsyncClient, git_repo: Path) -> None:
    agent = await spawn(client, git_repo, "echo attempt; exit 3", maxRetries=2)
    failed = await wait_state(client, agent["id"], "failed")

    async def retried_twice() -> dict | None:
        a = (await client.get(f"/api/v1/agents/{agent['id']}")).json()["data"]
        return a if a["state"] == "failed" and a["retryCount"] == 2 else None

    failed = await eventually(retried_twice)
    assert failed["exitCode"] == 3 and "exited 3" in failed["lastError"]
    moves = (await client.get(f"/api/v1/agents/{agent['id']}/transitions")).json()["data"]["items"]
    assert [m["trigger"] for m in moves].count("retry") == 2
    logs = (await client.get(f"/api/v1/agents/{agent['id']}/logs")).json()["data"]["items"]
    assert [x["line"] for x in logs] == ["attempt"] * 3


async def test_hard_timeout_kills_the_tree(client: httpx.AsyncClient, git_repo: Path) -> None:
    agent = await spawn(client, git_repo, "sleep 30 & sleep 30", timeout=0.5)
    failed = await wait_state(client, agent["id"], "failed", timeout=10)
    assert "timed out" in failed["lastError"]
    running = await wait_state(client, agent["id"], "failed")
    assert (
        running["pid"] is None
        or not psutil.pid_exists(running["pid"])
        or psutil.Process(running["pid"]).status() == psutil.STATUS_ZOMBIE
    )


async def test_kill_pause_resume(client: httpx.AsyncClient, git_repo: Path) -> None:
    agent = await spawn(client, git_repo, "while true; do echo tick; sleep 0.05; done")
    running = await wait_state(client, agent["id"], "executing")
    pid = running["pid"]

    paused = (await client.post(f"/api/v1/agents/{agent['id']}/pause")).json()["data"]
    assert paused["status"] == "paused" and paused["pausedBy"] == "user:admin"
    # Stopped as soon as it can be; a shell caught in vfork whose child was stopped before its exec stays waiting (D)
    # for that child instead, held all the same.
    await eventually(
        lambda: asyncio.sleep(0, psutil.Process(pid).status() == psutil.STATUS_STOPPED or held_by_vfork(pid))
    )
    again = await client.post(f"/api/v1/agents/{agent['id']}/pause")
    assert again.status_code == 409 and again.json()["error"]["details"]["currentState"] == "paused"

    resumed = (await client.post(f"/api/v1/agents/{agent['id']}/resume")).json()["data"]
    assert resumed["status"] == "running"
    assert psutil.Process(pid).status() != psutil.STATUS_STOPPED

    killed = (await client.post(f"/api/v1/agents/{agent['id']}/kill", json={"reason": "enough"})).json()["data"]
    assert killed["status"] == "killed"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    r = await client.post(f"/api/v1/agents/{agent['id']}/kill")
    assert r.status_code == 409
    body = r.json()
    assert body["success"] is False and body["error"]["code"] == "INVALID_TRANSITION"
    assert body["error"]["details"]["currentState"] == "killed" and body["meta"]["requestId"]
    moves = (await client.get(f"/api/v1/agents/{agent['id']}/transitions")).json()["data"]["items"]
    assert moves[-1]["reason"] == "enough" and moves[-1]["toState"] == "killed"


async def test_concurrency_limit_and_priority(fast_tmp: Path, git_repo: Path) -> None:
    from godel.api.app import create_app
    from tests.api.conftest import settings_for
    from tests.conftest import admin_headers

    plane = ControlPlane(settings_for(fast_tmp / "home2", max_concurrent_agents=2))
    await plane.start(background=False)  # admission driven by hand, so the order is deterministic
    try:
        transport = httpx.ASGITransport(app=create_app(plane=plane))
        headers = await admin_headers(plane)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers) as client:
            ids = [(await spawn(client, git_repo, "sleep 30", label=f"a{i}", priority=i))["id"] for i in range(4)]
            assert await plane.supervisor.admit_once() == 2
            for _ in range(5):  # the limit holds however often the scheduler passes
                assert await plane.supervisor.admit_once() == 0
            first = [await wait_state(client, i, "executing") for i in (ids[3], ids[2])]
            pending = (await client.get("/api/v1/agents?status=pending")).json()["data"]["items"]
            assert {a["label"] for a in pending} == {"a0", "a1"}
            await client.post(f"/api/v1/agents/{first[0]['id']}/kill")
            assert await plane.supervisor.admit_once() == 1
            admitted = await wait_state(client, ids[1], "executing")  # the higher priority goes first
            assert admitted["label"] == "a1"
            assert (await client.get(f"/api/v1/agents/{ids[0]}")).json()["data"]["state"] == "pending"
    finally:
        for agent_id in list(plane.supervisor.runs):
            await plane.kill(agent_id)
        await plane.stop()


async def test_needs_input_moves_to_waiting(client: httpx.AsyncClient, git_repo: Path) -> None:
    agent = await spawn(client, git_repo, "echo 'GODEL_NEEDS_INPUT: which file?'; sleep 30")
    waiting = await wait_state(client, agent["id"], "waiting")
    assert waiting["status"] == "running" and waiting["lifecycleState"] == "waiting"
    events = (await client.get(f"/api/v1/agents/{agent['id']}/events?type=agent:needs_input")).json()
    assert len(events["data"]["items"]) == 1


async def test_snapshot_restore_and_fork(client: httpx.AsyncClient, git_repo: Path) -> None:
    agent = await spawn(client, git_repo, "echo one > a.txt; rm README.md")
    done = await wait_state(client, agent["id"], "completed")
    wt = Path(done["worktree"])
    snap = (await client.post(f"/api/v1/agents/{agent['id']}/snapshots", json={"label": "first"})).json()["data"]
    assert snap["ref"] == f"refs/godel/snapshots/{snap['id']}" and snap["label"] == "first"
    assert run_git(git_repo, "rev-parse", snap["ref"]) == snap["commit"]

    (wt / "a.txt").write_text("two\n")
    (wt / "b.txt").write_text("later\n")
    restored = await client.post(f"/api/v1/agents/{agent['id']}/restore", json={"snapshotId": snap["id"]})
    assert restored.status_code == 200, restored.text
    assert (wt / "a.txt").read_text() == "one\n" and not (wt / "b.txt").exists() and not (wt / "README.md").exists()

    listed = (await client.get(f"/api/v1/agents/{agent['id']}/snapshots")).json()["data"]["items"]
    assert [s["id"] for s in listed] == [snap["id"]]

    fork = await client.post(
        f"/api/v1/agents/{agent['id']}/fork", json={"snapshotId": snap["id"], "command": "cat a.txt"}
    )
    assert fork.status_code == 201, fork.text
    child = await wait_state(client, fork.json()["data"]["id"], "completed")
    assert child["metadata"]["forkedFrom"] == agent["id"]
    logs = (await client.get(f"/api/v1/agents/{child['id']}/logs")).json()["data"]["items"]
    assert [x["line"] for x in logs] == ["one"]
    assert not (Path(child["worktree"]) / "README.md").exists()

    missing = await client.post(f"/api/v1/agents/{agent['id']}/restore", json={"snapshotId": "nope"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "SNAPSHOT_NOT_FOUND"


async def test_cleanup_immediate_removes_worktree_keeps_branch(client: httpx.AsyncClient, git_repo: Path) -> None:
    agent = await spawn(client, git_repo, "echo x > new.txt", cleanup="immediate")
    done = await wait_state(client, agent["id"], "completed")

    async def cleaned() -> dict | None:
        a = (await client.get(f"/api/v1/agents/{agent['id']}")).json()["data"]
        return a if a["worktree"] is None else None

    await eventually(cleaned)
    assert f"godel/{agent['id']}" in run_git(git_repo, "branch", "--list", "godel/*")
    # The agent completed, so Godel committed the work it left uncommitted to its branch before cleanup.
    assert run_git(git_repo, "show", f"{done['branch']}:new.txt") == "x"
    assert len(done["commits"]) == 1
    diff = (await client.get(f"/api/v1/agents/{agent['id']}/diff")).json()["data"]
    assert diff["branch"] == done["branch"]


async def test_cleanup_immediate_keeps_a_failed_agents_work_as_a_snapshot(
    client: httpx.AsyncClient, git_repo: Path
) -> None:
    agent = await spawn(client, git_repo, "echo x > new.txt; exit 3", cleanup="immediate")
    done = await wait_state(client, agent["id"], "failed")
    assert done["commits"] == []

    async def cleaned() -> dict | None:
        a = (await client.get(f"/api/v1/agents/{agent['id']}")).json()["data"]
        return a if a["worktree"] is None else None

    await eventually(cleaned)
    # Nothing is committed for a failed agent; its uncommitted work is kept as a snapshot ref instead.
    refs = run_git(git_repo, "for-each-ref", "--format=%(refname)", "refs/godel/snapshots/")
    assert refs


async def test_worktreeinclude_and_setup(client: httpx.AsyncClient, git_repo: Path) -> None:
    (git_repo / ".gitignore").write_text(".env\n")
    (git_repo / ".worktreeinclude").write_text("# secrets for local dev\n.env\n")
    run_git(git_repo, "add", "-A")
    run_git(git_repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "include")
    (git_repo / ".env").write_text("TOKEN=local\n")
    agent = await spawn(client, git_repo, "cat .env; cat ready", setup="echo ok > ready")
    await wait_state(client, agent["id"], "completed")
    logs = (await client.get(f"/api/v1/agents/{agent['id']}/logs")).json()["data"]["items"]
    assert [x["line"] for x in logs] == ["TOKEN=local", "ok"]

    bad = await spawn(client, git_repo, "true", setup="echo broken >&2; exit 7")
    failed = await wait_state(client, bad["id"], "failed")
    assert "setup" in failed["lastError"].lower()
    assert not (Path(failed["worktree"] or "/nonexistent")).exists()
