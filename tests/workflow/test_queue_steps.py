"""Queue steps: a workflow step whose workers take the task queue's tasks by priority until it is empty, each task
run by a real shell agent on a real repository (SQLite), the task following its agent's outcome."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx

from godel.core.models import Task
from godel.core.states import TaskStatus
from godel.scheduler.plane import ControlPlane
from godel.workflow import load_workflow
from godel.workflow.engine import WorkflowEngine
from tests.api.conftest import settings_for
from tests.workflow.conftest import steps_by_id, submit, wait_finished

# Each agent appends its task's text to the log; a task whose title holds "boom" fails; one holding "flaky" fails
# its first attempt only.
WORK = (
    'echo "$GODEL_TASK" >> {log}; case "$GODEL_TASK" in *boom*) exit 3;; '
    '*flaky*) if [ ! -e {log}.flaky ]; then touch {log}.flaky; exit 4; fi;; esac; echo "GODEL_RESULT: did $GODEL_TASK"'
)


def drain_source(log: Path, *, workers: int = 1, extra: str = "") -> str:
    return f"""
name: drain
steps:
  - id: drain
    queue:
      workers: {workers}
{extra}    command: '{WORK.format(log=log)}'
  - id: after
    dependsOn: drain
    command: 'echo "GODEL_RESULT: $DONE done"'
    env:
      DONE: "{{{{ steps.drain.result.completed }}}}"
