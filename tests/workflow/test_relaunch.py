"""A step whose agent was lost while it was being set up (the server went down before its process started) never
ran: the engine launches it again, without spending one of the step's retries, and the step runs once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from godel.core.transitions import Trigger
from godel.scheduler.plane import ControlPlane
from godel.scheduler.requests import SpawnRequest
from godel.settings import Settings
from godel.workflow import load_workflow
from godel.workflow.engine import WorkflowEngine
from tests.api.conftest import settings_for

SOURCE = "name: relaunch\nsteps:\n  - id: only\n    command: echo ran >> {log}\n"


async def test_an_agent_lost_before_it_started_is_launched_again(fast_tmp: Path, git_repo: Path) -> None:
    settings: Settings = settings_for(fast_tmp / "home")
    plane = ControlPlane(settings)
    await plane.start(background=False)  # no admission yet: the step's agent stays pending
    engine = WorkflowEngine(plane)
    try:
        log = fast_tmp / "runs.log"
        wf = await engine.submit(load_workflow(SOURCE.format(log=log)), repo=str(git_repo))
        for _ in range(200):
            (step,) = (await engine.get(wf.id))[1]
            if step.agent_id:
                break
            await asyncio.sleep(0.02)  # waiting for the engine to record the step's agent
        first = step.agent_id
        assert first is not None
        # What a restart's reconciliation does to an agent found half set up: admitted, then lost.
        await plane.store.transition_agent(first, Trigger.ADMIT, actor="test", reason="admitted")
        await plane.store.transition_agent(first, Trigger.LOST, actor="supervisor", reason="server stopped")
        plane.tasks.start("admission", plane.supervisor.admission_loop, why="test: admit from now on")
        plane.tasks.start("watch", plane.supervisor.watch_loop, why="test: watch from now on")
        for _ in range(400):
            wf_now, (step,) = await engine.get(wf.id)
            if wf_now.status in ("completed", "failed"):
                break
            await asyncio.sleep(0.05)  # waiting for the relaunched step to finish
        assert wf_now.status == "completed", (step.status, step.error)
        attempts = (step.result or {})["attempts"]
        assert attempts[0] == first and len(attempts) == 2 and step.retry_count == 0  # no retry was spent
        assert log.read_text().split() == ["ran"]  # the step ran once
        second = await plane.get(attempts[1])
        assert second.label == f"wf:{wf.id}:only:1.1"
    finally:
        await engine.stop()
        await plane.stop()


async def test_an_agent_made_just_before_a_crash_is_adopted_not_made_again(fast_tmp: Path, git_repo: Path) -> None:
    """The step is marked running together with its agent, after the agent is created: a crash between the two
    leaves the step pending on record with an agent carrying its label. The restarted engine adopts that agent."""
    settings: Settings = settings_for(fast_tmp / "home")
    plane = ControlPlane(settings)
    await plane.start()
    engine = WorkflowEngine(plane)
    try:
        log = fast_tmp / "runs.log"
        wf = await engine.submit(load_workflow(SOURCE.format(log=log)), repo=str(git_repo), start=False)
        # What the crashed server left: the run going, the step pending, its agent made (label and all).
        await plane.store.update_workflow(wf.id, {"status": "running"})
        made = await plane.spawn(SpawnRequest(task="only", repo=str(git_repo), agent="command",
                                              command=f"echo ran >> {log}", label=f"wf:{wf.id}:only:1"))  # fmt: skip
        await engine.start()  # the restart: takes the run up
        for _ in range(400):
            wf_now, (step,) = await engine.get(wf.id)
            if wf_now.status in ("completed", "failed"):
                break
            await asyncio.sleep(0.05)  # waiting for the step to finish
        assert wf_now.status == "completed", (step.status, step.error)
        assert (step.result or {})["attempts"] == [made.id] and step.agent_id == made.id
        assert log.read_text().split() == ["ran"]  # one agent, run once
    finally:
        await engine.stop()
        await plane.stop()
