"""The workflow engine running real shell-step agents on a real repository: order, outputs passed through
templates, conditions, retries with backoff, onError, maxConcurrency (measured), pause/resume and cancel."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from godel.core.events import EventFilter
from godel.core.ports import EventQuery
from godel.scheduler.plane import ControlPlane
from tests.workflow.conftest import steps_by_id, submit, wait_finished

DAG = """
name: shapes
variables:
  greeting: hello
steps:
  - id: plan
    command: 'echo "GODEL_RESULT: {{ vars.greeting }} plan"'
  - id: left
    dependsOn: [plan]
    command: 'echo "GODEL_RESULT: left after {{ steps.plan.output }}"'
  - id: right
    dependsOn: [plan]
    when: steps.plan.output.contains("nope")
    command: echo never
  - id: join
    dependsOn: [left, right]
    command: 'echo "GODEL_RESULT: {{ steps.left.output }} / right was {{ steps.right.status }}"'
"""


async def test_a_dag_runs_in_order_with_outputs_and_conditions(
    client: httpx.AsyncClient, git_repo: Path, plane: ControlPlane
) -> None:
    wf = await submit(client, DAG, git_repo)
    done = await wait_finished(client, wf["id"])
    assert done["status"] == "completed" and done["progress"] == 100
    steps = steps_by_id(done)
    assert steps["plan"]["output"] == "hello plan"
    assert steps["left"]["output"] == "left after hello plan"
    assert steps["right"]["status"] == "skipped" and steps["right"]["agentId"] is None
    assert steps["join"]["output"] == "left after hello plan / right was skipped"
    # Every move was recorded as an event of this workflow, in order.
    events = await plane.events(EventQuery(filter=EventFilter(workflow_id=wf["id"]), limit=1000))
    kinds = [(e.type, e.payload.get("stepId")) for e in events]
    assert kinds[0] == ("workflow:created", None) and kinds[-1] == ("workflow:complete", None)
    assert kinds.index(("workflow:step:complete", "plan")) < kinds.index(("workflow:step:start", "left"))
    assert ("workflow:step:skip", "right") in kinds


RETRIES = """
name: flaky
maxConcurrency: 2
steps:
  - id: flaky
    command: n=$(cat {dir}/count 2>/dev/null || echo 0); echo $((n+1)) > {dir}/count; test $n -ge 2
    retries: 3
    backoff: {{initial: 0.05, factor: 2}}
  - id: broken
    command: exit 3
    onError: continue
  - id: after_broken
    dependsOn: [broken]
    when: steps.broken.status == "failed"
    command: 'echo "GODEL_RESULT: handled {{{{ steps.broken.status }}}}"'
{wide}
"""


async def test_retries_on_error_continue_and_max_concurrency(client: httpx.AsyncClient, git_repo: Path,
                                                             fast_tmp: Path) -> None:  # fmt: skip
    # Five steps that each record when they start and end: at most two may overlap.
    wide = "\n".join(
        f"  - id: w{i}\n    command: echo start $(date +%s.%N) >> {fast_tmp}/spans; sleep 0.3; "
        f"echo end $(date +%s.%N) >> {fast_tmp}/spans"
        for i in range(5)
    )
    wf = await submit(client, RETRIES.format(dir=fast_tmp, wide=wide), git_repo)
    done = await wait_finished(client, wf["id"], timeout=90)
    steps = steps_by_id(done)
    assert steps["flaky"]["status"] == "completed" and len(steps["flaky"]["attempts"]) == 3  # failed twice
    assert (fast_tmp / "count").read_text().strip() == "3"
    assert steps["broken"]["status"] == "failed" and "exit" in steps["broken"]["error"]
    assert steps["after_broken"]["output"] == "handled failed"
    assert done["status"] == "completed"  # the failure was allowed: onError continue
    # maxConcurrency, measured from the steps' own clocks: never more than two running at once.
    marks = sorted(
        (float(t), +1 if kind == "start" else -1)
        for kind, t in (line.split() for line in (fast_tmp / "spans").read_text().splitlines())
    )
    running = peak = 0
    for _, delta in marks:
        running += delta
        peak = max(peak, running)
    assert peak <= 2 and len(marks) == 10


async def test_a_failing_step_fails_the_workflow_and_nothing_new_starts(
    client: httpx.AsyncClient, git_repo: Path
) -> None:
    source = "name: stop\nsteps:\n  - id: a\n    command: exit 1\n  - id: b\n    dependsOn: [a]\n    command: 'true'\n"
    done = await wait_finished(client, (await submit(client, source, git_repo))["id"])
    steps = steps_by_id(done)
    assert done["status"] == "failed"
    assert steps["a"]["status"] == "failed" and steps["b"]["status"] == "cancelled" and steps["b"]["agentId"] is None
    r = await client.post(f"/api/v1/workflows/{done['id']}/cancel")
    assert r.status_code == 409  # a finished workflow cannot be cancelled


async def test_pause_resume_and_cancel(client: httpx.AsyncClient, git_repo: Path, plane: ControlPlane) -> None:
    source = (
        "name: slow\nsteps:\n  - id: a\n    command: sleep 0.5\n  - id: b\n    dependsOn: [a]\n    command: sleep 30\n"
    )
    wf = await submit(client, source, git_repo)
    paused = (await client.post(f"/api/v1/workflows/{wf['id']}/pause")).json()["data"]
    assert paused["status"] == "paused"
    await asyncio.sleep(1.0)  # a finishes meanwhile; b must not start while paused
    steps = steps_by_id((await client.get(f"/api/v1/workflows/{wf['id']}")).json()["data"])
    assert steps["b"]["status"] == "pending"
    resumed = (await client.post(f"/api/v1/workflows/{wf['id']}/resume")).json()["data"]
    assert resumed["status"] == "running"
    for _ in range(200):
        steps = steps_by_id((await client.get(f"/api/v1/workflows/{wf['id']}")).json()["data"])
        if steps["b"]["status"] == "running" and steps["b"]["agentId"]:
            break
        await asyncio.sleep(0.05)  # waiting for b's agent to start
    agent_id = steps["b"]["agentId"]
    cancelled = (await client.post(f"/api/v1/workflows/{wf['id']}/cancel")).json()["data"]
    assert cancelled["status"] == "cancelled"
    assert steps_by_id(cancelled)["b"]["status"] == "cancelled"
    agent = await plane.wait_for_end(agent_id, timeout=10)
    assert agent.state.value == "killed"


async def test_bad_workflows_are_refused_with_every_error(client: httpx.AsyncClient, git_repo: Path) -> None:
    source = "name: bad\nsteps:\n  - id: a\n    command: x\n    dependsOn: [nope]\n  - id: a\n    comand: y\n"
    r = await client.post("/api/v1/workflows", json={"source": source, "repo": str(git_repo)})
    assert r.status_code == 400
    fields = r.json()["error"]["details"]["fields"]
    assert len(fields) >= 3 and all("line" in f for f in fields)
    no_agent = "name: x\nsteps:\n  - id: a\n    task: do it\n"
    r = await client.post("/api/v1/workflows", json={"source": no_agent, "repo": str(git_repo)})
    assert r.status_code == 400 and "no agent" in r.json()["error"]["details"]["fields"][0]["message"]
    unknown = "name: x\nsteps:\n  - id: a\n    task: do it\n    agent: nosuch\n"
    r = await client.post("/api/v1/workflows", json={"source": unknown, "repo": str(git_repo)})
    assert r.status_code == 400 and r.json()["error"]["details"]["fields"][0]["field"] == "steps[0].agent"
    bad_role = "name: x\nsteps:\n  - id: a\n    task: do it\n    agent: pi\n    role: jester\n"
    r = await client.post("/api/v1/workflows", json={"source": bad_role, "repo": str(git_repo)})
    assert r.status_code == 400 and r.json()["error"]["details"]["fields"][0]["field"] == "steps[0].role"
    r = await client.post("/api/v1/workflows", json={"repo": str(git_repo)})
    assert r.status_code == 400
    assert (await client.get("/api/v1/workflows")).json()["data"]["items"] == []  # nothing was created


async def test_update_and_delete(client: httpx.AsyncClient, git_repo: Path) -> None:
    source = (
        "name: later\nvariables:\n  who: nobody\nsteps:\n  - id: a\n"
        "    command: 'echo \"GODEL_RESULT: {{ vars.who }}\"'\n"
    )
    wf = await submit(client, source, git_repo, start=False)
    assert wf["status"] == "pending"
    r = await client.patch(f"/api/v1/workflows/{wf['id']}", json={"name": "renamed", "variables": {"who": "me"}})
    assert r.status_code == 200 and r.json()["data"]["name"] == "renamed"
    r = await client.patch(f"/api/v1/workflows/{wf['id']}", json={"variables": {"nope": 1}})
    assert r.status_code == 400  # not a declared variable
    await client.post(f"/api/v1/workflows/{wf['id']}/start")
    done = await wait_finished(client, wf["id"])
    assert steps_by_id(done)["a"]["output"] == "me"
    r = await client.patch(f"/api/v1/workflows/{wf['id']}", json={"variables": {"who": "late"}})
    assert r.status_code == 409  # it ran: its variables are history

    slow = await submit(client, "name: slow\nsteps:\n  - id: a\n    command: sleep 30\n", git_repo)
    assert (await client.delete(f"/api/v1/workflows/{slow['id']}")).status_code == 409  # running: cancel first
    assert (await client.delete(f"/api/v1/workflows/{slow['id']}", params={"force": True})).status_code == 200
    assert (await client.get(f"/api/v1/workflows/{slow['id']}")).status_code == 404
    assert (await client.delete(f"/api/v1/workflows/{done['id']}")).status_code == 200
    assert (await client.get("/api/v1/workflows")).json()["data"]["items"] == []
