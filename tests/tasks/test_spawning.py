"""An agent spawned for a queued task (``POST /tasks/{id}/spawn``, ``tasks.spawning``): real agent processes in a
real git repository; the task holds the agent from the start and follows its outcome."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from godel.core.events import EventFilter
from godel.core.ports import AgentQuery, EventQuery
from godel.core.states import TaskStatus
from godel.scheduler.plane import ControlPlane
from godel.tasks.spawning import interrupted_spawn, take
from tests.api.conftest import eventually, wait_state
from tests.tasks.conftest import add_team
from tests.tasks.test_api import API, assert_error, create


async def spawn_for(client: httpx.AsyncClient, task_id: str, repo: Path, command: str, **extra: Any) -> httpx.Response:
    return await client.post(f"{API}/{task_id}/spawn", json={"repo": str(repo), "command": command, **extra})


async def task_becomes(client: httpx.AsyncClient, task_id: str, status: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        data: dict[str, Any] = (await client.get(f"{API}/{task_id}")).json()["data"]
        return data if data["status"] == status else None

    found: dict[str, Any] = await eventually(check)
    return found


async def test_the_agent_gets_the_task_text_and_the_task_its_result(client: httpx.AsyncClient, git_repo: Path) -> None:
    task = await create(client, title="write the notes", description="one line each")
    # The command agent gets the task as $1: its result shows what it was asked.
    r = await spawn_for(client, task["id"], git_repo, 'printf "GODEL_RESULT: %s\\n" "$1" | tr "\\n" " "; echo')
    assert r.status_code == 201, r.text
    data = r.json()["data"]
    agent = data["agent"]
    assert agent["task"] == "write the notes\n\none line each"
    assert agent["metadata"]["taskId"] == task["id"]
    assert data["task"]["status"] == "assigned" and data["task"]["agentId"] == agent["id"]
    assert data["task"]["history"][0]["spawning"] is True
    await wait_state(client, agent["id"], "completed")
    done = await task_becomes(client, task["id"], "completed")
    assert done["result"]["agentId"] == agent["id"]
    assert done["result"]["result"].startswith("write the notes")
    assert [h["outcome"] for h in done["history"]] == ["completed"]


async def test_a_failing_agent_fails_its_task_until_dead(client: httpx.AsyncClient, git_repo: Path) -> None:
    task = await create(client, title="doomed", maxAttempts=2)
    first = (await spawn_for(client, task["id"], git_repo, "echo no; exit 3")).json()["data"]["agent"]
    requeued = await task_becomes(client, task["id"], "pending")
    assert requeued["attempts"] == 1 and requeued["history"][0]["error"].startswith(f"agent {first['id']} failed")
    second = (await spawn_for(client, task["id"], git_repo, "exit 4")).json()["data"]["agent"]
    dead = await task_becomes(client, task["id"], "dead")
    assert [h["agentId"] for h in dead["history"]] == [first["id"], second["id"]]
    assert [h["outcome"] for h in dead["history"]] == ["failed", "failed"]


async def test_a_taken_task_is_a_409_and_nothing_is_spawned(
    client: httpx.AsyncClient, plane: ControlPlane, git_repo: Path
) -> None:
    task = await create(client, title="once")
    # Two spawns at once: exactly one takes the task.
    answers = await asyncio.gather(*(spawn_for(client, task["id"], git_repo, "sleep 1") for _ in range(2)))
    assert sorted(r.status_code for r in answers) == [201, 409], [r.text for r in answers]
    loser = next(r for r in answers if r.status_code == 409)
    assert loser.json()["error"]["code"] == "INVALID_TASK_TRANSITION"
    agents = (await plane.list_agents(AgentQuery(limit=50))).items
    assert len(agents) == 1 and agents[0].metadata["taskId"] == task["id"]
    # Later, while the agent holds it: still 409, still one agent.
    assert_error(await spawn_for(client, task["id"], git_repo, "true"), 409, "INVALID_TASK_TRANSITION")
    assert len((await plane.list_agents(AgentQuery(limit=50))).items) == 1
    # Reserved tasks belong to whom they were made for.
    team = await add_team(plane.store)
    reserved = await create(client, title="theirs", teamId=team.id)
    r = await spawn_for(client, reserved["id"], git_repo, "true")
    assert "reserved for team" in assert_error(r, 409, "INVALID_TASK_TRANSITION")["message"]


async def test_a_refused_spawn_puts_the_task_back_without_counting_an_attempt(
    client: httpx.AsyncClient, plane: ControlPlane, git_repo: Path
) -> None:
    task = await create(client, title="t")
    r = await spawn_for(client, task["id"], git_repo, "true", baseRef="no-such-branch")
    assert_error(r, 400, "REF_NOT_FOUND")
    back = (await client.get(f"{API}/{task['id']}")).json()["data"]
    assert back["status"] == "pending" and back["attempts"] == 0 and back["lastError"] is None
    assert [h["outcome"] for h in back["history"]] == ["released"]
    assert (await plane.list_agents(AgentQuery(limit=50))).items == []
    assert_error(await spawn_for(client, task["id"], git_repo, "true", task="mine"), 400, "VALIDATION_ERROR")
    events = await plane.events(EventQuery(filter=EventFilter(patterns=("task:*",)), limit=100))
    assert [e.type for e in events] == ["task:created", "task:assigned", "task:released"]
    # After that, a good spawn works the task as if nothing had happened.
    assert (await spawn_for(client, task["id"], git_repo, "echo 'GODEL_RESULT: ok'")).status_code == 201
    assert (await task_becomes(client, task["id"], "completed"))["history"][-1]["outcome"] == "completed"


async def test_an_interrupted_spawn_is_released_by_the_sweep(plane: ControlPlane) -> None:
    queue = plane.task_queue
    task = await queue.create("taken when the server died")
    taken = await take(queue, task.id, actor="test")  # as if the server stopped right after taking it
    assert interrupted_spawn(taken, set()) and not interrupted_spawn(taken, {task.id})
    await queue.stop()
    await queue.start()  # a restart: its first sweep puts the task back

    async def released() -> bool:
        return (await queue.get(task.id)).status == TaskStatus.PENDING

    await eventually(released)
    back = await queue.get(task.id)
    assert back.attempts == 0 and back.metadata["history"][0]["outcome"] == "released"
