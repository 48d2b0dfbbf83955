"""A workflow of a real agent (pi, through the gateway, against the scripted model) and a shell step that checks
its work on its branch; then the merge queue takes the workflow's branches into an integration branch behind a
gate. The whole path a user takes: YAML → agents → verified merge."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from godel.workflow import load_workflow
from godel.workflow.engine import WorkflowEngine
from tests.agents import test_pi
from tests.agents.conftest import agents_dir, require_cli
from tests.conftest import make_repo, run_git
from tests.gateway.conftest import MODEL

FEATURE = f"""
name: feature
steps:
  - id: implement
    agent: pi
    role: worker
    model: scripted/{MODEL}
    task: create hello.txt
  - id: check
    dependsOn: [implement]
    command: 'test -f hello.txt && echo "GODEL_RESULT: checked after {{{{ steps.implement.output }}}}"'
"""


async def test_a_pi_workflow_then_a_gated_merge(stack: Any, fast_tmp: Path) -> None:
    require_cli("pi")
    repo = make_repo(fast_tmp / "repo")
    settings = {"agents_dir": agents_dir(), "agent_cli_retries": 0, "watch_interval": 0.02, "reconcile_interval": 0.05}
    async with stack(test_pi.EDIT, **settings) as s:
        engine = WorkflowEngine(s.plane)
        try:
            wf = await engine.submit(load_workflow(FEATURE), repo=str(repo))
            deadline = time.monotonic() + 120
            while (await s.plane.store.get_workflow(wf.id)).status not in ("completed", "failed", "cancelled"):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)  # polling the store for the run's end
            wf, steps = await engine.get(wf.id)
            by_id = {st.step_id: st for st in steps}
            assert wf.status == "completed", {k: (v.status, v.error) for k, v in by_id.items()}
            assert (by_id["implement"].result or {})["output"] == "Created hello.txt."
            # The check ran on implement's branch (its one dependency committed work), so it found the file.
            assert (by_id["check"].result or {})["output"] == "checked after Created hello.txt."
            records = await s.records()
            assert records and all(r.agent_id == by_id["implement"].agent_id for r in records)  # metered
            # Its role's preamble came before its task in what the model was asked.
            first = str(s.model.requests[0].body)
            assert "You are a worker in a team of coding agents" in first and "create hello.txt" in first

            async with httpx.AsyncClient(base_url=s.url, headers=s.headers, timeout=30) as client:
                body = {"repo": str(repo), "into": "integration", "workflowId": wf.id, "verify": "test -f hello.txt"}
                r = await client.post("/api/v1/merges", json=body)
                assert r.status_code == 202, r.text
                merge_id = r.json()["data"]["id"]
                while True:
                    report = (await client.get(f"/api/v1/merges/{merge_id}")).json()["data"]
                    if report["status"] != "running":
                        break
                    await asyncio.sleep(0.05)  # polling the merge job
            assert report["status"] == "completed", report
            statuses = {b["branch"]: b["status"] for b in report["results"]}
            implement_branch = (by_id["implement"].result or {})["branch"]
            assert statuses[implement_branch] == "merged"
            assert run_git(repo, "show", "integration:hello.txt") == "hello from pi"
        finally:
            await engine.stop()