"""


async def queue_tasks(plane: ControlPlane, *specs: tuple[str, int], max_attempts: int = 1) -> list[Task]:
    return [await plane.task_queue.create(title, priority=priority, max_attempts=max_attempts)
            for title, priority in specs]  # fmt: skip


def ran(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


async def test_one_worker_takes_the_tasks_in_priority_order_until_the_queue_is_empty(
    client: httpx.AsyncClient, git_repo: Path, plane: ControlPlane, fast_tmp: Path
) -> None:
    log = fast_tmp / "ran.log"
    await queue_tasks(plane, ("low", 1), ("top", 100), ("mid", 50), ("below", -10), ("mid2", 50))
    extra = "      minPriority: 0\n"  # "below" is outside the band: left in the queue
    wf = await submit(client, drain_source(log, extra=extra), git_repo)
    done = await wait_finished(client, wf["id"])
    steps = steps_by_id(done)
    assert done["status"] == "completed", {k: (v["status"], v["error"]) for k, v in steps.items()}
    assert ran(log) == ["top", "mid", "mid2", "low"]  # priority, then oldest first among equals
    summary = json.loads(steps["drain"]["output"])
    assert summary["completed"] == 4 and summary["failed"] == 0
    assert [t["taskId"] for t in summary["tasks"]] and all(t["status"] == "completed" for t in summary["tasks"])
    assert steps["after"]["output"] == "4 done"
    tasks = {t.title: t for t in (await plane.task_queue.list(_all())).items}
    assert {k: t.status for k, t in tasks.items()} == {
        "top": TaskStatus.COMPLETED, "mid": TaskStatus.COMPLETED, "mid2": TaskStatus.COMPLETED,
        "low": TaskStatus.COMPLETED, "below": TaskStatus.PENDING,
    }  # fmt: skip
    # Each task followed its own agent, made through the task-spawn path.
    agent = await plane.get(summary["tasks"][0]["agentId"])
    assert agent.metadata["taskId"] == tasks["top"].id and agent.metadata["workflowId"] == wf["id"]
    assert (tasks["top"].result or {})["agentId"] == agent.id


async def test_a_task_that_ends_failed_fails_the_step_after_the_queue_is_emptied(
    client: httpx.AsyncClient, git_repo: Path, plane: ControlPlane, fast_tmp: Path
) -> None:
    log = fast_tmp / "ran.log"
    await queue_tasks(plane, ("boom", 10), ("fine", 5), ("also-fine", 1))
    wf = await submit(client, drain_source(log, workers=2), git_repo)
    done = await wait_finished(client, wf["id"])
    steps = steps_by_id(done)
    assert done["status"] == "failed" and steps["drain"]["status"] == "failed"
    assert sorted(ran(log)) == ["also-fine", "boom", "fine"]  # the others were still worked
    assert "1 of its tasks ended failed" in steps["drain"]["error"] and "(boom): dead" in steps["drain"]["error"]
    assert steps["after"]["status"] == "cancelled"
    statuses = {t.title: t.status for t in (await plane.task_queue.list(_all())).items}
    assert statuses == {"boom": TaskStatus.DEAD, "fine": TaskStatus.COMPLETED, "also-fine": TaskStatus.COMPLETED}


async def test_on_task_failure_continue_completes_and_a_requeued_task_is_taken_again(
    client: httpx.AsyncClient, git_repo: Path, plane: ControlPlane, fast_tmp: Path
) -> None:
    log = fast_tmp / "ran.log"
    await queue_tasks(plane, ("flaky", 10), max_attempts=2)  # fails once, then completes on its second attempt
    await queue_tasks(plane, ("boom", 5))  # dead after its one attempt
    extra = "      onTaskFailure: continue\n"
    wf = await submit(client, drain_source(log, workers=2, extra=extra), git_repo)
    done = await wait_finished(client, wf["id"])
    steps = steps_by_id(done)
    assert done["status"] == "completed", {k: (v["status"], v["error"]) for k, v in steps.items()}
    summary = json.loads(steps["drain"]["output"])
    assert (summary["completed"], summary["failed"], summary["requeued"]) == (1, 1, 1)
    flaky = [t["status"] for t in summary["tasks"] if t["title"] == "flaky"]
    assert flaky == ["requeued", "completed"]
    assert steps["after"]["output"] == "1 done"


async def test_a_queue_step_carries_on_after_the_engine_restarts(fast_tmp: Path, git_repo: Path) -> None:
    plane = ControlPlane(settings_for(fast_tmp / "home"))
    await plane.start()
    log = fast_tmp / "ran.log"
    slow = f'echo "$GODEL_TASK" >> {log}; sleep 1'
    source = f"name: drain\nsteps:\n  - id: drain\n    queue: {{workers: 1}}\n    command: '{slow}'\n"
    engine = WorkflowEngine(plane)
    try:
        await queue_tasks(plane, ("first", 2), ("second", 1))
        wf = await engine.submit(load_workflow(source), repo=str(git_repo))
        await _until(lambda: ran(log) == ["first"])  # the first task's agent runs
        await engine.stop()  # the engine goes away mid-task (the agent runs on, as it would without a server)
        engine = WorkflowEngine(plane)
        await engine.start()  # takes the run up again: waits for the running task, then takes the next
        await _until(lambda: _finished(plane, wf.id), timeout=60)
        wf_now, (step,) = await engine.get(wf.id)
        assert wf_now.status == "completed", (step.status, step.error)
        assert ran(log) == ["first", "second"]  # each task worked once
        entries = (step.result or {})["queue"]["tasks"]
        assert [(e["title"], e["status"]) for e in entries] == [("first", "completed"), ("second", "completed")]
    finally:
        await engine.stop()
        await plane.stop()


async def test_a_bad_queue_block_is_refused_by_the_server_with_every_problem(
    client: httpx.AsyncClient, git_repo: Path
) -> None:
    source = "name: q\nsteps:\n  - id: q\n    task: x\n    agent: pi\n    queue: {workers: 0, onTaskFailure: no}\n"
    r = await client.post("/api/v1/workflows", json={"source": source, "repo": str(git_repo)})
    assert r.status_code == 400, r.text
    fields = {f["field"]: f["message"] for f in r.json()["error"]["details"]["fields"]}
    assert fields["steps[0].task"].startswith("a queue step's agents are each given their task's")
    assert fields["steps[0].queue.workers"] == "must be at least 1, not 0"
    assert "must be one of fail, continue" in fields["steps[0].queue.onTaskFailure"]


def _all() -> Any:
    from godel.store.tasks import TaskQuery

    return TaskQuery(limit=100)


async def _finished(plane: ControlPlane, workflow_id: str) -> bool:
    return (await plane.store.get_workflow(workflow_id)).status in ("completed", "failed", "cancelled")


async def _until(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)  # polling for the condition, as a user would
